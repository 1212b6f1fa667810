"""THE key scenario: a receiver is down for a while.

- The circuit opens after failureThreshold failures (targets.circuit_state = 'open').
- While it is open, no job of that target is claimed but the half-open probes (at most
  halfOpenProbes at a time, at most one round per openSeconds), and no attempt is burned:
  attempts never grow beyond what they were when it opened, and nothing reaches the DLQ,
  even with maxAttempts = 3.
- Another target on the same worker keeps being delivered meanwhile.
- When the receiver is back, a probe succeeds, the circuit closes and EVERY job is
  delivered, once; the DLQ stays empty.
- /metrics: herald_circuit_trips_total, herald_circuit_recoveries_total and
  herald_attempts_refunded_total move, in step with the target's counters in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from herald_tools.receiver import Answer, Receiver
from tests.helpers import sql_rows, wait_until
from tests.integration.worker.harness import (
    FAST_RETRY,
    TrackingReceiver,
    circuit,
    dead_letters,
    metric,
    states,
    target_doc,
    wait_state,
    worker,
    write_manifests,
)

JOBS = 200
STEADY_JOBS = 50
THRESHOLD = 3
MAX_ATTEMPTS = 3  # small on purpose: an outage must not exhaust it
OPEN_SECONDS = 0.5
PROBES = 2
OUTAGE = 2.5  # seconds the outage goes on after the circuit opened


async def flaky_jobs(queue: Any) -> list[dict[str, Any]]:
    return await sql_rows(
        queue,
        "SELECT j.id::text AS id, j.state, j.attempts FROM herald.jobs j "
        "JOIN herald.targets t ON t.id = j.target_id WHERE t.name = 'flaky'",
    )


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted(
        [(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1])
    )
    best = current = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["503", "refused"])
async def test_outage_opens_the_circuit_burns_nothing_and_recovers(
    db_url: str, tmp_path: Path, mode: str
) -> None:
    down = True

    def flaky_script(receiver: Receiver, request: web.Request, body: bytes) -> Answer:
        # The 503s take a moment, so that deliveries in flight overlap visibly.
        return Answer(503, body="maintenance", delay=0.05) if down else Answer()

    flaky = TrackingReceiver(flaky_script)
    await flaky.start()
    port = flaky.port
    if mode == "refused":
        await flaky.stop()  # connection refused until it is started again on this port
    steady = TrackingReceiver()
    await steady.start()
    try:
        path = write_manifests(
            tmp_path / "targets.yaml",
            [
                target_doc(
                    "flaky",
                    f"http://127.0.0.1:{port}/hook",
                    retry={"maxAttempts": MAX_ATTEMPTS, **FAST_RETRY},
                    circuitBreaker={
                        "failureThreshold": THRESHOLD,
                        "openSeconds": OPEN_SECONDS,
                        "halfOpenProbes": PROBES,
                    },
                ),
                target_doc("steady", steady.url),
            ],
        )
        async with worker(db_url, path) as w:
            q = w.queue
            ids = await w.submit_many("flaky", [{"n": i} for i in range(JOBS)])

            # -- the circuit opens -------------------------------------------------------
            async def opened_and_settled() -> bool:
                return (
                    await circuit(q, "flaky") == "open"
                    and (await states(q, "flaky")).get("running", 0) == 0
                )

            await wait_until(
                opened_and_settled,
                timeout=15,
                interval=0.01,
                what="circuit open, no delivery in flight",
            )
            opened_at = time.monotonic()
            at_open = {r["id"]: r["attempts"] for r in await flaky_jobs(q)}
            assert len(at_open) == JOBS
            assert max(at_open.values()) < MAX_ATTEMPTS, at_open
            assert await dead_letters(q) == [], "nothing dead before the circuit opened"
            attempts_at_open = metric(
                await w.metrics(), "herald_delivery_attempts_total", target="default/flaky"
            )
            arrived_at_open = flaky.arrived

            # -- while it is open ----------------------------------------------------------
            steady_ids = await w.submit_many("steady", [{"s": i} for i in range(STEADY_JOBS)])
            seen_states: collections.Counter[str] = collections.Counter()
            steady_done_during_outage = False
            # The outage lasts OUTAGE seconds, and longer if the other target's jobs are
            # not all delivered yet (a slow machine): that they are delivered while this
            # target is down is the point, not how fast.
            give_up = opened_at + OUTAGE + 60
            while time.monotonic() - opened_at < OUTAGE or not steady_done_during_outage:
                assert time.monotonic() < give_up, (
                    f"the other target was not delivered during the outage: "
                    f"{await states(q, 'steady')}"
                )
                rows = await flaky_jobs(q)
                state = await circuit(q, "flaky")
                seen_states[state] += 1
                assert state in ("open", "half_open"), "no success, no closing"
                running = [r for r in rows if r["state"] == "running"]
                assert len(running) <= PROBES, f"{len(running)} running while not closed"
                assert not [r for r in rows if r["state"] == "dead"], "an outage fills no DLQ"
                grown = [
                    r for r in rows if r["state"] != "running" and r["attempts"] > at_open[r["id"]]
                ]
                assert not grown, f"attempts burned while open: {grown[:3]}"
                if not steady_done_during_outage:
                    counts = await states(q, "steady")
                    steady_done_during_outage = counts.get("succeeded", 0) == STEADY_JOBS
                await asyncio.sleep(0.05)
            assert steady_done_during_outage, (
                "the other target was delivered while this one was down: "
                f"{await states(q, 'steady')}"
            )
            assert sorted(steady.delivered_ids()) == sorted(steady_ids)

            probes = (
                metric(await w.metrics(), "herald_delivery_attempts_total", target="default/flaky")
                - attempts_at_open
            )
            requests = flaky.arrived - arrived_at_open
            outage = time.monotonic() - opened_at  # measured last: it covers both counts
            rounds = int(outage / OPEN_SECONDS) + 1
            assert 1 <= probes <= PROBES * rounds, (
                f"{probes} attempts in {outage:.1f}s open: at most {PROBES} probes per "
                f"{OPEN_SECONDS}s round"
            )
            if mode == "503":
                assert 1 <= requests <= PROBES * rounds, f"{requests} requests while open"
                during = [(i.started, i.ended) for i in flaky.intervals if i.started >= opened_at]
                assert 1 <= max_overlap(during) <= PROBES, "probes at once <= halfOpenProbes"
            row = (await sql_rows(q, "SELECT * FROM herald.targets WHERE name = 'flaky'"))[0]
            assert row["circuit_trips_total"] >= 1
            assert row["circuit_state"] in ("open", "half_open")

            # -- the receiver is back ------------------------------------------------------
            down = False
            if mode == "refused":
                await flaky.start(port)
            await wait_state(q, "succeeded", JOBS, target="flaky", timeout=30)
            assert await circuit(q, "flaky") == "closed"
            assert await dead_letters(q) == []
            delivered = collections.Counter(flaky.delivered_ids())
            assert set(delivered) == set(ids), "every job delivered"
            assert max(delivered.values()) == 1, "each once"
            final = {r["id"]: r["attempts"] for r in await flaky_jobs(q)}
            assert all(final[i] <= at_open[i] + 1 for i in ids), (
                "the outage cost no attempt: at most one more, the successful delivery"
            )

            # -- what the metrics and the registry say -------------------------------------
            row = (await sql_rows(q, "SELECT * FROM herald.targets WHERE name = 'flaky'"))[0]
            assert row["circuit_recoveries_total"] >= 1
            assert row["consecutive_failures"] == 0
            samples = await w.metrics()
            flaky_ref = {"target": "default/flaky"}
            assert metric(samples, "herald_attempts_refunded_total", **flaky_ref) >= 1
            assert metric(samples, "herald_jobs_delivered_total", **flaky_ref) == JOBS
            assert metric(samples, "herald_dead_letters_written_total", **flaky_ref) == 0
            assert metric(samples, "herald_circuit_trips_total", target="default/steady") == 0
            assert (
                metric(samples, "herald_circuit_recoveries_total", **flaky_ref)
                == (row["circuit_recoveries_total"])
            ), "one count per time it closed again"
            assert (
                metric(samples, "herald_circuit_trips_total", **flaky_ref)
                == (row["circuit_trips_total"])
            ), "one count per time the circuit opened"
    finally:
        await flaky.stop()
        await steady.stop()
