"""``herald migrate`` (the chart's pre-install and pre-upgrade hook) beside running workers of
the same database, as in every ``helm upgrade``: it completes within a bound, and the
workers deliver every job they accepted, during and after it. A migration that cannot get
its lock says so and who holds it, within HERALD_MIGRATION_WAIT. And every command on the
embedded database returns while a worker runs on it (they once all waited forever for the
lock the worker's listener held: the migration lock and the waker's shared a key).

Each command is a subprocess with a time bound (tests/e2e/commands.py)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from herald_queue import migrate
from herald_queue.locks import SessionLock
from tests.e2e.commands import (
    ROOT,
    Process,
    Result,
    embedded_data_dir,
    env_for,
    http_post,
    ok,
    processes,
    run,
    start_receiver,
    start_worker,
)
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(600)

FreshDb = Callable[..., Any]
DELIVERY_TIMEOUT = 120.0

TARGET = """\
apiVersion: herald.dev/v1alpha1
kind: PublishingTarget
metadata:
  name: steady
spec:
  type: webhook
  url: http://127.0.0.1:{port}/hook
  retry: {{maxAttempts: 20, initialBackoffSeconds: 0.2, maxBackoffSeconds: 2}}
"""

NEXT_MIGRATION = """\
-- The kinds of statement Herald's migrations make on its busiest tables: a column on the
-- jobs, a column with a default on the targets, an index on the jobs, a table beside them.
ALTER TABLE herald.jobs ADD COLUMN upgrade_probe text;
ALTER TABLE herald.targets ADD COLUMN upgrade_probe bigint NOT NULL DEFAULT 0;
CREATE INDEX jobs_upgrade_probe ON herald.jobs (upgrade_probe) WHERE upgrade_probe IS NOT NULL;
CREATE TABLE herald.upgrade_probes (
    target_id integer NOT NULL REFERENCES herald.targets (id) ON DELETE CASCADE,
    n bigint NOT NULL DEFAULT 0
);
"""

MIGRATE_WITH_NEXT_RELEASE = f"""\
import sys
from herald_queue import sql
from herald_tools.cli.main import main

released = sql.migrations
sql.migrations = lambda: released() + [
    (released()[-1][0] + 1, "upgrade_probe", {NEXT_MIGRATION!r})
]
sys.exit(main(["migrate", "--json"]))
"""
"""``herald migrate`` of the next release: this one's migrations and one more."""


def migrate_next_release(env: dict[str, str], timeout: float) -> Result:
    """Run the next release's ``herald migrate`` (a subprocess, bounded)."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", MIGRATE_WITH_NEXT_RELEASE],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"the next release's `herald migrate` did not return within {timeout:g} s"
        ) from None
    return Result(("migrate", "--json"), done.returncode, done.stdout, done.stderr)


class Producer:
    """A client submitting jobs over HTTP to the workers in turn, a few at a time, until
    stopped; it keeps the id of every job a worker accepted."""

    def __init__(self, bases: list[str]) -> None:
        self.bases = bases
        self.accepted: list[str] = []
        self.refused: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            base = self.bases[n % len(self.bases)]
            body = [{"target": "steady", "payload": {"n": n + i}} for i in range(3)]
            status, answer = http_post(f"{base}/v1/jobs", body, timeout=30)
            if status in (200, 201):
                self.accepted += [j["id"] for j in answer["jobs"]]
            else:
                self.refused.append((status, str(answer)[:300]))
            n += 3
            self._stop.wait(0.05)

    def __enter__(self) -> Producer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), "the producer did not stop within 60 s"


def delivered_ids(receiver: Process) -> set[str]:
    return {line.split()[0] for line in list(receiver.out) if "-> 200" in line}


@pytest.mark.slow
@pytest.mark.parametrize("schema", ["older", "up-to-date"])
async def test_migrate_completes_while_two_workers_deliver(
    db_url: str, tmp_path: Path, schema: str
) -> None:
    """Two workers of one database deliver what a client submits to both over HTTP while
    ``herald migrate`` runs: every accepted job is delivered, none lost, during and after.

    ``older``: the schema is one migration behind the migrating Herald, as in ``helm
    upgrade`` (the previous release's workers run while the new release's hook migrates).
    The workers are this release's, so the migration is the next one's: this release's
    migrations and one more, of the kinds Herald's migrations make on its busiest tables.
    ``up-to-date``: the hook of a ``helm upgrade`` that brings no migration."""
    env = env_for(db_url, None)
    (tmp_path / "target.yaml").write_text("")
    with processes() as started:
        receiver, port = start_receiver(started, env, "--secret", "")
        (tmp_path / "target.yaml").write_text(TARGET.format(port=port))
        bases = []
        workers = []
        for _ in range(2):
            worker, base = await start_worker(
                started, env, "--targets", str(tmp_path / "target.yaml")
            )
            workers.append(worker)
            bases.append(base)
        with Producer(bases) as producer:
            await wait_until(
                lambda: len(delivered_ids(receiver)) >= 30,
                interval=0.1,
                timeout=DELIVERY_TIMEOUT,
                what="30 deliveries before the migration",
            )
            if schema == "older":
                result = migrate_next_release(env, timeout=120)
            else:
                result = run(["migrate", "--json"], env, timeout=120)
            assert result.code == 0, result.err
            report = result.json()
            accepted_at_migration = len(producer.accepted)
            delivered_at_migration = len(delivered_ids(receiver))
            latest = migrate.latest_version()
            if schema == "older":
                assert (report["before"], report["after"]) == (latest, latest + 1), report
            else:
                assert report["applied"] == [], report
            # The workers go on accepting and delivering after it.
            await wait_until(
                lambda: (
                    len(delivered_ids(receiver)) >= delivered_at_migration + 30
                    and len(producer.accepted) >= accepted_at_migration + 30
                ),
                interval=0.1,
                timeout=DELIVERY_TIMEOUT,
                what="30 more jobs accepted and delivered after the migration",
            )
        accepted = set(producer.accepted)
        await wait_until(
            lambda: accepted <= delivered_ids(receiver),
            interval=0.1,
            timeout=DELIVERY_TIMEOUT,
            what=f"all {len(accepted)} accepted jobs delivered",
        )
        assert all(w.process.poll() is None for w in workers), "a worker stopped"
        for worker in workers:
            assert worker.stop() == 0, worker.tail()
        assert receiver.stop() == 0
        # Refusals are said (a 503 asks the client to try again), never a 500.
        assert not [r for r in producer.refused if r[0] not in (429, 503)], producer.refused
        for worker in workers:
            errors = [s for s in worker.err if json.loads(s).get("level") in ("error", "critical")]
            assert not errors, errors
        print(
            f"{schema}: {len(accepted)} jobs accepted and delivered, "
            f"{len(producer.refused)} submissions refused: {producer.refused[:3]}"
        )


@contextlib.contextmanager
def migration_lock_held(url: str, application_name: str) -> Iterator[None]:
    """Another session holding the migration lock (as a stuck ``herald migrate`` would)."""
    with psycopg.connect(url, autocommit=True, application_name=application_name) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", [int(SessionLock.MIGRATION)])
        yield


async def test_migrate_gives_up_waiting_for_the_migration_lock_naming_its_holder(
    fresh_db: FreshDb,
) -> None:
    url = await fresh_db()  # an empty database: there is something to migrate
    env = env_for(url, None, HERALD_MIGRATION_WAIT="3s")
    with migration_lock_held(url, "journey-lock-holder"):
        result = run(["migrate"], env, timeout=60)
    assert result.code == 1, result
    assert "Traceback" not in result.err
    final = [s for s in result.err.splitlines() if s.startswith("herald: error:")]
    assert len(final) == 1, result.err
    assert "migration lock" in final[0] and "journey-lock-holder" in final[0], final
    progress = [s for s in result.err.splitlines() if s not in final and s.strip()]
    assert any("migration lock" in s and "journey-lock-holder" in s for s in progress), (
        f"no progress line while it waited: {result.err!r}"
    )
    # Nothing was applied, and the holder going away lets the next run through.
    assert ok(["migrate", "--json"], env_for(url, None)).json()["before"] == 0


@pytest.mark.slow
async def test_every_command_returns_beside_a_worker_on_the_embedded_database(
    tmp_path: Path,
) -> None:
    with embedded_data_dir() as data_dir, processes() as started:
        env = env_for(None, data_dir)
        receiver, port = start_receiver(started, env, "--secret", "")
        target = tmp_path / "target.yaml"
        target.write_text(TARGET.format(port=port))
        worker, _ = await start_worker(started, env, "--targets", str(target))
        job = ok(
            ["enqueue", "--target", "steady", "--payload", '{"n": 1}', "--json"],
            env,
            timeout=60,
        ).json()
        later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
        for args in (
            ["stats", "--json"],
            ["jobs", "list", "--json"],
            ["jobs", "show", job["id"], "--json"],
            ["dlq", "list", "--json"],
            ["targets", "apply", str(target)],
            ["targets", "list"],
            ["enqueue", "--target", "steady", "--payload", "{}", "--run-at", later],
            ["migrate"],
        ):
            ok(args, env, timeout=60)
        await wait_until(
            lambda: job["id"] in delivered_ids(receiver),
            interval=0.1,
            timeout=DELIVERY_TIMEOUT,
            what="the job delivered",
        )
        assert worker.stop() == 0, worker.tail()
        assert receiver.stop() == 0


async def test_a_killed_migrate_leaves_no_session_on_the_server(fresh_db: FreshDb) -> None:
    """A user gives up on a waiting `herald migrate` (Ctrl-C, kill -9): nothing of it stays
    on the server waiting for the lock (it tries the lock, it never waits on the server)."""
    url = await fresh_db()
    env = env_for(url, None, HERALD_MIGRATION_WAIT="5m")
    with migration_lock_held(url, "journey-lock-holder"), processes() as started:
        waiting = Process(["migrate"], env)
        started.append(waiting)
        waiting.wait_for_line(
            "err", lambda s: "migration lock" in s, timeout=60, what="the waiting line"
        )
        with psycopg.connect(url, autocommit=True) as probe:
            sessions = (
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name LIKE 'herald migrate%'"
            )
            assert probe.execute(sessions).fetchone() == (1,)
            waiting.process.kill()
            waiting.process.wait(timeout=30)
            await wait_until(
                lambda: probe.execute(sessions).fetchone() == (0,),
                interval=0.1,
                timeout=30,
                what="the killed migrate's session to leave the server",
            )
