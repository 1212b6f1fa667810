"""The operator against faults, on the emulator: a status overwritten by someone else is
set right from the truth; an API outage (every request answered 503) longer than kopf's
request backoffs loses no status write, stops no timer, and /healthz says so meanwhile; a
status tick that raises is tried again; a target created while PostgreSQL is down becomes
Ready once it is back. The real-API versions (a killed API server, minutes long) are in
tests/cluster/test_outages.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from herald_operator import targets
from herald_queue.queue import Queue
from tests.helpers import job, wait_until
from tests.integration.operator.cluster import (
    NS,
    PT,
    PT_URL,
    Emulator,
    RunningOperator,
    StartOperator,
    condition,
    create,
    database_outage,
    events,
    obj,
    status,
    target,
    valid,
    wait_ready,
)


async def _health(port: int) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/healthz") as r,
    ):
        return r.status, await r.text()


async def test_an_overwritten_status_is_set_right_within_an_interval(
    k8s: Emulator, operator: RunningOperator, queue: Queue
) -> None:
    """As a restore from backup or a mistaken ``kubectl patch --subresource=status`` does:
    observedGeneration 42 and Ready=False. The next tick compares with the status as read
    and writes the truth back, with no Event (nothing happened to the target)."""
    await create(k8s, PT_URL, target("hook"))
    await wait_ready(k8s, "hook")
    await queue.jobs.enqueue(job("default/hook"))
    await wait_until(lambda: status(k8s, PT, "hook").get("depth", {}).get("total") == 1)
    await wait_until(lambda: events(k8s, "Ready", "hook"), what="the Ready Event")
    wrong = {
        "observedGeneration": 42,
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "Restored",
                "message": "written by someone else",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
        "depth": {"high": 0, "medium": 0, "low": 0, "total": 0, "ready": 0},
    }
    response = await k8s.patch(
        f"{PT_URL}/hook/status",
        json={"status": wrong},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status == 200, await response.text()
    assert status(k8s, PT, "hook")["observedGeneration"] == 42

    def repaired() -> bool:
        now = status(k8s, PT, "hook")
        return (
            now.get("observedGeneration") == 1
            and condition(k8s, PT, "hook").get("status") == "True"
            and now.get("depth", {}).get("total") == 1
        )

    await wait_until(repaired, timeout=10, what="the status set right from the truth")
    ready = condition(k8s, PT, "hook")
    assert ready["reason"] == "Ready" and ready["observedGeneration"] == 1
    valid(k8s, PT, "hook")
    assert len(events(k8s, "Ready", "hook")) == 1  # a repair is not a transition


async def test_an_invalid_targets_overwritten_status_is_set_right(
    k8s: Emulator, operator: RunningOperator
) -> None:
    """A target that was never valid is never registered: its status is its problem, and
    that is set right too."""
    await create(k8s, PT_URL, target("bad", url="not a url"))
    await wait_ready(k8s, "bad", "False")
    response = await k8s.patch(
        f"{PT_URL}/bad/status",
        json={"status": {"observedGeneration": 42, "conditions": []}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status == 200, await response.text()
    await wait_until(
        lambda: (
            status(k8s, PT, "bad").get("observedGeneration") == 1
            and condition(k8s, PT, "bad").get("reason") == "InvalidSpec"
        ),
        what="the invalid target's status set right",
    )


@pytest.mark.slow
async def test_status_writes_and_timers_outlive_an_api_outage(
    k8s: Emulator, operator: RunningOperator, queue: Queue
) -> None:
    """Every request answered 503 for far longer than kopf's request backoffs (0.1 + 0.2 s
    here): the writes are retried until the API is back, so the status is live at once
    afterwards, the timer still ticks, and /healthz said the API was unreachable (still
    answering 200: it is the liveness probe)."""
    await create(k8s, PT_URL, target("steady"))
    await wait_ready(k8s, "steady")
    await wait_until(lambda: status(k8s, PT, "steady").get("depth", {}).get("total") == 0)
    port = operator.settings.health_port
    assert (await _health(port))[0] == 200
    k8s.down = True
    try:
        await queue.jobs.enqueue(job("default/steady"))  # a change the status must show

        def status_writes_refused() -> int:
            return sum(1 for method, path in k8s.refused if path.endswith("/steady/status"))

        # Ten refused writes of one status: many times kopf's two retries.
        await wait_until(
            lambda: status_writes_refused() >= 10,
            timeout=30,
            what="the status write retried through the outage",
        )
        code, said = await wait_until(
            lambda: _with(_health(port), lambda answer: '"api": "ok"' not in answer[1]),
            timeout=20,
            what="/healthz saying the API is away",
        )
        # Said, not failed: a liveness failure would restart the operator for nothing.
        assert code == 200 and "the Kubernetes API is unreachable" in said, said
        assert status(k8s, PT, "steady").get("depth", {}).get("total") == 0  # nothing landed
    finally:
        k8s.down = False
    await wait_until(
        lambda: status(k8s, PT, "steady").get("depth", {}).get("total") == 1,
        timeout=10,
        what="the status written once the API is back",
    )
    # The timer still ticks: a later change shows too.
    await queue.jobs.enqueue(job("default/steady"))
    await wait_until(
        lambda: status(k8s, PT, "steady").get("depth", {}).get("total") == 2,
        timeout=10,
        what="the status timer ticking after the outage",
    )
    await wait_until(
        lambda: _with(_health(port), lambda answer: '"api": "ok"' in answer[1]),
        timeout=20,
        what="/healthz saying the API is back",
    )
    assert condition(k8s, PT, "steady")["status"] == "True"
    assert operator.thread.is_alive()


@pytest.mark.slow
async def test_a_change_during_an_api_outage_is_handled_once_it_is_back(
    k8s: Emulator, operator: RunningOperator, queue: Queue
) -> None:
    """A spec changed while the operator cannot write (its annotations nor its status):
    the handler's writes wait for the API, then the target is Ready for the new
    generation and registered with it."""
    await create(k8s, PT_URL, target("edited"))
    await wait_ready(k8s, "edited")
    response = await k8s.patch(
        f"{PT_URL}/edited",
        json={"spec": {"timeoutSeconds": 3}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status == 200
    k8s.down = True
    try:
        await wait_until(
            lambda: sum(1 for _, path in k8s.refused if "/edited" in path) >= 10,
            timeout=30,
            what="the handler's writes retried through the outage",
        )
    finally:
        k8s.down = False
    await wait_until(
        lambda: (
            status(k8s, PT, "edited").get("observedGeneration") == 2
            and condition(k8s, PT, "edited").get("status") == "True"
        ),
        timeout=10,
        what="generation 2 observed once the API is back",
    )
    rows = await queue.registry.list(NS, "edited")
    assert rows and rows[0].generation == 2


@pytest.fixture()
def flaky_tick(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The status tick raises (a bug, an unexpected answer) its first three times."""
    calls: list[int] = []
    real = targets.target_status.render

    def render(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) <= 3:
            raise RuntimeError("a tick that fails")
        return real(*args, **kwargs)

    monkeypatch.setattr(targets.target_status, "render", render)
    yield calls


@pytest.mark.slow
async def test_a_tick_that_raises_is_tried_again_and_the_timer_keeps_ticking(
    k8s: Emulator, flaky_tick: list[int], operator: RunningOperator, queue: Queue
) -> None:
    await create(k8s, PT_URL, target("hook"))
    await wait_ready(k8s, "hook")
    await queue.jobs.enqueue(job("default/hook"))
    await wait_until(
        lambda: status(k8s, PT, "hook").get("depth", {}).get("total") == 1,
        what="the live status after three failed ticks",
    )
    assert len(flaky_tick) > 3
    await queue.jobs.enqueue(job("default/hook"))
    await wait_until(lambda: status(k8s, PT, "hook").get("depth", {}).get("total") == 2)


async def test_a_target_created_while_postgresql_is_down_becomes_ready(
    k8s: Emulator, start_operator: StartOperator, queue: Queue, db_url: str, pg_admin_url: str
) -> None:
    """The create handler meets the outage: Ready=Unknown (DatabaseUnavailable) and
    retries; once PostgreSQL is back the target is registered, Ready, with live status."""
    await start_operator(db_connect_timeout=1)
    async with database_outage(pg_admin_url, db_url):
        await create(k8s, PT_URL, target("early"))
        down = await wait_until(
            lambda: (c := condition(k8s, PT, "early")).get("reason") == "DatabaseUnavailable" and c,
            timeout=20,
            what="Ready=Unknown while PostgreSQL is down",
        )
        assert down["status"] == "Unknown"
    await wait_ready(k8s, "early", timeout=20)
    await queue.pool.check()  # the outage closed the test's own connections too
    assert await queue.registry.list(NS, "early")
    await queue.jobs.enqueue(job("default/early"))
    await wait_until(
        lambda: status(k8s, PT, "early").get("depth", {}).get("total") == 1,
        timeout=10,
        what="live status after the database outage",
    )
    assert obj(k8s, PT, "early")["status"]["observedGeneration"] == 1


async def _with(value: Any, check: Any) -> Any:
    result = await value
    return result if check(result) else None
