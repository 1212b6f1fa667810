"""Group commit of single-job enqueues: concurrent submissions share one transaction.

Each single enqueue on its own is one commit, so a producer that sends one job per request
can never go faster than the server commits transactions. Here the single enqueues that
arrive together are written as one batch (one INSERT, one commit):

- natural batching: a request that finds a free slot starts its group at once (a lone
  request at low load waits for nothing); those that arrive while the groups in flight
  commit gather for the next group. An optional linger (HERALD_INGEST_LINGER) holds a group
  open a little longer, up to HERALD_INGEST_MAX_GROUP requests;
- at most HERALD_INGEST_GROUPS_IN_FLIGHT groups commit at once (each holds one connection),
  so the pool is never exhausted by ingest;
- a request is answered only once its own job is committed;
- a group whose transaction fails for a reason of its rows (an idempotency key reused with
  another payload, a value PostgreSQL refuses, an unknown target) is tried again request by
  request, so each gets its own answer; a failure of the database itself (unreachable, pool
  exhausted) is the answer of every request of the group. Conflicts between transactions
  (deadlocks, serialization failures) are retried as before, inside the batch;
- a caller cancelled before its group started is taken out of it (nothing written); once
  its group started, the group goes on and its job is written (as a request whose client
  went away after the server had it), never twice;
- ``close`` lets the groups in flight finish and writes those gathered, for at most a
  bounded time; then it fails what remains with :class:`IngestClosed`, and refuses new
  requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import psycopg_pool

from herald_core.errors import IngestClosed
from herald_model.submission import JobRequest
from herald_queue.db import is_connection_failure
from herald_queue.records import EnqueueResult

log = logging.getLogger("herald.queue")

CLOSE_WAIT = 10.0
"""Seconds ``close`` waits for the groups in flight and gathered before failing them."""


def _shared(exc: BaseException) -> bool:
    """A failure of the database itself (unreachable, connection lost, pool exhausted or
    closed), which every request of the group shares. Anything the server answered about
    the statement (a lock timeout, a cancelled statement, a refused value, a conflict still
    there after its retries) may concern one row: the group is then written request by
    request."""
    return is_connection_failure(exc) or isinstance(exc, psycopg_pool.PoolClosed)


@dataclass(eq=False)
class _Entry:
    request: JobRequest
    future: asyncio.Future[EnqueueResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


Writer = Callable[[Sequence[JobRequest]], Awaitable[list[EnqueueResult]]]


class GroupCommit:
    """Puts single enqueues that arrive together into one ``write`` (``enqueue_many``)."""

    def __init__(
        self,
        write: Writer,
        *,
        max_group: int,
        linger: float = 0.0,
        in_flight: int = 4,
        on_group: Callable[[int], None] | None = None,
    ) -> None:
        if max_group < 1 or in_flight < 1 or linger < 0:
            raise ValueError("max_group and in_flight must be at least 1, linger at least 0")
        self._write = write
        self.max_group = max_group
        self.linger = linger
        self.max_in_flight = in_flight
        self.on_group = on_group
        self._pending: list[_Entry] = []
        self._in_flight = 0
        self._gathering = False
        self._full = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.groups = 0
        """Transactions written (groups), for tests and the bench."""
        self.requests = 0
        """Requests written in them."""

    async def submit(self, request: JobRequest) -> EnqueueResult:
        """Enqueue one job with those submitted at the same time; its result once committed."""
        if self._closed:
            raise IngestClosed()
        entry = _Entry(request)
        self._pending.append(entry)
        if len(self._pending) >= self.max_group:
            self._full.set()
        self._kick()
        try:
            return await entry.future
        except asyncio.CancelledError:
            # Not started yet: taken out, nothing is written. Started: the group goes on.
            with contextlib.suppress(ValueError):
                self._pending.remove(entry)
            raise

    def _kick(self) -> None:
        while self._pending and self._in_flight < self.max_in_flight and not self._gathering:
            self._in_flight += 1
            if self.linger > 0 and len(self._pending) < self.max_group and not self._closed:
                self._gathering = True
                self._spawn(self._gather())
            else:
                self._spawn(self._commit(self._take()))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[_Entry]:
        group, self._pending = self._pending[: self.max_group], self._pending[self.max_group :]
        if len(self._pending) < self.max_group:
            self._full.clear()
        return group

    async def _gather(self) -> None:
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.linger):
                    await self._full.wait()
        except BaseException:  # cancelled by close(): the gathered requests stay pending
            self._gathering = False
            self._in_flight -= 1
            raise
        group = self._take()
        self._gathering = False
        self._kick()  # the slots left start the next groups at once
        await self._commit(group)

    async def _commit(self, group: list[_Entry]) -> None:
        try:
            live = [e for e in group if not e.future.done()]
            if live:
                await self._write_group(live)
        finally:
            self._in_flight -= 1
            self._kick()

    async def _write_group(self, group: list[_Entry]) -> None:
        try:
            results = await self._write([e.request for e in group])
        except asyncio.CancelledError:
            _fail(group, IngestClosed())
            raise
        except Exception as exc:
            if len(group) == 1 or _shared(exc):
                _fail(group, exc)
                return
            log.info(
                "a group of enqueues failed; writing its requests one by one",
                extra={"action": "enqueue", "jobs": len(group), "error": type(exc).__name__},
            )
            try:
                for entry in group:
                    if not entry.future.done():  # its caller may have gone meanwhile
                        await self._write_group([entry])
            except BaseException:
                _fail(group, IngestClosed())  # cancelled by close(): none left waiting
                raise
            return
        self._count(len(group))
        for entry, result in zip(group, results, strict=True):
            if not entry.future.done():
                entry.future.set_result(result)

    def _count(self, size: int) -> None:
        self.groups += 1
        self.requests += size
        if self.on_group is not None:
            self.on_group(size)

    async def close(self, timeout: float = CLOSE_WAIT) -> None:
        """Refuse new requests; write those gathered and in flight for at most ``timeout``
        seconds, then fail the rest with :class:`IngestClosed`."""
        self._closed = True
        self._full.set()  # a linger ends now
        self._kick()
        try:
            async with asyncio.timeout(timeout):
                while self._tasks or self._pending:
                    if self._tasks:
                        await asyncio.wait(set(self._tasks))
                    else:  # gathered but no slot: cannot happen once the tasks are done
                        break
        except TimeoutError:
            log.warning(
                "enqueues still being written at shutdown were given up",
                extra={"action": "enqueue", "jobs": len(self._pending) + self._in_flight},
            )
        pending, self._pending = self._pending, []
        _fail(pending, IngestClosed())
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)


def _fail(group: Sequence[_Entry], exc: BaseException) -> None:
    for entry in group:
        if not entry.future.done():
            entry.future.set_exception(exc)
