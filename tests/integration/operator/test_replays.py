"""DeadLetterReplays against the real operator: a replay in batches with progress, a dry
run, a selector that matches nothing, a missing target, limits and ids, a finished replay
that never runs again, and an operator restart in the middle of a replay."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest

from herald_core.states import Priority
from herald_queue.queue import Queue
from tests.helpers import claim_all, failure, job, sql_rows, sql_value, wait_until
from tests.integration.operator.cluster import (
    DLR,
    DLR_URL,
    PT_URL,
    Emulator,
    RunningOperator,
    StartOperator,
    condition,
    create,
    events,
    obj,
    replay_manifest,
    status,
    target,
    valid,
    wait_ready,
)
from tests.integration.worker.harness import metric, worker


async def dead_letters(queue: Queue, target_name: str, n: int) -> list[uuid.UUID]:
    """``n`` jobs of ``target_name`` that failed permanently: ``n`` dead letters."""
    ids = [(await queue.jobs.enqueue(job(f"default/{target_name}", {"n": i}))).id for i in range(n)]
    claimed = await claim_all(queue)
    ours = [c for c in claimed if c.id in ids]
    assert len(ours) == n
    await queue.jobs.fail("w", [failure(c, "permanent") for c in ours])
    await queue.jobs.release("w", [c.id for c in claimed if c.id not in ids])
    return ids


async def ready_target(k8s: Emulator, name: str = "hook") -> None:
    await create(k8s, PT_URL, target(name))
    await wait_ready(k8s, name)


def finished(k8s: Emulator, name: str) -> dict[str, Any]:
    current = status(k8s, DLR, name)
    return current if current.get("phase") in ("Succeeded", "Failed") else {}


async def wait_finished(k8s: Emulator, name: str, timeout: float = 10) -> dict[str, Any]:
    found: dict[str, Any] = await wait_until(
        lambda: finished(k8s, name), timeout=timeout, what=f"DeadLetterReplay {name} finished"
    )
    valid(k8s, DLR, name)
    return found


async def queued_ids(queue: Queue) -> set[uuid.UUID]:
    rows = await sql_rows(queue, "SELECT id FROM herald.jobs WHERE state = 'queued'")
    return {r["id"] for r in rows}


async def test_a_replay_puts_dead_letters_back_in_batches(
    k8s: Emulator, start_operator: StartOperator, queue: Queue
) -> None:
    await start_operator(replay_batch=2)
    await ready_target(k8s)
    ids = await dead_letters(queue, "hook", 5)
    await create(k8s, DLR_URL, replay_manifest("after-outage", target="hook"))
    done = await wait_finished(k8s, "after-outage")
    assert done["phase"] == "Succeeded"
    assert (done["matched"], done["replayed"], done["skipped"]) == (5, 5, 0)
    assert done["startTime"] and done["completionTime"]
    assert done["observedGeneration"] == 1
    complete = condition(k8s, DLR, "after-outage", "Complete")
    assert (complete["status"], complete["reason"]) == ("True", "Replayed")
    assert await queued_ids(queue) == set(ids)
    tag = await sql_value(queue, "SELECT DISTINCT replayed_by FROM herald.dead_letters")
    uid = obj(k8s, DLR, "after-outage")["metadata"]["uid"]
    assert tag == f"DeadLetterReplay/default/after-outage/{uid}"
    # Progress was written between batches, as merge patches of /status.
    progress = [
        r.data["status"]
        for r in list(k8s)
        if r.resource is not None
        and r.resource.plural == "deadletterreplays"
        and r.subresource == "status"
        and isinstance(r.data, dict)
        and (r.data.get("status") or {}).get("phase") == "Running"
    ]
    assert [p["replayed"] for p in progress] == [0, 2, 4]
    assert all(p["matched"] == 5 for p in progress)
    await wait_until(lambda: events(k8s, "ReplayStarted", "after-outage"))
    succeeded = await wait_until(lambda: events(k8s, "ReplaySucceeded", "after-outage"))
    assert "put 5 dead letter(s) back" in succeeded[0]["message"]


async def test_a_dry_run_only_counts(
    k8s: Emulator, operator: RunningOperator, queue: Queue
) -> None:
    await ready_target(k8s)
    await dead_letters(queue, "hook", 3)
    await create(k8s, DLR_URL, replay_manifest("how-many", target="hook", dryRun=True))
    done = await wait_finished(k8s, "how-many")
    assert done["phase"] == "Succeeded"
    assert (done["matched"], done["replayed"], done["skipped"]) == (3, 0, 0)
    assert condition(k8s, DLR, "how-many", "Complete")["reason"] == "DryRun"
    assert "3 would be put back" in done["message"]
    assert await queued_ids(queue) == set()
    assert await sql_value(queue, "SELECT count(*) FROM herald.dead_letters WHERE replayed") == 0
    await wait_until(lambda: events(k8s, "DryRunCompleted", "how-many"))


async def test_a_selector_that_matches_nothing_succeeds_with_zero_counts(
    k8s: Emulator, operator: RunningOperator, queue: Queue
) -> None:
    await ready_target(k8s)
    await dead_letters(queue, "hook", 2)
    await create(k8s, DLR_URL, replay_manifest("none", target="hook", errorClass="transient"))
    done = await wait_finished(k8s, "none")
    assert done["phase"] == "Succeeded"
    assert (done["matched"], done["replayed"], done["skipped"]) == (0, 0, 0)
    assert condition(k8s, DLR, "none", "Complete")["reason"] == "NothingMatched"
    assert await queued_ids(queue) == set()


async def test_a_replay_created_before_its_target_waits_for_it(
    k8s: Emulator, operator: RunningOperator, queue: Queue
) -> None:
    """`kubectl apply -f dir/` creates deadletterreplay.yaml before webhook-target.yaml."""
    await create(k8s, DLR_URL, replay_manifest("early", target="late"))
    waiting = await wait_until(
        lambda: (
            status(k8s, DLR, "early").get("phase") == "Pending"
            and "does not exist yet" in status(k8s, DLR, "early").get("message", "")
        ),
        what="the replay waiting for its target",
    )
    assert waiting
    assert condition(k8s, DLR, "early", "Complete")["reason"] == "Waiting"
    await ready_target(k8s, "late")
    await dead_letters(queue, "late", 2)
    done = await wait_finished(k8s, "early")
    assert done["phase"] == "Succeeded", done


async def test_a_replay_of_a_target_that_does_not_exist_fails(
    k8s: Emulator, start_operator: StartOperator, queue: Queue
) -> None:
    await start_operator(replay_target_wait=0.0)
    await ready_target(k8s)
    await dead_letters(queue, "hook", 2)
    await create(k8s, DLR_URL, replay_manifest("wrong", target="nope"))
    done = await wait_finished(k8s, "wrong")
    assert done["phase"] == "Failed"
    assert (done["matched"], done["replayed"]) == (0, 0)
    failed = condition(k8s, DLR, "wrong", "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "TargetNotFound")
    assert "PublishingTarget default/nope does not exist" in failed["message"]
    assert condition(k8s, DLR, "wrong", "Complete")["status"] == "False"
    warned = await wait_until(lambda: events(k8s, "ReplayFailed", "wrong"))
    assert warned[0]["type"] == "Warning"
    assert await queued_ids(queue) == set()


async def test_limit_and_job_ids_narrow_the_selection(
    k8s: Emulator, operator: RunningOperator, queue: Queue
) -> None:
    await ready_target(k8s)
    ids = await dead_letters(queue, "hook", 5)
    await create(k8s, DLR_URL, replay_manifest("two", jobIds=[str(i) for i in ids[:3]], limit=2))
    done = await wait_finished(k8s, "two")
    assert (done["matched"], done["replayed"]) == (2, 2)
    replayed = await queued_ids(queue)
    assert len(replayed) == 2 and replayed < set(ids[:3])


async def test_a_replay_leaves_cancelled_jobs_out_unless_job_ids_names_them(
    k8s: Emulator, operator: RunningOperator, queue: Queue
) -> None:
    await ready_target(k8s)
    failed = await dead_letters(queue, "hook", 2)
    cancelled = [(await queue.jobs.enqueue(job("default/hook", {"c": i}))).id for i in range(3)]
    assert len(await queue.jobs.cancel(cancelled)) == 3
    await create(k8s, DLR_URL, replay_manifest("everything", target="hook"))
    done = await wait_finished(k8s, "everything")
    assert (done["matched"], done["replayed"], done["skipped"]) == (2, 2, 0)
    assert "3 cancelled job(s) left out" in done["message"], done["message"]
    assert "spec.jobIds" in done["message"]
    assert await queued_ids(queue) == set(failed)
    await create(k8s, DLR_URL, replay_manifest("dry", dryRun=True))
    dry = await wait_finished(k8s, "dry")
    assert dry["matched"] == 0 and "3 cancelled job(s) left out" in dry["message"], dry
    await create(k8s, DLR_URL, replay_manifest("named", jobIds=[str(cancelled[0])]))
    named = await wait_finished(k8s, "named")
    assert (named["matched"], named["replayed"]) == (1, 1)
    assert "cancelled" not in named["message"], named["message"]
    assert await queued_ids(queue) == {*failed, cancelled[0]}


async def test_dead_letters_of_a_deleted_target_replay_to_its_recreation(
    k8s: Emulator, operator: RunningOperator, queue: Queue
) -> None:
    await ready_target(k8s, "phoenix")
    ids = [(await queue.jobs.enqueue(job("default/phoenix"))).id for _ in range(2)]
    await k8s.delete(f"{PT_URL}/phoenix")
    await wait_until(lambda: not obj(k8s, "herald.dev/v1alpha1/publishingtargets", "phoenix"))
    await ready_target(k8s, "phoenix")
    await create(k8s, DLR_URL, replay_manifest("rise", target="phoenix"))
    done = await wait_finished(k8s, "rise")
    assert (done["phase"], done["replayed"]) == ("Succeeded", 2)
    assert await queued_ids(queue) == set(ids)
    new_id = (await queue.registry.list("default", "phoenix"))[0].id
    targets = await sql_rows(queue, "SELECT DISTINCT target_id FROM herald.jobs")
    assert [r["target_id"] for r in targets] == [new_id]


async def test_a_finished_replay_never_runs_again(
    k8s: Emulator,
    start_operator: StartOperator,
    queue: Queue,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = await start_operator()
    await ready_target(k8s)
    await dead_letters(queue, "hook", 2)
    await create(k8s, DLR_URL, replay_manifest("once", target="hook"))
    done = await wait_finished(k8s, "once")
    assert done["replayed"] == 2
    later = await dead_letters(queue, "hook", 2)  # would match, were it run again
    await first.stop()

    caplog.set_level(logging.INFO, logger="kopf.objects")
    await start_operator()
    await wait_until(
        lambda: any("a finished replay never runs again" in r.getMessage() for r in caplog.records),
        what="the resume was seen",
    )
    assert status(k8s, DLR, "once") == done
    assert not await queued_ids(queue) & set(later)


async def test_a_replay_selects_by_priority(
    k8s: Emulator, operator: RunningOperator, queue: Queue
) -> None:
    await ready_target(k8s)
    low = [
        (await queue.jobs.enqueue(job("default/hook", {"n": i}, Priority.LOW))).id for i in range(2)
    ]
    high = [(await queue.jobs.enqueue(job("default/hook", {"h": 0}, Priority.HIGH))).id]
    claimed = await claim_all(queue)
    await queue.jobs.fail("w", [failure(c, "permanent") for c in claimed if c.id in low + high])
    await create(k8s, DLR_URL, replay_manifest("lows", target="hook", priority="low"))
    done = await wait_finished(k8s, "lows")
    assert done["phase"] == "Succeeded", done
    assert (done["matched"], done["replayed"]) == (2, 2)
    assert await queued_ids(queue) == set(low)


async def test_a_replay_counts_in_the_workers_metrics_with_its_target(
    k8s: Emulator, operator: RunningOperator, queue: Queue, db_url: str
) -> None:
    """herald_dead_letters_replayed_total counts a DeadLetterReplay's work too (PostgreSQL
    keeps the counter; a worker's real /metrics shows it)."""
    await ready_target(k8s)
    await dead_letters(queue, "hook", 3)
    await create(k8s, DLR_URL, replay_manifest("counted", target="hook", limit=2))
    done = await wait_finished(k8s, "counted")
    assert (done["phase"], done["replayed"]) == ("Succeeded", 2)
    async with worker(db_url) as w:

        async def replayed() -> float | None:
            samples = await w.metrics()
            found = metric(samples, "herald_dead_letters_replayed_total", target="default/hook")
            return found if found == 2 else None

        assert await wait_until(replayed, timeout=10) == 2
