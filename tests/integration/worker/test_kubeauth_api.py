"""The worker's API with HERALD_API_AUTH=kubernetes, in-process, the API server scripted
(tests/unit/test_kubeauth.FakeApi): every route that is not public answers 401 without a
token the cluster vouches for and 403 (naming the permission) without the permission its row
of herald_worker.api.access needs; publishing is authorised per target, before a named
target is looked up, and a refused batch writes nothing; an API server that fails is 503.
The real API server judges in tests/cluster/test_kubeauth_on_cluster.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from herald_worker.api import app as app_module
from herald_worker.api.access import ACCESS
from herald_worker.api.app import PUBLIC
from herald_worker.api.routes import ROUTES
from herald_worker.kubeauth import KubernetesAuth
from herald_worker.settings import WorkerSettings
from tests.helpers import wait_until
from tests.integration.worker.harness import Worker, target_doc, worker, write_manifests
from tests.integration.worker.test_api import UNKNOWN_ID, assert_error, concrete
from tests.unit.test_kubeauth import TOKEN, USER, FakeApi

PUBLISH = "publishingtargets/publish"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
SUBSCRIBED = {"eventTypes": ["order.*", "alertmanager.alert.*"]}
EVENT = {"type": "order.created", "payload": {"id": 1}}


@pytest.fixture()
def fake_api() -> FakeApi:
    api = FakeApi()
    api.grants = {(USER, "create", PUBLISH, "default", "hook")}
    return api


@pytest.fixture()
async def api(
    db_url: str, tmp_path: Path, fake_api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Worker]:
    def scripted(settings: WorkerSettings) -> KubernetesAuth:
        return KubernetesAuth(ttl=0.5, denied_ttl=0.1, size=100, timeout=2.0, call=fake_api)

    monkeypatch.setattr(app_module, "kubernetes_auth", scripted)
    manifests = write_manifests(
        tmp_path / "targets.yaml",
        [
            target_doc(
                "hook", "https://hooks.example.com/a", paused=True, subscriptions=SUBSCRIBED
            ),
            target_doc(
                "elsewhere",
                "https://hooks.example.com/b",
                namespace="team-b",
                paused=True,
                subscriptions=SUBSCRIBED,
            ),
            target_doc(
                "other", "https://hooks.example.com/c", paused=True, subscriptions=SUBSCRIBED
            ),
        ],
    )
    async with worker(db_url, manifests, api_auth="kubernetes") as w:
        yield w


async def call(w: Worker, method: str, path: str, **kw: Any) -> tuple[int, Any, Any]:
    async with w.http.request(method, w.base + path, **kw) as r:
        text = await r.text()
        return (
            r.status,
            (json.loads(text) if r.content_type == "application/json" else text),
            r.headers,
        )


async def test_every_private_route_needs_a_token_the_cluster_vouches_for(api: Worker) -> None:
    for route in ROUTES:
        path = concrete(route.path)
        if route.public:
            status, _, _ = await call(api, route.method, path)
            assert status in (200, 404), f"{route.path} is open"
            continue
        for headers in ({}, {"Authorization": "Bearer forged"}, {"Authorization": TOKEN}):
            status, body, answer_headers = await call(api, route.method, path, headers=headers)
            assert_error(status, body, 401, "Authorization", f"{route.method} {route.path}")
            assert answer_headers["WWW-Authenticate"].startswith("Bearer")
    assert {r.path for r in ROUTES if r.public} == set(PUBLIC)


async def test_every_route_is_refused_without_its_permission(
    api: Worker, fake_api: FakeApi
) -> None:
    fake_api.grants = set()
    for route in ROUTES:
        if route.public:
            continue
        needs = ACCESS[route.operation_id]
        kw: dict[str, Any] = {"headers": HEADERS}
        if route.operation_id == "submitJobs":
            kw["json"] = {"target": "default/hook", "payload": {}}
        elif route.operation_id == "publishEvent":
            kw["json"] = EVENT
        elif needs.per_target:  # the Alertmanager receivers: the path names the target
            from tests.integration.worker.test_alertmanager import message, pod_alert

            kw["json"] = message(pod_alert("p", "critical", "f1"))
        elif route.body is not None:
            kw["json"] = {"ids": [UNKNOWN_ID]}
        path = concrete(route.path)
        status, body, _ = await call(api, route.method, path, **kw)
        what = f"{route.method} {route.path}"
        assert_error(status, body, 403, "Authorization", what)
        message_text = body["error"]["message"]
        assert message_text.startswith(f"{USER} may not {needs.verb} {needs.resource}.herald.dev")
        if needs.per_target:
            assert "in namespace 'default'" in message_text, message_text
        else:
            assert "in all namespaces" in message_text, message_text


async def test_publishing_is_authorised_per_target(api: Worker, fake_api: FakeApi) -> None:
    status, body, _ = await call(
        api, "POST", "/v1/jobs", json={"target": "hook", "payload": {}}, headers=HEADERS
    )
    assert status == 201, body
    # A bare name is authorised in the namespace it resolves to.
    status, body, _ = await call(
        api, "POST", "/v1/jobs", json={"target": "elsewhere", "payload": {}}, headers=HEADERS
    )
    assert_error(status, body, 403, "Authorization", "bare name of another namespace")
    assert "'elsewhere' in namespace 'team-b'" in body["error"]["message"]
    # A namespaced name is authorised before it is looked up: no 404 tells whether it exists.
    status, body, _ = await call(
        api, "POST", "/v1/jobs", json={"target": "team-b/nothing", "payload": {}}, headers=HEADERS
    )
    assert_error(status, body, 403, "Authorization", "unknown target of another namespace")
    # One refused target refuses the batch: nothing is written.
    fake_api.grants.add((USER, "get", "publishingtargets/queue", "", ""))
    _, before, _ = await call(api, "GET", "/v1/queue/stats", headers=HEADERS)
    batch = [
        {"target": "default/hook", "payload": {}},
        {"target": "team-b/elsewhere", "payload": {}},
    ]
    status, body, _ = await call(api, "POST", "/v1/jobs", json=batch, headers=HEADERS)
    assert_error(status, body, 403, "Authorization", "a batch with one refused target")
    _, after, _ = await call(api, "GET", "/v1/queue/stats", headers=HEADERS)
    assert after["queued"] == before["queued"] == 1, (before, after)


async def test_an_event_needs_every_target_it_fans_out_to(api: Worker, fake_api: FakeApi) -> None:
    """An event is refused whole unless the caller may publish to each subscribed target of
    its namespace (default: hook and other; only hook is granted), nothing written."""
    fake_api.grants.add((USER, "get", "publishingtargets/queue", "", ""))
    status, body, _ = await call(api, "POST", "/v1/events", json=EVENT, headers=HEADERS)
    assert_error(status, body, 403, "Authorization", "an event to a target not granted")
    assert "'other' in namespace 'default'" in body["error"]["message"]
    _, stats, _ = await call(api, "GET", "/v1/queue/stats", headers=HEADERS)
    assert stats["queued"] == 0, stats
    fake_api.grants.add((USER, "create", PUBLISH, "default", "other"))

    async def accepted() -> Any:
        status, body, _ = await call(api, "POST", "/v1/events", json=EVENT, headers=HEADERS)
        assert status in (202, 403), body
        return body if status == 202 else None

    body = await wait_until(accepted, timeout=10, interval=0.05, what="the grant to act")
    assert sorted(j["target"] for j in body["jobs"]) == ["default/hook", "default/other"]
    # Another namespace's subscribers: refused.
    status, body, _ = await call(
        api, "POST", "/v1/events", json={**EVENT, "namespace": "team-b"}, headers=HEADERS
    )
    assert_error(status, body, 403, "Authorization", "an event to another namespace")
    assert "'elsewhere' in namespace 'team-b'" in body["error"]["message"]


async def test_an_api_server_that_fails_is_503_never_a_201(api: Worker, fake_api: FakeApi) -> None:
    fake_api.failure = ConnectionRefusedError(111, "Connection refused")
    status, body, headers = await call(
        api,
        "POST",
        "/v1/jobs",
        json={"target": "default/hook", "payload": {}},
        headers={"Authorization": "Bearer never-seen"},
    )
    assert_error(status, body, 503, None, "API server away")
    assert headers["Retry-After"]
    assert "did not answer the TokenReview" in body["error"]["message"]
    assert "never-seen" not in body["error"]["message"]
    registry = api.running.metrics.registry
    counted = {
        result: registry.get_sample_value(
            "herald_api_auth_reviews_total", {"review": "TokenReview", "result": result}
        )
        for result in ("error", "allowed")
    }
    assert counted == {"error": 1.0, "allowed": 0.0}
