"""Herald on the node as a user runs it: the chart installed with helm from the image built
from this checkout, a receiver on the bridge's address (the one host address Pods reach),
and a producer posting jobs to the worker Service the way a service in the cluster would."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import yaml
from aiohttp import web
from tests.cluster.herald import (
    CHART,
    Kubectl,
    Result,
    merge,
    run,
    secret,
    signing_secret,
    target,
    wait_ready,
)
from tests.helpers import wait_until
from tests.node.node import GATEWAY, Node

from herald_tools.receiver import Answer, Receiver

RELEASE = "herald"
WORKER = f"{RELEASE}-worker"
OPERATOR = f"{RELEASE}-operator"


@dataclasses.dataclass
class Helm:
    """helm as a user runs it against the node's cluster; every command bounded in time (a
    hang fails naming the command)."""

    path: str
    node: Node
    namespace: str
    values_dir: Path

    async def __call__(self, *args: str, timeout: float = 420, check: bool = True) -> Result:
        return await run(
            [self.path, *args, "-n", self.namespace],
            env={
                "KUBECONFIG": str(self.node.kubeconfig()),
                "HELM_CACHE_HOME": str(self.values_dir / "helm-cache"),
                "HELM_CONFIG_HOME": str(self.values_dir / "helm-config"),
                "HELM_DATA_HOME": str(self.values_dir / "helm-data"),
            },
            timeout=timeout,
            check=check,
        )

    def values_file(self, name: str, values: Mapping[str, Any]) -> Path:
        path = self.values_dir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(dict(values)))
        return path

    async def deploy(self, verb: str, values: Mapping[str, Any], *extra: str) -> Result:
        path = self.values_file(f"{verb}-{time.monotonic_ns()}", values)
        # --wait: Deployments rolled out and Ready through their probes, hook Job complete.
        return await self(
            verb, RELEASE, str(CHART), "-f", str(path), "--wait", "--timeout=6m", *extra
        )


def chart_values(node: Node, pod_db_url: str, **overrides: Any) -> dict[str, Any]:
    """The chart's defaults, except what only this machine needs: the image built from the
    checkout (imported, never pulled), the test database, quick refreshes."""
    repository, _, tag = node.image.rpartition(":")
    values: dict[str, Any] = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "database": {"url": pod_db_url},
        "operator": {"extraEnv": [{"name": "HERALD_STATUS_INTERVAL", "value": "1s"}]},
        "worker": {"extraEnv": [{"name": "HERALD_TARGETS_REFRESH", "value": "1s"}]},
    }
    return merge(values, overrides)


async def scalar(url: str, query: str) -> Any:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(query)
        row = await cur.fetchone()
        return row[0] if row else None


async def install_and_target(
    node: Node, helm: Helm, kubectl: Kubectl, db: tuple[str, str], **values: Any
) -> tuple[dict[str, Any], str]:
    """helm install (hook Job on) with ``values`` over :func:`chart_values`; returns (the
    values, a signing secret for the target "hook" that :func:`apply_hook` registers)."""
    url, pod_url = db
    installed = chart_values(node, pod_url, **values)
    await helm.deploy("install", installed)
    # The hook Job ran `herald migrate` on the empty database (and was deleted on success).
    assert await scalar(url, "SELECT count(*) FROM herald.jobs") == 0
    assert await kubectl.get("job", f"{RELEASE}-migrate") is None
    return installed, signing_secret()


async def apply_hook(kubectl: Kubectl, key: str, hook_url: str, **spec: Any) -> None:
    """The PublishingTarget "hook" (signed with ``key``) delivering to ``hook_url``, Ready."""
    await kubectl.apply(
        secret("hook", signingSecret=key),
        target("hook", hook_url, secretRef={"name": "hook"}, **spec),
    )
    await wait_ready(kubectl, "publishingtarget", "hook", timeout=120)


async def pods(kubectl: Kubectl, component: str) -> list[dict[str, Any]]:
    result = await kubectl(
        "get", "pods", "-l", f"app.kubernetes.io/component={component}", "-o", "json"
    )
    items: list[dict[str, Any]] = result.json()["items"]
    return items


def ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return not pod["metadata"].get("deletionTimestamp") and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conditions
    )


def names(found: list[dict[str, Any]]) -> set[str]:
    return {p["metadata"]["name"] for p in found}


async def wait_ready_pods(
    kubectl: Kubectl, component: str, count: int, timeout: float = 240
) -> list[dict[str, Any]]:
    async def check() -> list[dict[str, Any]] | None:
        found = [p for p in await pods(kubectl, component) if ready(p)]
        return found if len(found) >= count else None

    found: list[dict[str, Any]] = await wait_until(
        check, timeout=timeout, interval=0.5, what=f"{count} Ready {component} Pod(s)"
    )
    return found


async def service_url(kubectl: Kubectl) -> str:
    service = await kubectl.get("service", WORKER)
    assert service is not None, "no worker Service"
    port = service["spec"]["ports"][0]["port"]
    return f"http://{service['spec']['clusterIP']}:{port}"


@dataclasses.dataclass
class Pacer:
    """A receiver's script: answers 200 after ``delay`` seconds (a test may change it while
    deliveries run) and notes the address each request came from. Nothing on the bridge is
    NATed, so that address is the delivering Pod's IP."""

    delay: float = 0.0
    started: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    """(Pod IP, webhook-id) of every request, in arrival order."""

    def __call__(self, receiver: Receiver, request: web.Request, body: bytes) -> Answer:
        self.started.append((request.remote or "", request.headers.get("webhook-id", "")))
        return Answer(delay=self.delay)

    def jobs_from(self, address: str) -> set[str]:
        """The jobs the Pod at ``address`` sent (answered or not yet)."""
        return {job for ip, job in self.started if ip == address}

    def in_flight_from(self, receiver: Receiver, address: str) -> int:
        """Requests from ``address`` the receiver has not answered yet."""
        return len(self.jobs_from(address) - set(receiver.delivered_ids()))


async def delivering_pod(
    kubectl: Kubectl, receiver: Receiver, pacer: Pacer, count: int = 2
) -> tuple[dict[str, Any], int]:
    """A Ready worker Pod with a delivery in flight, and how many it has. A trickle of jobs
    wakes only the waker (the listener holding SessionLock.WAKER), so one of the ``count``
    workers may deliver nothing for a long while: the Pod is found, not chosen."""
    workers = await wait_ready_pods(kubectl, "worker", count)

    def busy() -> tuple[dict[str, Any], int] | None:
        for pod in workers:
            in_flight = pacer.in_flight_from(receiver, pod["status"]["podIP"])
            if in_flight:
                return pod, in_flight
        return None

    found: tuple[dict[str, Any], int] = await wait_until(
        busy,
        timeout=60,
        interval=0.05,
        what=f"a delivery in flight from one of {sorted(names(workers))}",
    )
    return found


@contextlib.asynccontextmanager
async def receiver_on_bridge(
    secret: str, script: Pacer | None = None
) -> AsyncIterator[tuple[Receiver, str]]:
    """A webhook receiver on the bridge's address; stopped when the block ends."""
    receiver = Receiver(script, secret=secret)
    await receiver.start(host=GATEWAY)
    try:
        yield receiver, f"http://{GATEWAY}:{receiver.port}{receiver.path}"
    finally:
        await receiver.stop()


@dataclasses.dataclass
class Producer:
    """Posts a job every ``interval`` seconds to the worker Service and counts the answers:
    accepted (2xx, with the job's id), refused (the connection failed) and other errors."""

    url: str
    target: str
    interval: float = 0.05
    accepted: list[str] = dataclasses.field(default_factory=list)
    refused: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    _stop: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=20)
        sequence = 0
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self._stop.is_set():
                sequence += 1
                body = {"target": self.target, "payload": {"n": sequence}}
                try:
                    async with session.post(f"{self.url}/v1/jobs", json=body) as resp:
                        text = await resp.text()
                        if 200 <= resp.status < 300:
                            self.accepted.append(json.loads(text)["id"])
                        else:
                            self.errors.append(f"{resp.status}: {text[:200]}")
                except aiohttp.ClientConnectorError as exc:
                    self.refused.append(str(exc))
                except (aiohttp.ClientError, TimeoutError) as exc:
                    self.errors.append(repr(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="producer")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 60)

    def figures(self) -> dict[str, int]:
        return {
            "accepted": len(self.accepted),
            "refused": len(self.refused),
            "errors": len(self.errors),
        }


async def post_jobs(
    base: str, target: str, count: int, *, payload_bytes: int = 0, batch: int = 100
) -> list[str]:
    """``count`` jobs posted to the worker Service in lists of ``batch``; their ids. Each
    payload carries ``payload_bytes`` of filler."""
    ids: list[str] = []
    filler = "x" * payload_bytes
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while len(ids) < count:
            size = min(batch, count - len(ids))
            body = [
                {"target": target, "payload": {"n": len(ids) + i, "filler": filler}}
                for i in range(size)
            ]
            async with session.post(f"{base}/v1/jobs", json=body) as resp:
                text = await resp.text()
                assert resp.status == 201, f"{resp.status}: {text[:300]}"
                ids.extend(job["id"] for job in json.loads(text)["jobs"])
    return ids


async def wait_delivered(
    kubectl: Kubectl, receiver: Receiver, accepted: list[str], timeout: float = 240
) -> dict[str, int]:
    """Waits until every accepted job reached the receiver; returns the delivered and
    duplicate counts."""
    wanted = set(accepted)

    def missing() -> set[str]:
        return wanted - set(receiver.delivered_ids())

    try:
        await wait_until(
            lambda: not missing(),
            timeout=timeout,
            interval=0.5,
            what=f"every one of {len(wanted)} accepted jobs delivered",
        )
    except AssertionError as exc:
        lost = missing()
        raise AssertionError(
            f"{exc}: {len(lost)} missing, e.g. {sorted(lost)[:3]}\n"
            f"{await diagnostics(kubectl, receiver)}"
        ) from None
    delivered = [job for job in receiver.delivered_ids() if job in wanted]
    return {"delivered": len(set(delivered)), "duplicates": len(delivered) - len(set(delivered))}


async def diagnostics(kubectl: Kubectl, receiver: Receiver | None = None) -> str:
    """What a failed journey's message carries: the Pods, the last lines of the Herald
    processes' logs and what the receiver got."""
    lines = [(await kubectl("get", "pods,jobs", "-o", "wide", check=False)).out]
    for component in ("worker", "operator", "migrations"):
        logs = await kubectl(
            "logs",
            "-l",
            f"app.kubernetes.io/component={component}",
            "--tail=15",
            "--prefix",
            check=False,
        )
        lines.append(f"--- {component} logs:\n{logs.out}{logs.err}")
    if receiver is not None:
        for r in receiver.received[:5]:
            lines.append(f"--- received {r.webhook_id}: {r.headers} {r.body[:200]!r}")
    return "\n".join(lines)
