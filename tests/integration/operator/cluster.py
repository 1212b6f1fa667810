"""Helpers of the operator tests: the KMock emulator shim, manifests, readers.

See conftest.py for how the operator runs against it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import itertools
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import jsonpatch
import kmock
import kopf
import kubernetes
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from herald_operator.runtime import Options
from herald_operator.settings import OperatorSettings
from tests.helpers import free_port, wait_until
from tests.unit import crd_schema

NS = "default"
GROUP_VERSION = "herald.dev/v1alpha1"
PT = f"{GROUP_VERSION}/publishingtargets"
DLR = f"{GROUP_VERSION}/deadletterreplays"
DEPLOY = "apps/v1/deployments"
SECRETS = "v1/secrets"
EVENTS = "v1/events"
PEERINGS = "kopf.dev/v1/kopfpeerings"
PT_URL = f"/apis/{GROUP_VERSION}/namespaces/{NS}/publishingtargets"
DLR_URL = f"/apis/{GROUP_VERSION}/namespaces/{NS}/deadletterreplays"
WORKER = "herald-worker"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"herald-operator-tests-key-32-bytes!!").decode()


class Emulator(kmock.KubernetesEmulator):  # type: ignore[misc]
    """KubernetesEmulator plus the server-populated metadata kopf relies on.

    KMock 0.8 stores objects verbatim. Without a resourceVersion, kopf's JSON-patch
    ``test /metadata/resourceVersion`` (finalizers) fails with HTTP 500 forever; without a
    uid, every object shares one kopf memory slot; without generateName handling, the
    second Event gets 409; without generation, observedGeneration means nothing. A failed
    JSON-patch ``test`` is answered 422, as the apiserver does (kopf retries it)."""

    _rvs = itertools.count(1)
    down = False
    """While True, every request is answered 503 (the API server is away; watch streams
    already open stay open). ``refused`` lists them (method, path)."""

    @property
    def refused(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = self.__dict__.setdefault("_refused", [])
        return found

    async def _handle(self, request: Any) -> Any:
        if self.down:
            self.refused.append((str(request.method), str(request.url.path)))
            raise kmock.KubernetesError(
                status=503, reason="ServiceUnavailable", message="the API server is away"
            )
        data = request.data
        if (
            request.resource is not None
            and request.action == kmock.action.CREATE
            and isinstance(data, dict)
        ):
            meta = data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:8]
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
            meta["generation"] = 1
            meta["resourceVersion"] = str(next(self._rvs))
        elif request.resource is not None and request.action == kmock.action.UPDATE:
            rv = str(next(self._rvs))
            bump = request.subresource is None and (
                (isinstance(data, dict) and "spec" in data)
                or (
                    isinstance(data, list)
                    and any(str(op.get("path", "")).startswith("/spec") for op in data)
                )
            )
            generation = None
            if bump:
                try:
                    current = self.objects[request.resource, request.namespace, request.name]
                    generation = int(current.get("metadata", {}).get("generation") or 0) + 1
                except (KeyError, TypeError, ValueError):
                    generation = None
            if isinstance(data, dict):  # merge patch
                meta = data.setdefault("metadata", {})
                meta["resourceVersion"] = rv
                if generation is not None:
                    meta["generation"] = generation
            elif isinstance(data, list):  # JSON patch: its 'test' ops run first
                data.append({"op": "add", "path": "/metadata/resourceVersion", "value": rv})
                if generation is not None:
                    data.append({"op": "add", "path": "/metadata/generation", "value": generation})
        try:
            return await super()._handle(request)
        except (jsonpatch.JsonPatchTestFailed, jsonpatch.JsonPatchConflict) as exc:
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(exc)) from exc


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def deployment(replicas: int = 1, name: str = WORKER) -> dict[str, Any]:
    """A complete Deployment (the kubernetes client deserialises what the API returns)."""
    labels = {"app.kubernetes.io/name": "herald", "app.kubernetes.io/component": "worker"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": str(uuid.uuid4()),
            "resourceVersion": "1",
            "generation": 1,
            "labels": labels,
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "worker", "image": "herald:test", "args": ["worker"]}]
                },
            },
        },
        "status": {"replicas": replicas},
    }


def secret(name: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def target(name: str = "hook", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "webhook", "url": "http://127.0.0.1:9/hook"}
    body.update(spec)
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "PublishingTarget",
        "metadata": {"name": name, "namespace": NS},
        "spec": body,
    }


def replay_manifest(name: str = "replay", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "DeadLetterReplay",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def kmock_login(url: str) -> Callable[..., kopf.ConnectionInfo]:
    """A login handler for tests: kopf and the kubernetes client talk to the emulator."""

    def login_to_kmock(**_: Any) -> kopf.ConnectionInfo:
        kubernetes.client.Configuration.set_default(kubernetes.client.Configuration(host=url))
        return kopf.ConnectionInfo(server=url)

    return login_to_kmock


def operator_settings(**overrides: Any) -> OperatorSettings:
    values: dict[str, Any] = {
        "watch_namespace": NS,
        "metrics_port": free_port(),
        "health_port": free_port(),
        "peering": "",
        "status_interval": 0.3,
        "replay_batch": 50,
        "worker_deployment": WORKER,
        "worker_namespace": NS,
        "scaling": False,
        "scale_min": 1,
        "scale_max": 10,
        "jobs_per_replica": 10,
        "scale_max_step": 10,
        "scale_interval": 0.2,
        "scale_cooldown": 0.01,
        "scale_down_stabilization": 0.01,
    }
    values.update(overrides)
    return OperatorSettings(**values)


@dataclasses.dataclass
class RunningOperator:
    options: Options
    thread: threading.Thread
    stop_flag: threading.Event
    errors: list[BaseException]

    @property
    def settings(self) -> OperatorSettings:
        return self.options.settings

    async def stop(self) -> None:
        if not self.thread.is_alive():
            return
        self.stop_flag.set()
        await asyncio.to_thread(self.thread.join, 15)
        assert not self.thread.is_alive(), "the operator did not stop within 15 s"
        assert not self.errors, f"the operator failed: {self.errors!r}"


StartOperator = Callable[..., Awaitable[RunningOperator]]


def watch_count(k8s: Emulator) -> int:
    return sum(
        1
        for r in list(k8s)
        if r.action == kmock.action.WATCH
        and r.resource is not None
        and r.resource.plural in ("publishingtargets", "deadletterreplays")
    )


# -- reading the emulator's state ---------------------------------------------------------


def obj(k8s: Emulator, resource: str, name: str) -> dict[str, Any]:
    """The object as stored now ({} when absent or deleted)."""
    try:
        found = k8s.objects[resource, NS, name]
    except KeyError:
        return {}
    if found.deleted:
        return {}
    return dict(found.raw)


def status(k8s: Emulator, resource: str, name: str) -> dict[str, Any]:
    return dict(obj(k8s, resource, name).get("status") or {})


def condition(k8s: Emulator, resource: str, name: str, kind: str = "Ready") -> dict[str, Any]:
    for item in status(k8s, resource, name).get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return {}


def events(k8s: Emulator, reason: str | None = None, name: str | None = None) -> list[Any]:
    found = []
    for (resource, _, _), item in list(k8s.objects.items()):
        if resource.plural != "events" or item.deleted:
            continue
        body = item.raw
        if reason is not None and body.get("reason") != reason:
            continue
        if name is not None and body.get("involvedObject", {}).get("name") != name:
            continue
        found.append(body)
    return found


def valid(k8s: Emulator, resource: str, name: str) -> dict[str, Any]:
    """The object, checked against its CRD as the apiserver would check it (a status field
    the CRD does not declare would be pruned by a real apiserver: here it fails)."""
    body = obj(k8s, resource, name)
    assert body, f"{resource} {name} does not exist"
    manifest = {
        k: v for k, v in body.items() if k in ("apiVersion", "kind", "metadata", "spec", "status")
    }
    manifest["metadata"] = {
        "name": body["metadata"]["name"],
        "namespace": body["metadata"]["namespace"],
    }
    problems = crd_schema.validate(manifest)
    assert not problems, f"{resource} {name} would be rejected: {problems}"
    return body


async def create(k8s: Emulator, url: str, body: dict[str, Any]) -> None:
    response = await k8s.post(url, json=body)
    assert response.status in (200, 201), await response.text()


def put_secret(k8s: Emulator, name: str, **data: str) -> None:
    """Create or replace a Secret (as kubectl apply would; nothing watches Secrets)."""
    k8s.objects[SECRETS, NS, name] = secret(name, **data)


async def wait_ready(
    k8s: Emulator, name: str, expected: str = "True", timeout: float = 10
) -> dict[str, Any]:
    found: dict[str, Any] = await wait_until(
        lambda: (c := condition(k8s, PT, name)) and c.get("status") == expected and c,
        timeout=timeout,
        what=f"Ready={expected} on PublishingTarget {name}",
    )
    return found


@contextlib.asynccontextmanager
async def database_outage(admin_url: str, db_url: str) -> AsyncIterator[None]:
    """PostgreSQL refuses the test database's connections and drops the open ones, until
    the block ends (a real outage, as the operator's pool sees it)."""
    name = str(conninfo_to_dict(db_url)["dbname"])
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name))
        )
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        try:
            yield
        finally:
            await conn.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(name))
            )
