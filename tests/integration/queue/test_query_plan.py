"""The hot queries use their partial indexes on realistic data, not a scan of the table.

The data looks like a queue that has been running for a while: per target, thousands of
finished jobs kept for the retention period, a few hundred waiting (some held behind an
ordering key, some not due yet), a few running; dead letters skewed across targets. No
planner settings are changed: the plans are those PostgreSQL picks after ANALYZE.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from psycopg.rows import dict_row

from herald_queue import sql
from herald_queue.queue import Queue
from tests.helpers import register, sql_exec

TARGETS = {"alpha": 0.80, "beta": 0.15, "gamma": 0.05}  # share of the dead letters


async def populate(queue: Queue) -> dict[str, int]:
    ids = {name: await register(queue, name) for name in TARGETS}
    for n, target_id in enumerate(ids.values()):
        # 2000 finished jobs per target over the last two days (a few past retention).
        await sql_exec(
            queue,
            """
            INSERT INTO herald.jobs (id, target_id, priority, state, payload, run_at, deadline,
                                     created_at, attempts, started_at, finished_at,
                                     dead_reason, last_error, last_error_class)
            SELECT gen_random_uuid(), %(t)s, (ARRAY['high', 'medium', 'low'])[1 + i %% 3],
                   CASE WHEN i %% 50 = 0 THEN 'dead' ELSE 'succeeded' END,
                   jsonb_build_object('i', i), ts, ts, ts, 1, ts, ts,
                   CASE WHEN i %% 50 = 0 THEN 'permanent-error' END,
                   CASE WHEN i %% 50 = 0 THEN 'bad' END,
                   CASE WHEN i %% 50 = 0 THEN 'permanent' END
            FROM generate_series(1, 2000) AS i,
                 LATERAL (SELECT now() - make_interval(secs => i * 86.4 + %(n)s)) AS t (ts)
            """,
            {"t": target_id, "n": n},
        )
        # 300 waiting: ready, retrying, not yet due, and held behind ordering keys.
        await sql_exec(
            queue,
            """
            INSERT INTO herald.jobs (id, target_id, priority, state, payload, run_at, deadline,
                                     attempts, ordering_key, held)
            SELECT gen_random_uuid(), %(t)s, (ARRAY['high', 'medium', 'low'])[1 + i %% 3],
                   CASE WHEN i %% 4 = 0 THEN 'retrying' ELSE 'queued' END,
                   jsonb_build_object('i', i), ts, ts + make_interval(secs => (i %% 3) * 60),
                   CASE WHEN i %% 4 = 0 THEN 1 ELSE 0 END,
                   CASE WHEN i %% 5 = 0 THEN 'key-' || (i %% 20) END,
                   i %% 5 = 0 AND i > 20
            FROM generate_series(1, 300) AS i,
                 LATERAL (SELECT now() + make_interval(secs => (i %% 10 - 8) * 30)) AS t (ts)
            """,
            {"t": target_id},
        )
        await sql_exec(
            queue,
            """
            INSERT INTO herald.jobs (id, target_id, priority, state, payload, run_at, deadline,
                                     attempts, leased_by, lease_expires_at, started_at)
            SELECT gen_random_uuid(), %(t)s, 'high', 'running', '{}', now(), now(), 1,
                   'worker-' || i, now() + interval '60 seconds', now()
            FROM generate_series(1, 10) AS i
            """,
            {"t": target_id},
        )
    # 4000 dead letters over 30 days, 80/15/5 % across the targets (no parameters: % is
    # the operator).
    await sql_exec(
        queue,
        """
        INSERT INTO herald.dead_letters (id, job_id, target_namespace, target_name,
                                         target_type, payload, target_config, error_message,
                                         error_type, reason, retry_count, priority,
                                         job_created_at, failed_at, replayed, replayed_at,
                                         replay_result)
        SELECT gen_random_uuid(), gen_random_uuid(), 'default',
               CASE WHEN i % 100 < 80 THEN 'alpha' WHEN i % 100 < 95 THEN 'beta'
                    ELSE 'gamma' END,
               'webhook', '{"alert": "x"}', '{}', 'failed',
               (ARRAY['transient', 'permanent', 'unknown'])[1 + i % 3],
               'attempts-exhausted', 5, CASE WHEN i % 50 = 0 THEN 'high' ELSE 'medium' END,
               ts, ts, i % 7 = 0,
               CASE WHEN i % 7 = 0 THEN ts END, CASE WHEN i % 7 = 0 THEN 'queued' END
        FROM generate_series(1, 4000) AS i,
             LATERAL (SELECT now() - make_interval(secs => i * 648)) AS t (ts)
        """,
    )
    await sql_exec(queue, "ANALYZE herald.jobs")
    await sql_exec(queue, "ANALYZE herald.dead_letters")
    await sql_exec(queue, "ANALYZE herald.targets")
    return ids


async def explain(queue: Queue, query: bytes, params: dict[str, Any]) -> dict[str, Any]:
    """The plan PostgreSQL picks for ``query`` with these parameters bound (an unnamed
    prepared statement, as psycopg runs every query: planned with the actual values)."""
    async with queue.pool.connection() as conn:
        # A plain EXPLAIN does not execute: the claim's UPDATE changes nothing.
        cur = await conn.cursor(row_factory=dict_row).execute(
            b"EXPLAIN (FORMAT JSON) " + query, params
        )
        row = await cur.fetchone()
    assert row is not None
    plan: dict[str, Any] = row["QUERY PLAN"][0]["Plan"]
    return plan


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", []):
        out += nodes(child)
    return out


def index_names(plan: dict[str, Any]) -> set[str]:
    return {n["Index Name"] for n in nodes(plan) if "Index Name" in n}


def seq_scans(plan: dict[str, Any]) -> set[str]:
    return {n["Relation Name"] for n in nodes(plan) if n["Node Type"] == "Seq Scan"}


@pytest.fixture()
async def data(queue: Queue) -> dict[str, int]:
    return await populate(queue)


def claim_params(**kw: Any) -> dict[str, Any]:
    return {
        "worker": "w",
        "limit": 50,
        "target_limit": 50,
        "lease_seconds": 60.0,
        "quota_targets": [],
        "quota_limits": [],
        "with_quotas": False,
        "async_commit": True,
    } | kw


async def test_claim_uses_the_claim_index(queue: Queue, data: dict[str, int]) -> None:
    plan = await explain(queue, sql.query("jobs", "claim"), claim_params())
    assert "jobs_claim_idx" in index_names(plan), plan
    assert "jobs" not in seq_scans(plan), plan


async def test_quota_claim_uses_the_claim_index(queue: Queue, data: dict[str, int]) -> None:
    plan = await explain(
        queue,
        sql.query("jobs", "claim"),
        claim_params(with_quotas=True, quota_targets=[data["beta"]], quota_limits=[5]),
    )
    assert "jobs_claim_idx" in index_names(plan), plan
    assert "jobs" not in seq_scans(plan), plan


def list_params(**kw: Any) -> dict[str, Any]:
    return {
        "namespace": None,
        "name": None,
        "error_type": None,
        "priority": None,
        "failed_after": None,
        "failed_before": None,
        "replayed": None,
        "ids": None,
        "job_ids": None,
        "after_failed_at": None,
        "after_id": None,
        "limit": 101,
    } | kw


@pytest.mark.parametrize("target", ["gamma", "beta", "alpha"])
async def test_dead_letter_list_by_target_uses_an_index(
    queue: Queue, data: dict[str, int], target: str
) -> None:
    """For gamma (5 % of the entries) the plan reads dead_letters_target_name_idx, for the
    first page and for a later one (keyset cursor). For the bigger targets (beta 15 %,
    alpha 80 %) walking dead_letters_failed_at_idx newest first and filtering is as good,
    and PostgreSQL may pick either: an index, never a Seq Scan."""
    query = sql.query("dead_letters", "list_dead_letters")
    expected = {"dead_letters_target_name_idx"}
    if target != "gamma":
        expected.add("dead_letters_failed_at_idx")
    cursor = {
        "after_failed_at": dt.datetime.now(dt.UTC) - dt.timedelta(days=10),
        "after_id": "00000000-0000-0000-0000-000000000000",
    }
    for params in (
        list_params(namespace="default", name=target),
        list_params(namespace="default", name=target, **cursor),
    ):
        plan = await explain(queue, query, params)
        assert index_names(plan) & expected, plan
        assert "dead_letters" not in seq_scans(plan), plan


async def test_dead_letter_list_by_a_rare_priority_uses_its_index(
    queue: Queue, data: dict[str, int]
) -> None:
    """High jobs are 2 % of the dead letters: the priority filter reads
    dead_letters_priority_idx (migration 0005), first page and later ones."""
    query = sql.query("dead_letters", "list_dead_letters")
    cursor = {
        "after_failed_at": dt.datetime.now(dt.UTC) - dt.timedelta(days=10),
        "after_id": "00000000-0000-0000-0000-000000000000",
    }
    for params in (list_params(priority="high"), list_params(priority="high", **cursor)):
        plan = await explain(queue, query, params)
        assert "dead_letters_priority_idx" in index_names(plan), plan
        assert "dead_letters" not in seq_scans(plan), plan


async def test_retention_prune_uses_the_finished_index(queue: Queue, data: dict[str, int]) -> None:
    # The default retention (one day): about half of the finished jobs are past it.
    plan = await explain(
        queue,
        sql.query("jobs", "prune_finished"),
        {"older_than": queue.settings.job_retention, "limit": 5000, "now": None},
    )
    assert "jobs_finished_idx" in index_names(plan), plan
    assert "jobs" not in seq_scans(plan), plan
