"""Locks: nothing Herald does waits without a bound, two of its locks never share a key,
and transactions take them in one order.

- The waker's session lock and the migration lock were once the same number: a running
  worker made every ``herald migrate`` (and every CLI command on the embedded database,
  which migrates first) wait forever. Migrations now run beside a waker.
- A migration tries its lock and waits for table locks a bounded time, saying who holds
  them; past its bound it fails naming the holder.
- Every connection says which Herald process it is (application_name) and has a
  lock_timeout.
- complete, fail and cancel take an ordering-key chain's lock before they touch a job row,
  as an enqueue does: a duplicate submission (same idempotency and ordering key) while
  its job settles used to deadlock with the settle.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import psycopg
import pytest

from herald_core.errors import MigrationError
from herald_core.states import JobState
from herald_queue import db, listener, locks, migrate, sql
from herald_queue.queue import Queue
from herald_queue.settings import DatabaseSettings
from tests.helpers import RETRY_LATER, bounded, failure, job, register, sql_value, wait_until

FreshDb = Callable[..., Any]
OLDER = max(v for v, _, text in sql.migrations() if "ALTER TABLE herald.targets ADD" in text) - 1
"""A schema behind (what a database has when ``helm upgrade`` starts), before the last
migration that adds to herald.targets, the table these tests hold locks on: an ADD takes a
lock that waits for readers. (0010 only sets storage parameters, under a lock that does
not.)"""


async def connect(url: str, application_name: str = "herald test") -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(
        url, autocommit=True, application_name=application_name
    )


async def older_database(fresh_db: FreshDb, version: int = OLDER) -> str:
    """A database migrated one by one up to ``version``."""
    url: str = await fresh_db()
    async with await connect(url) as conn:
        for number, name, text in [m for m in sql.migrations() if m[0] <= version]:
            async with conn.transaction():
                await conn.execute(text.encode())
                await conn.execute(
                    "INSERT INTO herald.schema_migrations (version, name) VALUES (%s, %s)",
                    [number, name],
                )
    return url


async def version_of(url: str) -> int:
    async with await connect(url) as conn:
        return await migrate.current_version(conn)


def test_every_session_lock_has_its_own_key() -> None:
    keys = [int(lock) for lock in locks.SessionLock]
    assert len(set(keys)) == len(keys)
    assert locks.LEGACY_KEY not in keys, "a worker of the previous release holds that key"
    assert all(0 < k < 2**63 for k in keys), "advisory lock keys are signed 64-bit"
    assert all(k >> 16 == locks.PREFIX >> 16 for k in keys)
    assert locks.CHAIN_SEED != locks.IDEMPOTENCY_SEED


async def test_migrate_runs_beside_a_running_waker(fresh_db: FreshDb) -> None:
    """The defect: the waker's lock was the migration lock, so this waited forever."""
    url = await older_database(fresh_db)
    waker = listener.Listener(url, elect_interval=0.05)
    task = asyncio.create_task(waker.run())
    try:
        await wait_until(lambda: waker.waker, timeout=30, what="the listener is the waker")
        async with await connect(url, "herald migrate (test)") as conn:
            report = await bounded(
                migrate.migrate(conn, wait=60), "herald migrate beside the waker", 60
            )
        assert (report.before, report.after) == (OLDER, migrate.latest_version())
        assert waker.waker, "the worker is still the waker after the migration"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_up_to_date_database_is_not_locked_at_all(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every CLI command on the embedded database migrates first: when there is nothing to
    do it takes no lock, so not even another migration can hold it up."""
    async with await connect(db_url, "herald migrate (someone else)") as holder:
        await holder.execute("SELECT pg_advisory_lock(%s)", [locks.SessionLock.MIGRATION])
        async with await connect(db_url) as conn:
            report = await bounded(migrate.migrate(conn, wait=60), "herald migrate", 30)
    assert report.applied == []


@pytest.mark.slow
async def test_the_migration_lock_is_waited_for_with_a_bound_that_names_its_holder(
    fresh_db: FreshDb, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrate, "PROGRESS_INTERVAL", 0.2)
    url = await older_database(fresh_db)
    async with await connect(url, "herald migrate (pod-a)") as holder:
        await holder.execute("SELECT pg_advisory_lock(%s)", [locks.SessionLock.MIGRATION])
        async with await connect(url) as conn:
            with (
                caplog.at_level(logging.WARNING, logger="herald.migrate"),
                pytest.raises(MigrationError) as info,
            ):
                await bounded(migrate.migrate(conn, wait=1.5), "herald migrate", 30)
    message = str(info.value)
    assert "migration lock" in message and "'herald migrate (pod-a)'" in message
    assert "HERALD_MIGRATION_WAIT" in message
    waiting = [
        r.getMessage() for r in caplog.records if "waiting for the migration lock" in r.getMessage()
    ]
    assert waiting and "herald migrate (pod-a)" in waiting[0], "it said what it waits for"
    assert await version_of(url) == OLDER


@pytest.mark.slow
async def test_a_migration_waits_for_table_locks_a_bounded_time_then_applies(
    fresh_db: FreshDb, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long transaction on a table the migration alters (a worker's, a person's psql):
    each attempt gives up after STATEMENT_LOCK_TIMEOUT, so the sessions queued behind the
    waiting ALTER TABLE are not held up longer, and the migration goes through once the
    transaction ends."""
    monkeypatch.setattr(migrate, "STATEMENT_LOCK_TIMEOUT", 0.2)
    url = await older_database(fresh_db)
    async with await connect(url, "herald worker (pod-b)") as holder:
        await holder.execute("BEGIN")
        # ACCESS SHARE on the tables a latest migration alters (targets, jobs)
        await holder.execute(
            "SELECT (SELECT count(*) FROM herald.targets), (SELECT count(*) FROM herald.jobs)"
        )
        async with await connect(url) as conn:
            with caplog.at_level(logging.WARNING, logger="herald.migrate"):
                task = asyncio.create_task(migrate.migrate(conn, wait=120))
                await wait_until(
                    lambda: any(
                        "held by 'herald worker (pod-b)'" in r.getMessage() for r in caplog.records
                    ),
                    timeout=60,
                    what="the migration says whose lock it waits for",
                )
                async with await connect(url) as reader:  # not stuck behind the ALTER
                    await bounded(
                        reader.execute("SELECT count(*) FROM herald.targets"),
                        "a read of herald.targets while the migration waits",
                        30,
                    )
                await holder.execute("COMMIT")
                report = await bounded(task, "the migration after the lock was let go", 60)
    assert report.after == migrate.latest_version()


@pytest.mark.slow
async def test_a_migration_gives_up_naming_who_keeps_its_tables_locked(
    fresh_db: FreshDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrate, "STATEMENT_LOCK_TIMEOUT", 0.2)
    url = await older_database(fresh_db)
    async with await connect(url, "psql (a person)") as holder:
        await holder.execute("BEGIN")
        await holder.execute(
            "SELECT (SELECT count(*) FROM herald.targets), (SELECT count(*) FROM herald.jobs)"
        )
        async with await connect(url) as conn:
            with pytest.raises(MigrationError) as info:
                await bounded(migrate.migrate(conn, wait=1.0), "herald migrate", 30)
        await holder.execute("ROLLBACK")
    assert "'psql (a person)'" in str(info.value)
    assert "nothing of it was applied" in str(info.value)
    assert await version_of(url) == OLDER


async def test_every_connection_says_which_process_it_is_and_bounds_its_lock_waits(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "_application_name", db.application_name())
    db.name_process("worker")
    assert db.application_name().startswith("herald worker (")
    conn = await db.connect(db_url, DatabaseSettings(lock_timeout=2.5))
    try:
        cur = await conn.execute(
            "SELECT current_setting('application_name'), current_setting('lock_timeout')"
        )
        assert await cur.fetchone() == (db.application_name(), "2500ms")
    finally:
        await conn.close()
    pool = await db.open_pool(db_url, DatabaseSettings(pool_min=1, pool_max=2, lock_timeout=7))
    try:
        async with pool.connection() as pooled:
            cur = await pooled.execute(
                "SELECT current_setting('application_name'), current_setting('lock_timeout')"
            )
            assert await cur.fetchone() == (db.application_name(), "7s")
    finally:
        await pool.close()


# -- lock order: chain locks before job rows ---------------------------------------------


async def chain_lock_key(queue: Queue, target_id: int, key: str) -> int:
    return int(
        await sql_value(
            queue,
            "SELECT hashtextextended(%(t)s::text || '/' || %(k)s, %(seed)s)",
            {"t": target_id, "k": key, "seed": locks.CHAIN_SEED},
        )
    )


async def row_is_free(url: str, job_id: uuid.UUID) -> bool:
    async with await connect(url) as probe, probe.transaction():
        try:
            await probe.execute(
                "SELECT 1 FROM herald.jobs WHERE id = %s FOR UPDATE NOWAIT", [job_id]
            )
        except psycopg.errors.LockNotAvailable:
            return False
    return True


@pytest.mark.parametrize("change", ["complete", "fail", "cancel"])
async def test_a_change_to_a_chain_takes_its_lock_before_any_job_row(
    queue: Queue, db_url: str, change: str
) -> None:
    """While the chain's lock is held elsewhere, the change waits without having touched
    the job's row: an enqueue holding that chain lock and waiting on the row (a duplicate
    idempotency key) can never close a cycle with it."""
    target_id = await register(queue, retry=RETRY_LATER)
    key = "node7"
    result = await queue.jobs.enqueue(job(payload={"n": 1}, ordering_key=key, idempotency_key="k1"))
    if change == "cancel":
        action: Callable[[], Coroutine[Any, Any, Any]] = lambda: queue.jobs.cancel([result.id])  # noqa: E731
    else:
        [claimed] = await queue.jobs.claim("w", 10)
        action = (
            (lambda: queue.jobs.complete("w", [claimed]))
            if change == "complete"
            else (lambda: queue.jobs.fail("w", [failure(claimed)]))
        )
    lock = await chain_lock_key(queue, target_id, key)
    async with await connect(db_url) as gate:
        await gate.execute("BEGIN")
        await gate.execute("SELECT pg_advisory_xact_lock(%s)", [lock])
        task = asyncio.create_task(action())
        await wait_until(
            lambda: sql_value(
                queue,
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
            ),
            timeout=30,
            what=f"{change} waits for the chain's lock",
        )
        assert await row_is_free(db_url, result.id), f"{change} locked the job row first"
        await gate.execute("COMMIT")
    await bounded(task, change, 30)


@pytest.mark.slow
async def test_duplicate_submissions_while_jobs_settle_never_deadlock(
    queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    """The README's example (idempotency and ordering key) sent again while its job is
    being settled, over many keys at once: every duplicate gets the job, no error."""
    await register(queue, retry=RETRY_LATER)
    keys = [f"node{i}" for i in range(60)]

    def request(k: str) -> Any:
        return job(payload={"summary": "disk full", "node": k}, ordering_key=k, idempotency_key=k)

    first = {k: (await queue.jobs.enqueue(request(k))).id for k in keys}
    claimed = await queue.jobs.claim("w", len(keys))
    assert len(claimed) == len(keys)
    with caplog.at_level(logging.WARNING):
        settles = [
            queue.jobs.complete("w", [c]) if i % 2 else queue.jobs.fail("w", [failure(c)])
            for i, c in enumerate(claimed)
        ]
        duplicates = [queue.jobs.enqueue(request(k)) for k in keys for _ in range(4)]
        results = await bounded(
            asyncio.gather(*settles, *duplicates), "settles beside duplicate enqueues", 120
        )
    dupes: list[Any] = list(results[len(settles) :])
    assert all(
        r.id == first[r_key]
        for r, r_key in zip(dupes, [k for k in keys for _ in range(4)], strict=True)
    )
    assert all(not r.created for r in dupes)
    states = {r.state for r in dupes}
    assert states <= {JobState.RUNNING, JobState.SUCCEEDED, JobState.RETRYING}
    conflicts = [r.getMessage() for r in caplog.records if r.name == "herald.db"]
    assert conflicts == [], "no transaction was rolled back by a deadlock"


# -- a conflict is not an outage ---------------------------------------------------------


def test_a_deadlock_or_lock_timeout_is_not_reported_as_an_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from herald_worker.health import Health
    from herald_worker.metrics import Metrics
    from herald_worker.tracker import Tracker

    health = Health(Metrics(Tracker(10)))
    health.database_ok()
    with caplog.at_level(logging.WARNING, logger="herald.health"):
        health.database_error(psycopg.errors.DeadlockDetected("deadlock detected"))
        health.database_error(
            psycopg.errors.LockNotAvailable("canceling statement due to lock timeout")
        )
    assert health.database_up
    said = [r.getMessage() for r in caplog.records]
    assert not [m for m in said if "unreachable" in m]
    assert [getattr(r, "error", "") for r in caplog.records] == [
        "deadlock detected (DeadlockDetected)",
        "canceling statement due to lock timeout (LockNotAvailable)",
    ]
    health.database_error(psycopg.OperationalError("connection refused"))
    assert not health.database_up, "a lost connection is an outage"


async def test_a_transaction_rolled_back_by_a_deadlock_is_run_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    @db.retry_conflicts
    async def settle() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise psycopg.errors.DeadlockDetected("deadlock detected")
        return "settled"

    with caplog.at_level(logging.WARNING, logger="herald.db"):
        assert await settle() == "settled"
    assert calls == 3
    assert len(caplog.records) == 2 and "conflict" in caplog.records[0].getMessage()

    @db.retry_conflicts
    async def never() -> None:
        raise psycopg.errors.SerializationFailure("could not serialize access")

    with pytest.raises(psycopg.errors.SerializationFailure):
        await never()
