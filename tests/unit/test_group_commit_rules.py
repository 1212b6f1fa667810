"""The group commit's rules with a stand-in writer (no database): what a failure of the
database itself answers, that a group never outgrows its bound, and that no more groups
than allowed are written at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import psycopg
import pytest

from herald_core.errors import DatabaseUnavailable, IngestClosed
from herald_core.states import JobState
from herald_model.submission import JobRequest
from herald_queue.group_commit import GroupCommit
from herald_queue.records import EnqueueResult


def request(n: int) -> JobRequest:
    return JobRequest(target="hook", payload_json=f'{{"n":{n}}}')


class Writer:
    def __init__(self, fail: BaseException | None = None, delay: float = 0.0) -> None:
        self.fail = fail
        self.delay = delay
        self.calls: list[int] = []
        self.running = 0
        self.most_running = 0

    async def __call__(self, requests: Sequence[JobRequest]) -> list[EnqueueResult]:
        self.calls.append(len(requests))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(self.delay)
            if self.fail is not None:
                raise self.fail
            return [
                EnqueueResult(uuid.uuid4(), "default/hook", JobState.QUEUED, True) for _ in requests
            ]
        finally:
            self.running -= 1


async def test_a_database_failure_is_every_requests_answer_without_retrying_each() -> None:
    writer = Writer(DatabaseUnavailable("cannot reach PostgreSQL"))
    group = GroupCommit(writer, max_group=64, in_flight=1)
    results = await asyncio.gather(
        *(group.submit(request(n)) for n in range(10)), return_exceptions=True
    )
    assert all(isinstance(r, DatabaseUnavailable) for r in results)
    assert sum(writer.calls) == 10, "written as groups, never again one by one"


async def test_groups_and_groups_in_flight_stay_within_their_bounds() -> None:
    writer = Writer()
    group = GroupCommit(writer, max_group=8, in_flight=2)
    results = await asyncio.gather(*(group.submit(request(n)) for n in range(100)))
    assert len(results) == 100 and all(r.created for r in results)
    assert max(writer.calls) <= 8 and sum(writer.calls) == 100
    assert writer.most_running <= 2
    assert group.groups == len(writer.calls) < 100


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError):
        GroupCommit(Writer(), max_group=0)


class FailsGroups(Writer):
    """Refuses any group of more than one request with ``fail``; writes single ones slowly."""

    def __init__(self, fail: BaseException, single_delay: float = 0.0) -> None:
        super().__init__()
        self.group_failure = fail
        self.single_delay = single_delay

    async def __call__(self, requests: Sequence[JobRequest]) -> list[EnqueueResult]:
        if len(requests) > 1:
            self.calls.append(len(requests))
            raise self.group_failure
        await asyncio.sleep(self.single_delay)
        return await super().__call__(requests)


async def test_an_error_the_server_answered_is_retried_request_by_request() -> None:
    """A lock timeout (or a cancelled statement) may concern one row only: unlike a lost
    database, it is not every request's answer."""
    writer = FailsGroups(psycopg.errors.LockNotAvailable("lock timeout"))
    group = GroupCommit(writer, max_group=64, in_flight=1)
    results = await asyncio.gather(*(group.submit(request(n)) for n in range(10)))
    assert all(r.created for r in results)
    assert writer.calls.count(1) >= 9, "the failed group was written one by one"


async def test_close_during_the_one_by_one_writes_leaves_nobody_waiting() -> None:
    writer = FailsGroups(ValueError("a row PostgreSQL refuses"), single_delay=0.2)
    group = GroupCommit(writer, max_group=64, in_flight=1)
    submitted = [asyncio.ensure_future(group.submit(request(n))) for n in range(4)]
    await asyncio.sleep(0.05)  # the first alone, the other three as a group that fails
    async with asyncio.timeout(10):
        await group.close(timeout=0.3)
        results = await asyncio.gather(*submitted, return_exceptions=True)
    assert all(not isinstance(r, asyncio.CancelledError) for r in results)
    assert any(isinstance(r, IngestClosed) for r in results), results


async def test_a_linger_leaves_no_free_slot_idle() -> None:
    writer = Writer(delay=0.1)
    group = GroupCommit(writer, max_group=4, linger=0.05, in_flight=3)
    async with asyncio.timeout(10):
        results = await asyncio.gather(*(group.submit(request(n)) for n in range(12)))
    assert len(results) == 12 and max(writer.calls) <= 4
    assert writer.most_running == 3, "full groups start in the free slots at once"
