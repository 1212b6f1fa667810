"""The group commit's rules with a stand-in writer (no database): what a failure of the
database itself answers, that a group never outgrows its bound, and that no more groups
than allowed are written at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest

from herald_core.errors import DatabaseUnavailable
from herald_core.states import JobState
from herald_model.submission import JobRequest
from herald_queue.group_commit import GroupCommit
from herald_queue.records import EnqueueResult


def request(n: int) -> JobRequest:
    return JobRequest(target="hook", payload_json=f'{{"n":{n}}}')


class Writer:
    def __init__(self, fail: BaseException | None = None) -> None:
        self.fail = fail
        self.calls: list[int] = []
        self.running = 0
        self.most_running = 0

    async def __call__(self, requests: Sequence[JobRequest]) -> list[EnqueueResult]:
        self.calls.append(len(requests))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(0)
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
