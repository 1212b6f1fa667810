"""The OpenAPI document, fuzzed: schemathesis (test extra) loads /openapi.json from a real
worker on 127.0.0.1 and runs its phases — examples, coverage, fuzzing and the stateful
phase that follows links from one call to the next (submit a job, look it up, cancel it,
replay its dead letter) — with every check but one, and must find nothing: no 5xx, every
status code documented, every answer as the document describes it, what the document
allows accepted and what it forbids refused, the bearer token enforced.

The check left out is use_after_free: DELETE /v1/jobs/{id} cancels a job, which stays
visible (state dead, deadReason cancelled) on purpose, where the check expects a 404.

The run is bounded (a few examples per operation) and derandomized (schemathesis'
deterministic mode: no seed, no example database), so it repeats exactly. Rules a
schema cannot state (a time window's order) are given to the generator by
``schemathesis_hooks.py``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from herald_queue.settings import QueueSettings
from herald_tools.receiver import Answer, Receiver
from tests.integration.worker.harness import (
    FAST_RETRY,
    NO_BREAKER,
    TrackingReceiver,
    target_doc,
    worker,
    write_manifests,
)

TOKEN = "fuzz-token"
MAX_EXAMPLES = 15
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_schemathesis_finds_nothing(db_url: str, tmp_path: Path) -> None:
    def refuse(receiver: Receiver, request: object, body: bytes) -> Answer:
        return Answer(400, body="no thanks")  # jobs of "reject" become dead letters

    retry = {"retry": {"maxAttempts": 2, **FAST_RETRY}, "circuitBreaker": NO_BREAKER}
    async with TrackingReceiver(refuse) as rx:
        manifests = write_manifests(
            tmp_path / "targets.yaml",
            [
                target_doc("hook", rx.url, paused=True, **retry),  # its jobs wait
                target_doc("reject", rx.url, **retry),
                target_doc("elsewhere", rx.url, namespace="team-b", paused=True, **retry),
            ],
        )
        async with worker(
            db_url,
            manifests,
            api_token=TOKEN,
            queue_settings=QueueSettings(max_payload_bytes=16 * 1024),
        ) as w:
            started = time.monotonic()
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "schemathesis.cli",
                "run",
                f"{w.base}/openapi.json",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--checks",
                "all",
                "--exclude-checks",
                "use_after_free",
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--generation-deterministic",  # implies no example database
                "--workers",
                "1",
                "--no-color",
                cwd=tmp_path,
                env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            try:
                out, _ = await asyncio.wait_for(process.communicate(), 150)
            except TimeoutError:
                process.kill()
                await process.wait()
                raise
            report = out.decode(errors="replace")
            elapsed = time.monotonic() - started
    assert process.returncode == 0, f"schemathesis found problems ({elapsed:.0f}s):\n{report}"
    assert "Stateful" in report and "API Links:" in report, "the stateful phase ran"
