"""A migration that has to wait says so at once, then every PROGRESS_INTERVAL: with a wait
shorter than the interval (HERALD_MIGRATION_WAIT=3s) it once gave up without a word."""

from __future__ import annotations

from herald_queue import migrate


def test_a_wait_is_said_at_once_then_every_progress_interval() -> None:
    now = [100.0]
    deadline = migrate._Deadline(3.0, lambda: now[0])
    assert deadline.due()  # the first try failed: say it now
    assert not deadline.due()
    now[0] += migrate.PROGRESS_INTERVAL - 0.01
    assert not deadline.due()
    now[0] += 0.01
    assert deadline.due()
    assert not deadline.due()
