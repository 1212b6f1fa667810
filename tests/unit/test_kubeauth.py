"""Kubernetes authentication and authorisation of API callers, against a scripted API server:
what is asked (TokenReview, SubjectAccessReview bodies), what is cached and for how long
(a fake clock), the messages, and that an API server that fails or does not answer is a
503, never a grant. The real API server judges in tests/cluster/test_kubeauth_on_cluster.py."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from herald_core.errors import AuthUnavailable, ConfigError, Forbidden, Unauthenticated
from herald_worker.api.access import ACCESS, OPERATE, PER_TARGET, READ
from herald_worker.api.routes import ROUTES
from herald_worker.kubeauth import Identity, KubernetesAuth, Permission, token_key

TOKEN = "eyJhbGciOiJSUzI1NiJ9.team-a-producer-token.sig"
USER = "system:serviceaccount:team-a:producer"


class FakeApi:
    """Answers reviews from ``tokens`` (token -> user) and ``grants`` (user, verb,
    resource/subresource, namespace, name); records every call."""

    def __init__(self) -> None:
        self.tokens: dict[str, dict[str, Any]] = {
            TOKEN: {
                "username": USER,
                "uid": "u-1",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:team-a"],
                "extra": {"authentication.kubernetes.io/pod-name": ["p-1"]},
            }
        }
        self.grants: set[tuple[str, str, str, str, str]] = {
            (USER, "create", "publishingtargets/publish", "team-a", "hook")
        }
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.failure: BaseException | None = None
        self.hang: threading.Event | None = None

    def __call__(self, what: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((what, body))
        if self.hang is not None:
            self.hang.wait(10)
        if self.failure is not None:
            raise self.failure
        spec = body["spec"]
        if what == "TokenReview":
            user = self.tokens.get(spec["token"])
            return {"authenticated": True, "user": user} if user else {"authenticated": False}
        a = spec["resourceAttributes"]
        assert a["group"] == "herald.dev"
        resource = a["resource"] + ("/" + a["subresource"] if "subresource" in a else "")
        key = (spec["user"], a["verb"], resource, a.get("namespace", ""), a.get("name", ""))
        return {"allowed": key in self.grants}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(api: FakeApi, clock: Clock, **kw: Any) -> KubernetesAuth:
    options: dict[str, Any] = {"ttl": 30.0, "denied_ttl": 5.0, "size": 100, "timeout": 2.0}
    return KubernetesAuth(**(options | kw), call=api, clock=clock)


def reviews(api: FakeApi, what: str) -> int:
    return sum(1 for w, _ in api.calls if w == what)


async def test_token_review_then_cached_by_hash_for_the_ttl() -> None:
    api, clock = FakeApi(), Clock()
    auth = make(api, clock)
    identity = await auth.authenticate(TOKEN)
    assert identity.username == USER
    assert identity.groups == ("system:serviceaccounts", "system:serviceaccounts:team-a")
    assert dict(identity.extra) == {"authentication.kubernetes.io/pod-name": ("p-1",)}
    assert api.calls[0] == ("TokenReview", {"spec": {"token": TOKEN}})
    clock.now += 29
    assert await auth.authenticate(TOKEN) == identity
    assert reviews(api, "TokenReview") == 1
    # The cache never holds the token itself.
    assert list(auth._identities.keys()) == [token_key(TOKEN)]
    assert TOKEN not in repr(dict(auth._identities))
    clock.now += 2  # past the TTL: asked again
    await auth.authenticate(TOKEN)
    assert reviews(api, "TokenReview") == 2


async def test_a_refused_token_is_401_and_remembered_for_the_shorter_ttl() -> None:
    api, clock = FakeApi(), Clock()
    auth = make(api, clock)
    with pytest.raises(Unauthenticated) as refused:
        await auth.authenticate("forged")
    assert refused.value.http_status == 401
    assert "not a valid Kubernetes token" in str(refused.value)
    assert "forged" not in str(refused.value)
    clock.now += 4
    with pytest.raises(Unauthenticated):
        await auth.authenticate("forged")
    assert reviews(api, "TokenReview") == 1
    api.tokens["forged"] = {"username": "now-valid"}
    clock.now += 2
    assert (await auth.authenticate("forged")).username == "now-valid"


async def test_audience_is_asked_for() -> None:
    api, clock = FakeApi(), Clock()
    auth = make(api, clock, audience="herald")
    await auth.authenticate(TOKEN)
    assert api.calls[0][1] == {"spec": {"token": TOKEN, "audiences": ["herald"]}}


async def test_subject_access_review_asks_what_the_route_needs_as_the_identity() -> None:
    api, clock = FakeApi(), Clock()
    auth = make(api, clock)
    identity = await auth.authenticate(TOKEN)
    await auth.authorize(identity, "create", "team-a", "hook")
    what, body = api.calls[-1]
    assert what == "SubjectAccessReview"
    assert body == {
        "spec": {
            "user": USER,
            "uid": "u-1",
            "groups": ["system:serviceaccounts", "system:serviceaccounts:team-a"],
            "extra": {"authentication.kubernetes.io/pod-name": ["p-1"]},
            "resourceAttributes": {
                "group": "herald.dev",
                "resource": "publishingtargets",
                "subresource": "publish",
                "verb": "create",
                "namespace": "team-a",
                "name": "hook",
            },
        }
    }


async def test_denied_names_the_missing_permission_and_where_to_bind_it() -> None:
    api, clock = FakeApi(), Clock()
    auth = make(api, clock)
    identity = await auth.authenticate(TOKEN)
    with pytest.raises(Forbidden) as refused:
        await auth.authorize(identity, "create", "team-b", "hook")
    assert refused.value.http_status == 403
    message = str(refused.value)
    assert message.startswith(
        f"{USER} may not create publishingtargets/publish.herald.dev 'hook' in namespace 'team-b'"
    )
    assert "RoleBinding in namespace 'team-b'" in message
    assert "publisher" in message
    with pytest.raises(Forbidden) as cluster_wide:
        await auth.authorize(identity, "get", "", "", "publishingtargets/queue")
    assert "in all namespaces" in str(cluster_wide.value)
    assert "ClusterRoleBinding" in str(cluster_wide.value)


async def test_grants_last_the_ttl_refusals_the_denied_ttl() -> None:
    """A removed binding takes effect within the TTL, a new one within the denied TTL."""
    api, clock = FakeApi(), Clock()
    auth = make(api, clock)
    identity = await auth.authenticate(TOKEN)
    await auth.authorize(identity, "create", "team-a", "hook")
    api.grants.clear()  # the RoleBinding is deleted
    clock.now += 29
    await auth.authorize(identity, "create", "team-a", "hook")  # still cached
    clock.now += 2
    with pytest.raises(Forbidden):
        await auth.authorize(identity, "create", "team-a", "hook")
    api.grants.add((USER, "create", "publishingtargets/publish", "team-a", "hook"))
    clock.now += 4
    with pytest.raises(Forbidden):  # the refusal is remembered...
        await auth.authorize(identity, "create", "team-a", "hook")
    clock.now += 2  # ...for the denied TTL only
    await auth.authorize(identity, "create", "team-a", "hook")


async def test_decisions_are_per_identity_verb_namespace_and_name() -> None:
    api, clock = FakeApi(), Clock()
    auth = make(api, clock)
    a = Identity.of(USER, groups=["g"])
    other_groups = Identity.of(USER, groups=["g", "admins"])
    api.grants.add((USER, "create", "publishingtargets/publish", "team-a", "other"))
    await auth.authorize(a, "create", "team-a", "hook")
    await auth.authorize(a, "create", "team-a", "other")
    with pytest.raises(Forbidden):
        await auth.authorize(a, "get", "team-a", "hook", "publishingtargets")
    await auth.authorize(other_groups, "create", "team-a", "hook")
    assert reviews(api, "SubjectAccessReview") == 4


async def test_caches_are_bounded() -> None:
    api, clock = FakeApi(), Clock()
    auth = make(api, clock, size=3)
    for n in range(10):
        api.tokens[f"t{n}"] = {"username": f"u{n}"}
        await auth.authenticate(f"t{n}")
    assert len(auth._identities) == 3
    for n in range(10):
        with pytest.raises(Forbidden):
            await auth.authorize(Identity.of(f"u{n}"), "create", "ns", "x")
    assert len(auth._decisions) == 3


async def test_a_burst_waits_for_one_review() -> None:
    api, clock = FakeApi(), Clock()
    auth = make(api, clock)
    identities = await asyncio.gather(*(auth.authenticate(TOKEN) for _ in range(20)))
    assert len(set(identities)) == 1
    assert reviews(api, "TokenReview") == 1
    await asyncio.gather(
        *(auth.authorize(identities[0], "create", "team-a", "hook") for _ in range(20))
    )
    assert reviews(api, "SubjectAccessReview") == 1
    assert not auth._asking


@pytest.mark.parametrize(
    "failure",
    [ConnectionRefusedError(111, "Connection refused"), OSError("TLS"), RuntimeError("boom")],
)
async def test_an_api_server_that_fails_is_503_never_a_grant(failure: BaseException) -> None:
    api, clock = FakeApi(), Clock()
    auth = make(api, clock)
    identity = await auth.authenticate(TOKEN)
    api.failure = failure
    with pytest.raises(AuthUnavailable) as away:
        await auth.authorize(identity, "create", "team-a", "hook")
    assert away.value.http_status == 503
    assert away.value.retry_after
    assert "SubjectAccessReview" in str(away.value)
    with pytest.raises(AuthUnavailable):
        await auth.authenticate("another-token")
    # Nothing is cached from a failure: the next answer decides.
    api.failure = None
    await auth.authorize(identity, "create", "team-a", "hook")


async def test_an_api_server_that_does_not_answer_is_503_within_the_timeout() -> None:
    api, clock = FakeApi(), Clock()
    auth = make(api, clock, timeout=0.2)
    api.hang = threading.Event()
    try:
        with pytest.raises(AuthUnavailable) as away:
            await auth.authenticate(TOKEN)
    finally:
        api.hang.set()
    assert "did not answer the TokenReview within 0.2 s (no answer)" in str(away.value)
    assert TOKEN not in str(away.value)


def test_the_worker_without_credentials_fails_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    auth = KubernetesAuth(ttl=1, denied_ttl=1, size=1, timeout=1)
    with pytest.raises(ConfigError, match="HERALD_API_AUTH=kubernetes needs credentials"):
        auth.load()


def test_permission_attributes() -> None:
    assert Permission("get", "publishingtargets/queue").attributes() == {
        "group": "herald.dev",
        "resource": "publishingtargets",
        "subresource": "queue",
        "verb": "get",
    }


def test_every_route_that_needs_a_token_has_a_permission() -> None:
    """A new endpoint gets a row in herald_worker.api.access.ACCESS (without one it needs
    the most a route may: update publishingtargets/queue)."""
    private = {r.operation_id for r in ROUTES if not r.public}
    public = {r.operation_id for r in ROUTES if r.public}
    assert set(ACCESS) == private, (private - set(ACCESS), set(ACCESS) - private)
    assert not public & set(ACCESS)


def test_the_mapping() -> None:
    """Publishing is per target; reading the queue is get, changing it update, on
    publishingtargets/queue in all namespaces."""
    by_method = {(r.method, r.operation_id) for r in ROUTES if not r.public}
    for method, operation in by_method:
        needs = ACCESS[operation]
        if needs.per_target:
            assert needs == PER_TARGET and method == "POST"
            assert operation in {
                "submitJobs",
                "alertmanagerWebhook",
                "alertmanagerWebhookNamespaced",
                "publishEvent",
                "alertmanagerEvents",
            }
        elif method == "GET":
            assert needs == READ, operation
        else:
            assert needs == OPERATE, operation
