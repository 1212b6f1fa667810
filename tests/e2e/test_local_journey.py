"""The local journey the README and ``herald demo`` lead to, as a user takes it: every step
a ``herald`` subprocess with a time bound (a hang fails naming the command), on the
embedded PostgreSQL exactly as a user gets it (HERALD_DATABASE_URL unset, a throwaway
HERALD_DATA_DIR) and on the suite's database server.

``herald demo`` (a test of its own); then ``herald receive`` and ``herald worker --targets
examples/local/``;
while the worker runs: ``herald enqueue`` (flags and JSON lines on stdin), ``stats`` and
``stats --watch``, ``jobs list|show|cancel``, ``dlq list|show|replay``, ``tracker
list|clear``, ``targets apply|list``, ``migrate``, a second worker; then every accepted job
is found delivered (signature verified) at the receiver, and everything stops.

The one liberty taken: examples/local/ names 127.0.0.1:9000, which another test on this
machine may hold, so the worker reads a copy of it whose only change is the receiver's port
(``herald receive --port 0``); the file itself is applied with ``herald targets apply``."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.commands import (
    EXAMPLES,
    Process,
    embedded_data_dir,
    env_for,
    http_get,
    ok,
    processes,
    run,
    start_receiver,
    start_worker,
)
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(600)

DELIVERY_TIMEOUT = 90.0
"""Seconds a job may take to reach the receiver (or the DLQ) on a loaded machine."""

REJECT_TARGET = """\
apiVersion: herald.dev/v1alpha1
kind: PublishingTarget
metadata:
  name: local-reject
spec:
  type: webhook
  url: http://127.0.0.1:{port}/reject
"""


def local_examples(folder: Path, port: int) -> Path:
    """examples/local/ copied, its receiver's port (9000) replaced by ``port``."""
    shutil.copytree(EXAMPLES / "local", folder)
    manifest = folder / "webhook-target.yaml"
    text = manifest.read_text()
    assert text.count("http://127.0.0.1:9000/hook") == 1, text
    manifest.write_text(text.replace("127.0.0.1:9000", f"127.0.0.1:{port}"))
    return folder


def delivered(receiver: Process, job_id: str) -> bool:
    """``herald receive`` printed a verified delivery of ``job_id``."""
    return (
        receiver.count("out", lambda line: line.startswith(job_id) and "signature ok" in line) > 0
    )


def api_state(base: str, job_id: str) -> str | None:
    status, body = http_get(f"{base}/v1/jobs/{job_id}")
    return body.get("state") if status == 200 and isinstance(body, dict) else None


async def journey(env: dict[str, str], tmp: Path, *, embedded: bool) -> None:
    timings: dict[str, float] = {}
    began = time.monotonic()
    with processes() as started:
        # 1. The receiver, the worker, and a receiver that rejects everything (400).
        receiver, port = start_receiver(started, env)
        rejecter, reject_port = start_receiver(
            started, env, "--path", "/reject", "--status", "400", "--secret", ""
        )
        targets = local_examples(tmp / "local", port)
        worker, base = await start_worker(started, env, "--targets", str(targets))
        timings["started"] = time.monotonic() - began

        # 2. Enqueue with flags, and JSON lines on stdin.
        one = ok(
            ["enqueue", "--target", "local-hook", "--payload", '{"hello": "world"}', "--json"],
            env,
        ).json()
        assert one["target"] == "default/local-hook" and not one["duplicate"], one
        plain = ok(["enqueue", "--target", "local-hook", "--payload", '{"n": 0}'], env)
        plain_id = plain.out.split()[0]
        lines = "".join(
            json.dumps({"target": "local-hook", "payload": {"n": i}, "priority": p}) + "\n"
            for i, p in enumerate(["high", "medium", "low"], start=1)
        )
        batch = ok(["enqueue", "--json"], env, input=lines).json()
        assert len(batch) == 3 and all(not b["duplicate"] for b in batch), batch
        accepted = [one["id"], plain_id, *(b["id"] for b in batch)]
        assert len(set(accepted)) == 5
        await wait_until(
            lambda: all(delivered(receiver, i) for i in accepted),
            interval=0.1,
            timeout=DELIVERY_TIMEOUT,
            what="the five jobs delivered to `herald receive`",
        )

        # 3. Stats, once and watched (stopped with Ctrl-C after two refreshes). A receiver
        # answers before the worker settles its job, so the count may lag the deliveries.
        def settled() -> dict[str, Any] | None:
            stats: dict[str, Any] = ok(["stats", "--json"], env).json()
            return stats if stats["succeeded"] >= len(accepted) else None

        await wait_until(settled, interval=0.1, timeout=60, what="`herald stats` counting five")
        assert ok(["stats"], env).out.strip()
        watch = Process(["stats", "--watch", "0.2", "--json"], env)
        started.append(watch)
        await wait_until(
            lambda: watch.count("out", lambda s: s.startswith("{")) >= 2,
            interval=0.1,
            timeout=60,
            what="`herald stats --watch` printing twice",
        )
        assert watch.stop(timeout=30, sig=signal.SIGINT) in (0, 130)
        for line in [s for s in watch.out if s.startswith("{")][:2]:
            assert json.loads(line)["succeeded"] >= len(accepted)

        # 4. Jobs: list, show (the id round trip), cancel a job that waits for its runAt.
        listed = ok(["jobs", "list", "--json", "--target", "local-hook"], env).json()
        assert set(accepted) <= {j["id"] for j in listed["items"]}
        shown = ok(["jobs", "show", one["id"], "--json"], env).json()
        assert (shown["id"], shown["state"], shown["payload"]) == (
            one["id"],
            "succeeded",
            {"hello": "world"},
        )
        later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
        waiting = ok(
            ["enqueue", "--target", "local-hook", "--payload", "{}", "--run-at", later, "--json"],
            env,
        ).json()
        assert waiting["state"] == "queued", waiting
        cancel = ok(["jobs", "cancel", waiting["id"]], env)
        assert waiting["id"] in cancel.out
        assert ok(["jobs", "show", waiting["id"], "--json"], env).json()["state"] == "dead"

        # 5. A dead letter: a target whose receiver answers 400 (applied while the worker
        # runs); listed, shown, replayed, and rejected a second time.
        (tmp / "reject.yaml").write_text(REJECT_TARGET.format(port=reject_port))
        applied = ok(["targets", "apply", str(tmp / "reject.yaml"), "--json"], env).json()
        assert applied == [{"target": "default/local-reject", "created": True}], applied
        doomed = ok(
            ["enqueue", "--target", "local-reject", "--payload", '{"reject": true}', "--json"],
            env,
        ).json()
        await wait_until(
            lambda: api_state(base, doomed["id"]) == "dead",
            interval=0.1,
            timeout=DELIVERY_TIMEOUT,
            what="the rejected job dead",
        )
        letters = ok(["dlq", "list", "--json"], env).json()["items"]
        by_job = {d["jobId"]: d for d in letters}
        assert {doomed["id"], waiting["id"]} <= set(by_job), letters
        assert by_job[doomed["id"]]["httpStatus"] == 400
        assert by_job[waiting["id"]]["reason"] == "cancelled"
        letter = by_job[doomed["id"]]["id"]
        detail = ok(["dlq", "show", letter, "--json"], env).json()
        assert (detail["jobId"], detail["payload"]) == (doomed["id"], {"reject": True})
        replay = ok(["dlq", "replay", letter, "--json"], env).json()
        assert (replay["replayed"], replay["jobIds"]) == (1, [doomed["id"]]), replay
        await wait_until(
            lambda: rejecter.count("out", lambda s: s.startswith(doomed["id"])) == 2,
            interval=0.1,
            timeout=DELIVERY_TIMEOUT,
            what="the replayed job sent to the rejecting receiver again",
        )
        await wait_until(
            lambda: api_state(base, doomed["id"]) == "dead",
            interval=0.1,
            timeout=DELIVERY_TIMEOUT,
            what="the replayed job dead again",
        )

        # 6. The worker's tracker, through its API.
        tracked = ok(["tracker", "list", "--worker", base, "--json"], env).json()
        assert set(accepted) <= {j["id"] for j in tracked["items"]}, tracked
        assert ok(["tracker", "clear", "--worker", base], env).out.strip()
        assert ok(["tracker", "list", "--worker", base, "--json"], env).json()["items"] == []

        # 7. Targets: the example itself applied (it only changes the URL), then the copy
        # the receiver answers on again; listed.
        example = ok(["targets", "apply", str(EXAMPLES / "local"), "--json"], env).json()
        assert example == [{"target": "default/local-hook", "created": False}], example
        ok(["targets", "apply", str(targets)], env)
        names = {t["name"] for t in ok(["targets", "list", "--json"], env).json()}
        assert {"local-hook", "local-reject"} <= names, names

        # 8. `herald migrate` beside the running worker: up to date, promptly.
        assert ok(["migrate", "--json"], env).json()["applied"] == []

        # 9. A second worker, then jobs for both; the second stopped on its own.
        second, second_base = await start_worker(started, env, "--targets", str(targets))
        more = ok(["enqueue", "--json"], env, input=lines + lines).json()
        accepted += [m["id"] for m in more]
        await wait_until(
            lambda: all(delivered(receiver, i) for i in accepted),
            interval=0.1,
            timeout=DELIVERY_TIMEOUT,
            what="every accepted job delivered to `herald receive`",
        )
        assert http_get(f"{second_base}/healthz")[0] == 200
        assert second.stop() == 0, second.tail()
        timings["journey"] = time.monotonic() - began

        # 10. Everything delivered once, signed, nothing to the wrong place; all stopped.
        # The last deliveries may still be settling (a receiver answers first).
        def drained() -> dict[str, Any] | None:
            stats: dict[str, Any] = ok(["stats", "--json"], env).json()
            return stats if stats["queued"] == stats["running"] == stats["retrying"] == 0 else None

        await wait_until(drained, interval=0.2, timeout=60, what="`herald stats`: nothing left")
        assert worker.stop() == 0, worker.tail()
        assert receiver.stop() == 0 and rejecter.stop() == 0
        ids = [s.split()[0] for s in receiver.out if "signature" in s]
        assert sorted(ids) == sorted(accepted), receiver.out
        assert all("signature ok" in s for s in receiver.out if s.split()[0] in ids)
        assert "Traceback" not in "\n".join(worker.err + second.err)

    if embedded:
        assert ok(["db", "stop"], env).out.strip() == "stopped"
        # stopped means stopped: the next command says so, and does not start it
        assert "stopped" in ok(["db", "status"], env).out
    print(f"journey timings (s, cumulative): {timings}")


@pytest.mark.slow
def test_the_demo_leads_to_the_local_journey_and_cleans_up_after_itself() -> None:
    """``herald demo`` with its quick option (the default 3,000 jobs take 25 s or more): it
    ends in success, names the next step (examples/local/), and leaves no PostgreSQL
    running in the user's HERALD_DATA_DIR (its own is private and stopped)."""
    with embedded_data_dir() as data_dir:
        env = env_for(None, data_dir)
        demo = ok(["demo", "--jobs", "100"], env, timeout=240)
        assert "examples/local" in demo.out, demo.out
        assert "stopped" in ok(["db", "status"], env).out


@pytest.mark.slow
async def test_local_journey_on_the_embedded_postgresql() -> None:
    with embedded_data_dir() as data_dir:
        await journey(env_for(None, data_dir), data_dir, embedded=True)


@pytest.mark.slow
async def test_local_journey_on_a_database_server(db_url: str, tmp_path: Path) -> None:
    await journey(env_for(db_url, None), tmp_path, embedded=False)


def test_a_command_that_does_not_return_fails_naming_it() -> None:
    """The bound every step above has: a command still running at its timeout is killed
    (its whole process group) and the test fails naming it."""
    env = env_for(None, None)
    began = time.monotonic()
    with pytest.raises(
        AssertionError, match=r"`herald receive --port 0` did not return within 3 s"
    ):
        run(["receive", "--port", "0"], env, timeout=3)
    assert time.monotonic() - began < 60  # killed, not waited for
