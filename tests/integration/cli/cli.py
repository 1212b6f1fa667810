"""Running ``herald`` as a user does: a subprocess with the database in
HERALD_DATABASE_URL and no other HERALD_* variable from the environment of the tests."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import sys
import uuid
from collections.abc import Sequence
from typing import Any

from herald_core.states import JobState
from herald_queue.queue import Queue
from tests.helpers import LOCAL_EGRESS_ENV, ROOT, claim_all, failure, job, register, sql_value

EXAMPLES = ROOT / "examples"
ONE_SHOT: dict[str, Any] = {
    "retry": {"maxAttempts": 1},
    "circuitBreaker": {"failureThreshold": 1000},
}


@dataclasses.dataclass(frozen=True)
class Run:
    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def error(self) -> str:
        """The one line on stderr of a failed command (asserts there is exactly one)."""
        assert self.code != 0, f"herald {' '.join(self.args)} succeeded: {self.out!r}"
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, f"herald {' '.join(self.args)}: not one line: {self.err!r}"
        assert lines[0].startswith("herald: error: "), lines[0]
        assert "Traceback" not in self.err
        return lines[0]


def cli_env(url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env |= LOCAL_EGRESS_ENV  # the tests' targets and receivers are on 127.0.0.1
    if url is not None:
        env["HERALD_DATABASE_URL"] = url
    return env | extra


async def herald(
    *args: str,
    url: str | None,
    stdin: str | bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Run:
    """``herald ARGS`` to completion; stdin is empty unless given."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "herald_tools.cli.main",
        *args,
        env=cli_env(url) | (env or {}),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    data = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
    try:
        out, err = await asyncio.wait_for(process.communicate(data), timeout)
    except TimeoutError:
        process.kill()
        await asyncio.wait_for(process.wait(), 30)
        raise AssertionError(
            f"herald {' '.join(args)} did not finish within {timeout:g}s (killed)"
        ) from None
    assert process.returncode is not None
    return Run(tuple(args), process.returncode, out.decode(), err.decode())


async def ok(*args: str, url: str | None, **kw: Any) -> Run:
    """``herald ARGS``, which must succeed."""
    run = await herald(*args, url=url, **kw)
    assert run.code == 0, f"herald {' '.join(args)} exited {run.code}: {run.err}"
    assert "Traceback" not in run.err, run.err
    return run


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def json_lines(bodies: Sequence[Any]) -> str:
    return "".join(json.dumps(b) + "\n" for b in bodies)


async def count_jobs(queue: Queue, where: str = "true", params: Any = None) -> int:
    return int(await sql_value(queue, f"SELECT count(*) FROM herald.jobs WHERE {where}", params))


async def bury(
    queue: Queue, target: str, n: int, error_class: str = "permanent"
) -> list[uuid.UUID]:
    """``n`` dead letters of ``target`` (registered here, one attempt), made through the
    library: enqueued, claimed and failed. Returns their job ids in enqueue order."""
    await register(queue, target, **ONE_SHOT)
    results = await queue.jobs.enqueue_many([job(target, {"i": i}) for i in range(n)])
    ids = [r.id for r in results]
    claimed = {j.id: j for j in await claim_all(queue)}
    outcomes = await queue.jobs.fail(
        "w",
        [failure(claimed[i], error_class, message=f"failure {k}") for k, i in enumerate(ids)],
    )
    assert {o.state for o in outcomes} == {JobState.DEAD}
    return ids
