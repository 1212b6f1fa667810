"""kopf runs the real operator (herald_operator.app.run) against KMock, a stateful
Kubernetes API emulator, with a real PostgreSQL behind it (the ``db_url`` fixture).

The pattern is the one of ../shared/notes/operator-tests-with-kmock.md:

- :class:`Emulator` adds the metadata a real apiserver fills in and KMock 0.8 does not
  (uid, resourceVersion, generation, creationTimestamp, generateName) and answers a failed
  JSON-patch ``test`` with 422 as an apiserver does;
- the operator runs in its own thread and event loop (kopf cancels every task created
  after its start when it exits: KMock's and pytest's included, otherwise), stopped with
  a ``threading.Event``;
- a test-only login handler points kopf and the kubernetes client at the emulator;
- kopf watches one namespace with cluster scanning disabled (KMock cannot list
  namespaces), exactly as the operator runs in a cluster by default.

What KMock does not check (schemas, status subresource isolation, optimistic concurrency)
the tests check themselves: every object they read is validated against the CRD, and the
operator's own writes are asserted to be merge patches on ``/status`` and ``/scale``.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any

import kmock
import pytest

from herald_delivery.settings import EgressSettings
from herald_operator import app
from herald_operator.runtime import Options
from herald_queue.settings import DatabaseSettings
from tests.helpers import wait_until
from tests.integration.operator.cluster import (
    DEPLOY,
    GROUP_VERSION,
    NS,
    PEERINGS,
    WORKER,
    Emulator,
    RunningOperator,
    StartOperator,
    deployment,
    kmock_login,
    operator_settings,
    watch_count,
)


@pytest.fixture()
async def k8s() -> AsyncIterator[Emulator]:
    async with Emulator() as emulator, kmock.Server(emulator):
        emulator.resources.load_bundled()  # v1 namespaces, events, secrets; apps/v1...
        for plural, kind in (
            ("publishingtargets", "PublishingTarget"),
            ("deadletterreplays", "DeadLetterReplay"),
        ):
            emulator.resources[f"{GROUP_VERSION}/{plural}"] = kmock.ResourceInfo(
                kind=kind,
                singular=kind.lower(),
                namespaced=True,
                subresources={"status"},
                verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
            )
        emulator.resources[PEERINGS] = kmock.ResourceInfo(
            kind="KopfPeering",
            singular="kopfpeering",
            namespaced=True,
            verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
        )
        emulator.objects[DEPLOY, NS, WORKER] = deployment()
        yield emulator


@pytest.fixture()
async def start_operator(k8s: Emulator, db_url: str) -> AsyncIterator[StartOperator]:
    """Start the operator (settings overrides as keywords); every one is stopped at the
    end of the test."""
    started: list[RunningOperator] = []
    url = str(k8s.url).rstrip("/")

    async def start(**overrides: Any) -> RunningOperator:
        identity = overrides.pop("identity", f"test-{uuid.uuid4().hex[:6]}")
        priority = overrides.pop("priority", 100)
        connect_timeout = overrides.pop("db_connect_timeout", 5.0)
        wait_watching = overrides.pop("wait_watching", True)
        allow_loopback = overrides.pop("allow_loopback", True)
        settings = operator_settings(**overrides)
        options = Options(
            settings=settings,
            database=DatabaseSettings(pool_min=1, pool_max=4, connect_timeout=connect_timeout),
            # The tests' targets point at 127.0.0.1: loopback is allowed explicitly.
            egress=EgressSettings(allow_loopback=allow_loopback),
            url=db_url,
            identity=identity,
            priority=priority,
            listen_host="127.0.0.1",
            retry_delay=0.5,
            api_backoffs=(0.1, 0.2),
        )
        registry = app.build_registry(settings, login=kmock_login(url))
        stop, ready = threading.Event(), threading.Event()
        errors: list[BaseException] = []
        watches_before = watch_count(k8s)

        def main() -> None:
            try:
                asyncio.run(app.run(options, registry=registry, stop_flag=stop, ready_flag=ready))
            except BaseException as exc:  # reported by stop() and the fixture
                errors.append(exc)

        thread = threading.Thread(target=main, name=f"kopf-{identity}", daemon=True)
        thread.start()
        running = RunningOperator(options, thread, stop, errors)
        started.append(running)
        assert await asyncio.to_thread(ready.wait, 10), f"operator not ready: {errors!r}"
        # 'ready' fires before the watch streams are open: wait for both (stopping during
        # the initial listing costs kopf's 5 s grace).
        if wait_watching:
            await wait_until(
                lambda: watch_count(k8s) >= watches_before + 2,
                timeout=10,
                what="kopf watching PublishingTargets and DeadLetterReplays",
            )
        return running

    yield start
    for running in reversed(started):
        await running.stop()


@pytest.fixture()
async def operator(start_operator: StartOperator) -> RunningOperator:
    return await start_operator()
