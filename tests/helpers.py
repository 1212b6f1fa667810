"""Small helpers shared by the test suites."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

from herald_core.settings import HeraldSettings
from herald_core.states import Priority
from herald_delivery.settings import EgressSettings
from herald_model.submission import JobRequest, encode_payload
from herald_model.target_spec import parse_target
from herald_queue.queue import Queue

T = TypeVar("T")
S = TypeVar("S", bound=HeraldSettings)

ROOT = Path(__file__).resolve().parents[1]
"""The repository's root."""

# A retry policy whose next attempt is an hour away: a job failed under it stays waiting
# for the whole test however slow the machine is (a test that wants the retry moves its
# run_at with make_ready).
RETRY_LATER = {"initialBackoffSeconds": 3600, "maxBackoffSeconds": 3600, "jitterSeconds": 0}


# Every peer of the tests is on 127.0.0.1, which the egress policy refuses by default: the
# workers, the CLI and the operator the tests start allow loopback explicitly.
LOCAL_EGRESS = EgressSettings(allow_loopback=True)
LOCAL_EGRESS_ENV = {"HERALD_EGRESS_ALLOW_LOOPBACK": "true"}


def settings_from(cls: type[S], env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> S:
    """``cls`` read from an environment holding exactly the HERALD_ variables of ``env``,
    the way a process reads it."""
    for name in list(os.environ):
        if name.upper().startswith("HERALD_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return cls.from_env()


def target_manifest(
    name: str = "hook",
    namespace: str = "default",
    *,
    url: str | None = "http://127.0.0.1:9/hook",
    **spec: Any,
) -> dict[str, Any]:
    """A PublishingTarget manifest (webhook unless ``type=`` says otherwise; no URL with
    ``url=None``)."""
    body: dict[str, Any] = {"type": "webhook"}
    if url is not None:
        body["url"] = url
    body.update(spec)
    return {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "PublishingTarget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


async def register(
    queue: Queue, name: str = "hook", namespace: str = "default", **spec: Any
) -> int:
    result = await queue.registry.apply(parse_target(target_manifest(name, namespace, **spec)))
    return result.id


def job(
    target: str = "hook", payload: Any = None, priority: Priority = Priority.MEDIUM, **kw: Any
) -> JobRequest:
    return JobRequest(
        target=target,
        payload_json=encode_payload({"n": 0} if payload is None else payload, max_bytes=1 << 20),
        priority=priority,
        **kw,
    )


async def wait_until(
    check: Callable[[], Awaitable[T] | T],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str | None = None,
) -> T:
    """Call ``check`` (sync or async) every ``interval`` seconds until it returns something
    truthy, and return that; after ``timeout`` seconds, fail naming ``what`` (the condition,
    in words; the check's name or source without it), how often it was checked and the
    last value it returned.

    The one polling helper of the suites: a test waits on a condition through it, never on
    a sleep. Sync code outside an event loop (a sync session fixture) runs it with
    ``asyncio.run(wait_until(...))``."""
    deadline = time.monotonic() + timeout
    checks = 0
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        checks += 1
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what or _described(check)} not met within {timeout:g} s "
                f"({checks} checks, {interval:g} s apart; last: {result!r})"
            )
        await asyncio.sleep(interval)


def _described(check: Callable[..., Any]) -> str:
    """A check without a ``what``, for a failure message: its name, or a lambda's source."""
    name = getattr(check, "__name__", "")
    if name and name != "<lambda>":
        return f"{name}()"
    try:
        source = " ".join(inspect.getsource(check).split())
    except (OSError, TypeError):
        return repr(check)
    return source if len(source) <= 200 else source[:197] + "..."


def running_tasks(exclude: asyncio.Task[Any] | None = None) -> str:
    """The tasks of this loop still running, each with where it waits (for a message)."""
    lines = []
    for task in asyncio.all_tasks():
        if task is exclude or task is asyncio.current_task() or task.done():
            continue
        frames = task.get_stack(limit=4)
        where = " <- ".join(
            f"{f.f_code.co_name} ({f.f_code.co_filename}:{f.f_lineno})" for f in frames
        )
        lines.append(f"  {task.get_name()}: {where or '?'}")
    return "\n".join(lines) or "  (none)"


async def bounded(aw: Awaitable[T], what: str, timeout: float) -> T:
    """Await ``aw`` (a teardown step) at most ``timeout`` seconds; past that, cancel it and
    fail with a message naming ``what`` it waited for and the tasks still running, instead
    of hanging until pytest's timeout."""
    task = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        stuck = running_tasks(exclude=task)
        task.cancel()
        await asyncio.wait({task}, timeout=5)
        raise AssertionError(
            f"teardown: {what} did not finish within {timeout:g}s; tasks still running:\n{stuck}"
        )
    return task.result()


async def stop_process(proc: asyncio.subprocess.Process, what: str, timeout: float) -> None:
    """Kill ``proc`` if it still runs, and wait for it at most ``timeout`` seconds."""
    if proc.returncode is None:
        proc.kill()
    await bounded(proc.communicate(), f"{what} (pid {proc.pid}) to exit after SIGKILL", timeout)


async def set_db_clock_back(queue: Queue, sql: str, params: dict[str, Any]) -> None:
    async with queue.pool.connection() as conn:
        await conn.execute(sql.encode(), params)


# -- helpers of the integration suites (tests/integration) ------------------------------


async def open_queue(
    url: str, *, pool_max: int = 8, retry_after_cap: float = 3600.0, **settings: Any
) -> Queue:
    """A Queue on ``url`` with QueueSettings overrides (``budget_low=0.5``, ``lease=1``...).
    Use as ``async with await open_queue(url) as q:`` so its pool is closed."""
    from herald_queue.settings import DatabaseSettings, QueueSettings

    return await Queue.open(
        DatabaseSettings(pool_min=1, pool_max=pool_max),
        QueueSettings(**settings),
        url=url,
        retry_after_cap=retry_after_cap,
    )


async def sql_rows(queue: Queue, query: str, params: Any = None) -> list[dict[str, Any]]:
    """Rows of a statement run on its own (autocommit) connection, as dicts."""
    from psycopg.rows import dict_row

    async with queue.pool.connection() as conn:
        cur = await conn.cursor(row_factory=dict_row).execute(query.encode(), params)
        return await cur.fetchall() if cur.description else []


async def sql_value(queue: Queue, query: str, params: Any = None) -> Any:
    """The first column of the first row (None without rows)."""
    rows = await sql_rows(queue, query, params)
    return next(iter(rows[0].values())) if rows else None


async def sql_exec(queue: Queue, query: str, params: Any = None) -> int:
    """Run a statement; the number of rows it touched."""
    async with queue.pool.connection() as conn:
        cur = await conn.execute(query.encode(), params)
        return cur.rowcount


async def make_ready(queue: Queue, where: str = "true", params: Any = None) -> int:
    """Move waiting jobs (queued/retrying) matching ``where`` so that they are due now,
    keeping the distance between run_at and deadline (the priority budget)."""
    return await sql_exec(
        queue,
        "UPDATE herald.jobs SET deadline = deadline - (run_at - now()) - interval '1 ms', "
        "run_at = now() - interval '1 ms' "
        f"WHERE state IN ('queued', 'retrying') AND run_at > now() - interval '1 ms' "
        f"AND ({where})",
        params,
    )


async def expire_leases(queue: Queue, worker: str | None = None) -> int:
    """Make the leases of running jobs (of ``worker``, or all) expired."""
    return await sql_exec(
        queue,
        "UPDATE herald.jobs SET lease_expires_at = now() - interval '1 second' "
        "WHERE state = 'running' AND (%(w)s::text IS NULL OR leased_by = %(w)s)",
        {"w": worker},
    )


async def job_rows(queue: Queue, where: str = "true", params: Any = None) -> list[dict[str, Any]]:
    """herald.jobs rows (in enqueue order) matching ``where``."""
    return await sql_rows(queue, f"SELECT * FROM herald.jobs WHERE {where} ORDER BY seq", params)


async def target_row(queue: Queue, name: str = "hook") -> dict[str, Any]:
    rows = await sql_rows(queue, "SELECT * FROM herald.targets WHERE name = %s", [name])
    assert rows, f"no target {name!r}"
    return rows[0]


async def claim_all(queue: Queue, worker: str = "w", limit: int = 1000) -> list[Any]:
    """Everything claimable now, in claim order (claims until one comes back empty)."""
    out: list[Any] = []
    while batch := await queue.jobs.claim(worker, limit):
        out += batch
    return out


def failure(
    claimed: Any,
    error_class: str = "transient",
    *,
    message: str = "boom",
    http_status: int | None = None,
    retry_after: float | None = None,
) -> Any:
    """A Failure of a claimed job (error_class: transient, permanent, unknown)."""
    from herald_core.states import ErrorClass
    from herald_queue.records import Failure

    if http_status is None:
        http_status = {"transient": 503, "permanent": 400}.get(error_class)
    return Failure(
        job=claimed,
        error_class=ErrorClass(error_class),
        message=message,
        http_status=http_status,
        retry_after=retry_after,
    )


def _ephemeral_floor() -> int:
    """The first port the kernel hands out for bind(0) and outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_FLOOR = _ephemeral_floor()
_BELOW = range(max(1024, _FLOOR - 12000), _FLOOR)
_CANDIDATES = itertools.cycle(
    [*_BELOW[os.getpid() % max(1, len(_BELOW)) :], *_BELOW[: os.getpid() % max(1, len(_BELOW))]]
)


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port on ``address`` that nobody listens on, for a server a test starts.

    Taken below the kernel's ephemeral range, in turn, never twice in a run: a port from
    bind(0) is also the kind the kernel gives outgoing connections (to PostgreSQL, the API
    server...), so one could take it between this call and the server's own bind, and the
    server would fail with "address already in use"."""
    for _ in range(len(_BELOW)):
        port = next(_CANDIDATES)
        with socket.socket() as s:
            try:
                s.bind((address, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # no room below the ephemeral range on this machine
        s.bind((address, 0))
        return int(s.getsockname()[1])
