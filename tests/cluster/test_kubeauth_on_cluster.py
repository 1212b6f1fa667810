"""Publishers authorised by Kubernetes (apiAuth.mode=kubernetes), on the real API server with
real RBAC and real ServiceAccount tokens (TokenRequest): the chart installed, its worker run
as the chart's ServiceAccount; two teams, each with a producer ServiceAccount bound to the
chart's publisher ClusterRole in its own namespace. A team publishes to its own target and
is refused the other's (403 naming the permission); tokens that are not the cluster's, or
not for Herald's audience, are 401; the queue's reads need the queue-reader ClusterRole; a
deleted RoleBinding takes effect within the cache bound; the API server away is 503, never
a 201. Nothing of the worker's own requests is refused by the API server (audit log)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from tests.cluster.controlplane import ControlPlane
from tests.cluster.herald import (
    HERALD,
    RELEASE,
    Herald,
    HeraldProcess,
    Kubectl,
    herald_release,
    run,
    wait_default_account,
)
from tests.helpers import wait_until
from tests.integration.worker.test_alertmanager import message, pod_alert

AUDIENCE = "herald"
CACHE_SECONDS = 2
DENIED_SECONDS = 1


@contextlib.asynccontextmanager
async def team_namespaces(admin: Kubectl, *names: str) -> AsyncIterator[None]:
    for name in names:
        await admin("create", "namespace", name)
    try:
        for name in names:
            await wait_default_account(admin.in_namespace(name))
        yield
    finally:
        for name in names:
            await admin("delete", "namespace", name, "--wait=false", check=False)


async def post(
    http: aiohttp.ClientSession, worker: HeraldProcess, path: str, body: Any, token: str | None
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with http.post(
        f"http://127.0.0.1:{worker.port}{path}",
        json=body,
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=30),
    ) as resp:
        return resp.status, await resp.json()


async def get(
    http: aiohttp.ClientSession, worker: HeraldProcess, path: str, token: str
) -> tuple[int, dict[str, Any]]:
    async with http.get(
        f"http://127.0.0.1:{worker.port}{path}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=aiohttp.ClientTimeout(total=30),
    ) as resp:
        return resp.status, await resp.json()


def job(target: str) -> dict[str, Any]:
    return {"target": target, "payload": {"hello": target}}


async def register_targets(db_url: str, path: Path, *namespaces: str) -> None:
    """Paused webhook targets named hook in each namespace, registered in PostgreSQL as
    ``herald targets apply`` does (no operator needed: the jobs only have to be accepted)."""
    docs = [
        {
            "apiVersion": "herald.dev/v1alpha1",
            "kind": "PublishingTarget",
            "metadata": {"name": "hook", "namespace": ns},
            "spec": {"type": "webhook", "url": "https://hooks.example.com/herald", "paused": True},
        }
        for ns in namespaces
    ]
    path.write_text(yaml.safe_dump_all(docs))
    await run([HERALD, "targets", "apply", str(path)], env={"HERALD_DATABASE_URL": db_url})


@pytest.fixture()
async def herald(
    crds: None, kube: ControlPlane, kubectl: Kubectl, helm_path: str, db_url: str
) -> AsyncIterator[Herald]:
    values = {
        "apiAuth": {
            "mode": "kubernetes",
            "cacheSeconds": CACHE_SECONDS,
            "deniedCacheSeconds": DENIED_SECONDS,
            "timeoutSeconds": 3,
            "audience": AUDIENCE,
        }
    }
    async with herald_release(kube, kubectl, helm_path, db_url, **values) as release:
        yield release


async def test_teams_publish_to_their_own_targets_only(
    herald: Herald, kube: ControlPlane, kubectl: Kubectl, db_url: str, tmp_path: Path
) -> None:
    release_ns = kubectl.namespace
    team_a, team_b = f"{release_ns}-a", f"{release_ns}-b"
    publisher = f"{release_ns}-{RELEASE}-publisher"
    reader = f"{release_ns}-{RELEASE}-queue-reader"
    reader_binding = f"{release_ns}-team-b-reads"
    user_a = f"system:serviceaccount:{team_a}:producer"
    async with team_namespaces(kubectl, team_a, team_b):
        for ns in (team_a, team_b):
            team = kubectl.in_namespace(ns)
            await team("create", "serviceaccount", "producer")
            await team(
                "create",
                "rolebinding",
                "publishers",
                f"--clusterrole={publisher}",
                f"--serviceaccount={ns}:producer",
            )
        await register_targets(db_url, tmp_path / "targets.yaml", team_a, team_b)
        worker = await herald.worker()
        created = await kubectl.in_namespace(team_a)(
            "create", "token", "producer", f"--audience={AUDIENCE}"
        )
        token_a = created.out.strip()
        token_b = (
            await kubectl.in_namespace(team_b)(
                "create", "token", "producer", f"--audience={AUDIENCE}"
            )
        ).out.strip()
        spare_b = (
            await kubectl.in_namespace(team_b)(
                "create", "token", "producer", f"--audience={AUDIENCE}"
            )
        ).out.strip()
        no_audience = (await kubectl.in_namespace(team_a)("create", "token", "producer")).out
        try:
            async with aiohttp.ClientSession() as http:
                # Each team publishes to its own target.
                status, body = await post(http, worker, "/v1/jobs", job(f"{team_a}/hook"), token_a)
                assert status == 201, body
                status, body = await post(http, worker, "/v1/jobs", job(f"{team_b}/hook"), token_b)
                assert status == 201, body

                # ...and is refused the other's, with the permission named.
                for path, body_sent in (
                    ("/v1/jobs", job(f"{team_b}/hook")),
                    ("/v1/jobs", [job(f"{team_a}/hook"), job(f"{team_b}/hook")]),
                    (f"/v1/alertmanager/{team_b}/hook", message(pod_alert("p", "critical", "f1"))),
                ):
                    status, body = await post(http, worker, path, body_sent, token_a)
                    assert status == 403, (path, body)
                    text = body["error"]["message"]
                    assert text.startswith(
                        f"{user_a} may not create publishingtargets/publish.herald.dev 'hook' "
                        f"in namespace '{team_b}'"
                    ), text
                    assert token_a not in text

                # Tokens the cluster does not vouch for, or not for Herald: 401.
                for token in ("not-a-token", no_audience.strip(), None):
                    status, body = await post(
                        http, worker, "/v1/jobs", job(f"{team_a}/hook"), token
                    )
                    assert status == 401, body
                    assert body["error"]["field"] == "Authorization"

                # Reading the queue needs the queue-reader ClusterRole, cluster-wide.
                status, body = await get(http, worker, "/v1/queue/stats", token_b)
                assert status == 403, body
                assert (
                    "get publishingtargets/queue.herald.dev in all namespaces"
                    in (body["error"]["message"])
                )
                await kubectl(
                    "create",
                    "clusterrolebinding",
                    reader_binding,
                    f"--clusterrole={reader}",
                    f"--serviceaccount={team_b}:producer",
                )

                async def reads() -> bool:
                    status, _ = await get(http, worker, "/v1/queue/stats", token_b)
                    assert status in (200, 403), status
                    return status == 200

                await wait_until(reads, timeout=30, interval=0.2, what="the new binding to act")

                # A revoked binding takes effect within the cache bound.
                await kubectl.in_namespace(team_a)("delete", "rolebinding", "publishers")

                async def revoked() -> bool:
                    status, body = await post(
                        http, worker, "/v1/jobs", job(f"{team_a}/hook"), token_a
                    )
                    assert status in (201, 403), body
                    return status == 403

                await wait_until(
                    revoked,
                    timeout=30,  # the bound is CACHE_SECONDS; loaded machines are slow
                    interval=0.2,
                    what=f"team A refused once its RoleBinding is deleted ({CACHE_SECONDS}s cache)",
                )

                # The API server away: 503 (what was awaited named), never a 201.
                kube.stop_apiserver()
                try:
                    status, body = await post(
                        http, worker, "/v1/jobs", job(f"{team_b}/hook"), spare_b
                    )
                    assert status == 503, body
                    assert "did not answer the TokenReview" in body["error"]["message"]

                    async def unavailable() -> bool:
                        status, body = await post(
                            http, worker, "/v1/jobs", job(f"{team_b}/hook"), token_b
                        )
                        assert status in (201, 503), body  # 201 only while still cached
                        return status == 503

                    await wait_until(
                        unavailable,
                        timeout=30,
                        interval=0.2,
                        what="503 once the cached decisions expire with the API server away",
                    )
                finally:
                    kube.start_apiserver()
                status, body = await post(http, worker, "/v1/jobs", job(f"{team_b}/hook"), token_b)
                assert status == 201, body
        finally:
            await kubectl("delete", "clusterrolebinding", reader_binding, check=False)
    assert "API callers authorised by Kubernetes" in worker.text()
    assert "Bearer" not in worker.text()
    assert token_a not in worker.text() and token_b not in worker.text()
    assert not herald.forbidden(), herald.forbidden()
