"""Small helpers shared by the test suites."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from herald_queue.queue import Queue
from herald_queue.requests import JobRequest, encode_payload
from herald_queue.spec import parse_target
from herald_queue.states import Priority

T = TypeVar("T")


def target_manifest(name: str = "hook", namespace: str = "default", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "webhook", "url": "http://127.0.0.1:9/hook"}
    body.update(spec)
    return {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "PublishingTarget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


async def register(queue: Queue, name: str = "hook", namespace: str = "default", **spec: Any) -> int:
    result = await queue.registry.apply(parse_target(target_manifest(name, namespace, **spec)))
    return result.id


def job(target: str = "hook", payload: Any = None, priority: Priority = Priority.MEDIUM,
        **kw: Any) -> JobRequest:
    return JobRequest(
        target=target,
        payload_json=encode_payload({"n": 0} if payload is None else payload, max_bytes=1 << 20),
        priority=priority,
        **kw,
    )


async def eventually(
    check: Callable[[], Awaitable[T] | T], *, timeout: float = 10.0, interval: float = 0.02,
    message: str = "condition",
) -> T:
    """Poll ``check`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        result = check()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result  # type: ignore[misc]
        if result:
            return result  # type: ignore[return-value]
        last = result
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout}s (last: {last!r})")
        await asyncio.sleep(interval)


async def set_db_clock_back(queue: Queue, sql: str, params: dict[str, Any]) -> None:
    async with queue.pool.connection() as conn:
        await conn.execute(sql.encode(), params)
