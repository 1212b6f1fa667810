"""``herald`` as a user runs it, for the journey tests: each command a subprocess with a
time bound, each long-running process (``herald receive``, ``herald worker``) started in
its own process group, waited on for readiness by polling its HTTP endpoint, and stopped
with SIGTERM (then SIGKILL, and a failure, if it does not stop).

A command or a process that hangs fails the test with a message naming it: nothing here
waits without a bound."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.helpers import LOCAL_EGRESS_ENV, ROOT, wait_until
from tests.integration.cli.cli import Run as Result

EXAMPLES = ROOT / "examples"

COMMAND_TIMEOUT = 90.0
"""Seconds a command may take before it counts as hung (generous: a loaded 2-core
machine, and the first command on the embedded database starts PostgreSQL)."""
START_TIMEOUT = 90.0
"""Seconds a process may take to answer on its HTTP endpoint."""
STOP_TIMEOUT = 45.0
"""Seconds a process may take to exit after SIGTERM."""


def shown(args: Sequence[str]) -> str:
    return "herald " + " ".join(args)


def env_for(url: str | None, data_dir: Path | None, **extra: str) -> dict[str, str]:
    """The environment of a user's shell: no HERALD_* variable of the tests' own, the
    database in HERALD_DATABASE_URL or (``url`` None) the embedded one under
    ``data_dir``, and loopback allowed for the local receiver."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env |= LOCAL_EGRESS_ENV
    if url is not None:
        env["HERALD_DATABASE_URL"] = url
    if data_dir is not None:
        env["HERALD_DATA_DIR"] = str(data_dir)
    return env | extra


def _argv(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "herald_tools.cli.main", *args]


def _kill_group(process: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def run(
    args: Sequence[str],
    env: dict[str, str],
    *,
    timeout: float = COMMAND_TIMEOUT,
    input: str | None = None,
) -> Result:
    """``herald ARGS`` to completion within ``timeout`` seconds; past that, its process
    group is killed and the test fails naming the command."""
    process = subprocess.Popen(
        _argv(args),
        env=env,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(input or "", timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        out, err = process.communicate(timeout=30)
        raise AssertionError(
            f"`{shown(args)}` did not return within {timeout:g} s (killed); its stderr "
            f"ended with: {err[-1500:]!r}"
        ) from None
    except BaseException:
        _kill_group(process)
        raise
    return Result(tuple(args), process.returncode, out, err)


def ok(args: Sequence[str], env: dict[str, str], **kw: Any) -> Result:
    """``herald ARGS``, which must exit 0 without a traceback."""
    result = run(args, env, **kw)
    assert result.code == 0, f"`{shown(args)}` exited {result.code}: {result.err[-2000:]}"
    assert "Traceback" not in result.err, result.err
    return result


class Process:
    """A long-running ``herald`` process; its output is read as it comes (by threads, so
    no pipe ever fills) and kept, line by line."""

    def __init__(self, args: Sequence[str], env: dict[str, str]) -> None:
        self.args = tuple(args)
        self.out: list[str] = []
        self.err: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            _argv(args),
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err))
        ]
        for reader in self._readers:
            reader.start()

    @property
    def name(self) -> str:
        return f"`{shown(self.args)}` (pid {self.process.pid})"

    def _read(self, stream: Any, lines: list[str]) -> None:
        for line in stream:
            with self._changed:
                lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def tail(self) -> str:
        return "\n".join(self.err[-30:])

    def wait_for_line(
        self, stream: str, match: Callable[[str], bool], *, timeout: float, what: str
    ) -> str:
        """The first line of ``stream`` ("out" or "err") that ``match``es, within
        ``timeout`` seconds; fails if the process ends first."""
        lines = self.out if stream == "out" else self.err
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in lines:
                    if match(line):
                        return line
                if self.process.poll() is not None and not any(r.is_alive() for r in self._readers):
                    raise AssertionError(
                        f"{self.name} exited {self.process.returncode} before {what}:\n"
                        f"{self.tail()}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{self.name}: {what} not seen within {timeout:g} s:\n{self.tail()}"
                    )
                self._changed.wait(min(left, 1.0))

    def count(self, stream: str, match: Callable[[str], bool]) -> int:
        with self._changed:
            return sum(1 for line in (self.out if stream == "out" else self.err) if match(line))

    def send(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)

    def stop(self, timeout: float = STOP_TIMEOUT, sig: int = signal.SIGTERM) -> int:
        """Stop it with ``sig`` (SIGTERM) and wait at most ``timeout`` seconds; a process
        that does not stop is killed and fails the test."""
        if self.process.poll() is None:
            self.send(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_group(self.process)
            self.process.wait(30)
            raise AssertionError(
                f"{self.name} did not stop within {timeout:g} s of "
                f"{signal.Signals(sig).name} (killed):\n{self.tail()}"
            ) from None
        self._close()
        return code

    def kill(self) -> None:
        """For finalizers: whatever is left of it, gone."""
        if self.process.poll() is None:
            _kill_group(self.process)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(30)
        self._close()

    def _close(self) -> None:
        """Its output read to the end (a child that kept the pipe open is not waited for
        past 10 s), and the pipes closed."""
        for reader in self._readers:
            reader.join(10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None and not any(r.is_alive() for r in self._readers):
                stream.close()


@contextlib.contextmanager
def processes() -> Iterator[list[Process]]:
    """A list to start processes into; every one left running is killed on the way out
    (the test's own stops come first; this is for a test that failed half-way)."""
    started: list[Process] = []
    try:
        yield started
    finally:
        for p in started:
            p.kill()


def http_get(url: str, *, timeout: float = 10.0) -> tuple[int, Any]:
    """(status, JSON body or text) of GET ``url``; (0, reason) when it cannot connect."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - 127.0.0.1
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode("utf-8", "replace")


def http_post(url: str, body: Any, *, timeout: float = 30.0) -> tuple[int, Any]:
    request = urllib.request.Request(  # noqa: S310 - 127.0.0.1
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


_LISTENING = re.compile(r"listening on http://[\d.]+:(\d+)")


def start_receiver(
    started: list[Process], env: dict[str, str], *extra: str, timeout: float = START_TIMEOUT
) -> tuple[Process, int]:
    """``herald receive --port 0 EXTRA``: the process and the port it listens on."""
    receiver = Process(["receive", "--port", "0", *extra], env)
    started.append(receiver)
    line = receiver.wait_for_line(
        "out", lambda s: bool(_LISTENING.search(s)), timeout=timeout, what="its listening line"
    )
    match = _LISTENING.search(line)
    assert match is not None
    return receiver, int(match[1])


def _listen_port(line: str) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("action") == "listen" and "port" in record


async def start_worker(
    started: list[Process], env: dict[str, str], *args: str, timeout: float = START_TIMEOUT
) -> tuple[Process, str]:
    """``herald worker ARGS`` on any free port: the process and its API's base URL, once
    /readyz answers 200."""
    worker = Process(["worker", *args], env | {"HERALD_HTTP_PORT": "0"})
    started.append(worker)
    line = worker.wait_for_line("err", _listen_port, timeout=timeout, what="its listen log line")
    base = f"http://127.0.0.1:{json.loads(line)['port']}"

    def ready() -> bool:
        if worker.process.poll() is not None:
            raise AssertionError(
                f"{worker.name} exited {worker.process.returncode}:\n{worker.tail()}"
            )
        return http_get(f"{base}/readyz", timeout=5)[0] == 200

    await wait_until(
        ready, timeout=timeout, what=f"{worker.name}: /readyz answering 200", interval=0.2
    )
    return worker, base


@contextlib.contextmanager
def embedded_data_dir() -> Iterator[Path]:
    """A throwaway HERALD_DATA_DIR (world-readable: as root, the embedded PostgreSQL runs
    as its own user), its server stopped with ``herald db stop`` and removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="herald-journey-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        try:
            run(["db", "stop"], env_for(None, path), timeout=60)
        finally:
            shutil.rmtree(path, ignore_errors=True)
