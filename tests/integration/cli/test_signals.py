"""``herald`` as a container's main process (PID 1) stops on SIGTERM.

The kernel drops a signal sent to a PID namespace's init unless the process handles it, so a
command that relies on SIGTERM's default action never ends in a Pod: a `herald migrate` in
the chart's hook Job waiting for its lock ignored `kubectl delete` and the Job's deadline
until the kubelet's SIGKILL. Each command here runs as PID 1 of a new PID namespace
(``unshare --pid --fork``, root or an unprivileged user namespace) and gets SIGTERM from
outside, as the container runtime sends it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
import pytest

from herald_queue.locks import SessionLock
from tests.helpers import stop_process, wait_until
from tests.integration.cli.cli import cli_env


def _unshare() -> list[str]:
    tool = shutil.which("unshare")
    if tool is None:
        pytest.skip("unshare (util-linux) is not installed: it makes the PID namespace")
    if os.geteuid() == 0:
        return [tool, "--pid", "--fork", "--kill-child"]
    return [tool, "--user", "--map-root-user", "--pid", "--fork", "--kill-child"]


def _init_of(unshare_pid: int) -> int | None:
    """The PID (in our namespace) of the process unshare forked as its namespace's init."""
    try:
        children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()
    except OSError:
        return None
    if not children:
        return None
    pid = int(children[0])
    status = Path(f"/proc/{pid}/status").read_text()
    nspid = next(line for line in status.splitlines() if line.startswith("NSpid:"))
    assert nspid.split()[-1] == "1", f"not PID 1 in its namespace: {nspid}"
    return pid


@asynccontextmanager
async def as_pid_1(
    args: list[str], env: dict[str, str]
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """``herald ARGS`` as PID 1 of a new PID namespace: (the unshare process, herald's PID)."""
    process = await asyncio.create_subprocess_exec(
        *_unshare(),
        sys.executable,
        "-m",
        "herald_tools.cli.main",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        try:
            pid = await wait_until(
                lambda: _init_of(process.pid), timeout=30, what="herald started as PID 1"
            )
        except AssertionError:
            if process.returncode is not None or not await _alive(process):
                _, err = await process.communicate()
                pytest.skip(f"cannot make a PID namespace here: {err.decode().strip()}")
            raise
        yield process, pid
    finally:
        await stop_process(process, f"herald {' '.join(args)}", 30)


async def _alive(process: asyncio.subprocess.Process) -> bool:
    await asyncio.sleep(0)
    return process.returncode is None


async def stopped_by_sigterm(
    process: asyncio.subprocess.Process, pid: int, what: str
) -> tuple[int, str]:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        _, err = await asyncio.wait_for(process.communicate(), 30)
        raise AssertionError(f"{what} ended before SIGTERM: {err.decode()}") from None
    try:
        _, err = await asyncio.wait_for(process.communicate(), 60)
    except TimeoutError:
        raise AssertionError(f"{what} as PID 1 ignored SIGTERM for 60 s") from None
    return process.returncode or 0, err.decode()


async def connected(url: str, *others: int) -> bool:
    """Another session than ours and ``others`` is connected to the database (herald's)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND NOT pid = ANY(%s)",
            [list(others)],
        )
        row = await cur.fetchone()
        return bool(row and row[0])


@pytest.mark.slow
async def test_a_migrate_waiting_for_its_lock_stops_on_sigterm_as_pid_1(
    fresh_db: Callable[[str | None], Awaitable[str]],
) -> None:
    db_url = await fresh_db(None)  # empty: there is something to migrate
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as holder:
        await holder.execute("SELECT pg_advisory_lock(%s)", [int(SessionLock.MIGRATION)])
        env = cli_env(db_url, HERALD_MIGRATION_WAIT="600s")
        async with as_pid_1(["migrate"], env) as (process, pid):
            await wait_until(
                lambda: connected(db_url, holder.info.backend_pid),
                timeout=60,
                what="migrate connected (and waiting for the lock)",
            )
            code, err = await stopped_by_sigterm(process, pid, "herald migrate")
    assert code == 143, err
    assert err.strip().splitlines()[-1] == "herald: stopped by SIGTERM", err
    assert "Traceback" not in err


async def _first_line(process: asyncio.subprocess.Process) -> bytes:
    assert process.stdout is not None
    return await asyncio.wait_for(process.stdout.readline(), 60)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "expected", "started"),
    [
        # A command: stopped (143), like a shell's `kill`.
        (["stats", "--watch", "--json"], 143, _first_line),
    ],
)
async def test_a_command_stops_on_sigterm_as_pid_1(
    db_url: str,
    args: list[str],
    expected: int,
    started: Callable[[asyncio.subprocess.Process], object],
) -> None:
    async with as_pid_1(args, cli_env(db_url)) as (process, pid):
        await started(process)  # type: ignore[misc]
        code, err = await stopped_by_sigterm(process, pid, f"herald {' '.join(args)}")
    assert code == expected, err
    assert "Traceback" not in err


@pytest.mark.slow
async def test_the_worker_drains_and_exits_0_on_sigterm_as_pid_1(db_url: str) -> None:
    env = cli_env(db_url, HERALD_HTTP_PORT="0", HERALD_LOG_FORMAT="json")
    async with as_pid_1(["worker"], env) as (process, pid):
        assert process.stderr is not None

        async def started() -> bool:
            assert process.stderr is not None
            line = await asyncio.wait_for(process.stderr.readline(), 60)
            assert line, "the worker exited before it started"
            return b"worker started" in line

        await wait_until(started, timeout=60, what="the worker started")
        code, err = await stopped_by_sigterm(process, pid, "herald worker")
    assert code == 0, err
    assert '"stopped"' in err


# A command whose cancellation is lost (as Python 3.11's asyncio.wait_for loses one that
# lands as its inner wait completes): it goes on after the first cancel.
STUBBORN = """
import asyncio, sys
from herald_tools.cli import main

async def stubborn_loop():
    print("running", flush=True)  # the handlers are installed: _until_signalled runs us
    while True:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            pass

def run():
    with asyncio.Runner() as runner:
        return runner.run(main._until_signalled(stubborn_loop(), []))

try:
    sys.exit(run())
except KeyboardInterrupt:
    sys.exit(130)
"""


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_a_command_that_does_not_stop_exits_within_a_bound_saying_where(
    sig: signal.Signals, status: int
) -> None:
    """Nothing hangs after Ctrl-C or SIGTERM: a command still running STOP_BOUND seconds
    after the signal exits at once with its status, naming the coroutine it was in."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        STUBBORN,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert await asyncio.wait_for(process.stdout.readline(), 60) == b"running\n"
        process.send_signal(sig)
        _, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == status, err.decode()
    line = err.decode().strip()
    assert line.startswith(f"herald: {sig.name}: still stopping 10 s after it;"), line
    assert "waiting in sleep (tasks.py:" in line and "← stubborn_loop (<string>:" in line, line
