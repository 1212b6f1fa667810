"""Kubernetes authentication and authorisation of API callers (``HERALD_API_AUTH=kubernetes``).

The bearer token is a Kubernetes token (a ServiceAccount's, projected into the producer's
Pod): a TokenReview says whose it is, and a SubjectAccessReview whether that identity may do
what the request does, for example ``create`` on ``publishingtargets/publish`` (group
``herald.dev``) named after the target, in the target's namespace. What each route needs is
written in :mod:`herald_worker.api.access`; docs/authentication.md explains both to users.

Both answers are cached for a bounded time and count (``cachetools.TLRUCache``): identities
by the SHA-256 of the token (the token itself is never a key, a log field or part of a
message), decisions by user, uid, groups, extra, verb, resource, namespace and name.
Refusals are cached for a shorter time than grants, so a new RoleBinding takes effect
quickly, and a removed one within ``HERALD_API_AUTH_CACHE_TTL``.

Every call to the API server is bounded by ``HERALD_API_AUTH_TIMEOUT``: an API server that
cannot be reached or does not answer makes the request fail with 503 (never an open door).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, ClassVar

from cachetools import TLRUCache

from herald_core.errors import (
    AuthUnavailable,
    ConfigError,
    Forbidden,
    HeraldError,
    Unauthenticated,
)

log = logging.getLogger("herald.api.auth")

GROUP = "herald.dev"
"""The API group of the resources the reviews name (Herald's custom resources)."""


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who a TokenReview said the token belongs to (what a SubjectAccessReview is asked)."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def of(
        cls,
        username: str,
        uid: str | None = None,
        groups: Sequence[str] | None = None,
        extra: Mapping[str, Sequence[str]] | None = None,
    ) -> Identity:
        return cls(
            username,
            uid or "",
            tuple(sorted(groups or ())),
            tuple(sorted((k, tuple(v)) for k, v in (extra or {}).items())),
        )


@dataclasses.dataclass(frozen=True)
class Permission:
    """One RBAC permission on a Herald resource: ``verb`` on ``resource`` (may name a
    subresource: ``publishingtargets/publish``), in ``namespace`` ("" for every namespace:
    granted by a ClusterRoleBinding), on the object ``name`` ("" for any)."""

    verb: str
    resource: str
    namespace: str = ""
    name: str = ""

    def describe(self) -> str:
        what = f"{self.verb} {self.resource}.{GROUP}"
        if self.name:
            what += f" {self.name!r}"
        if self.namespace:
            return f"{what} in namespace {self.namespace!r}"
        return f"{what} in all namespaces (a ClusterRoleBinding)"

    def attributes(self) -> dict[str, str]:
        resource, _, subresource = self.resource.partition("/")
        attrs = {"group": GROUP, "resource": resource, "verb": self.verb}
        if subresource:
            attrs["subresource"] = subresource
        if self.namespace:
            attrs["namespace"] = self.namespace
        if self.name:
            attrs["name"] = self.name
        return attrs


def token_key(token: str) -> str:
    """The cache key of a token: its SHA-256 (the token itself is never kept as a key)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class _Entry:
    value: Any
    ttl: float


def _ttl(_key: object, entry: _Entry, now: float) -> float:
    return now + entry.ttl


Call = Callable[[str, dict[str, Any]], Any]
"""A synchronous call to the API server: ("tokenreview" | "subjectaccessreview", body) ->
the answer's ``status`` as a dict. Tests substitute their own."""


class KubernetesAuth:
    """TokenReviews and SubjectAccessReviews through the Kubernetes API (in-cluster
    ServiceAccount, else kubeconfig: as :class:`herald_worker.secrets.KubernetesSecrets`),
    with bounded caches. One per worker process."""

    UNAVAILABLE: ClassVar[str] = (
        "the Kubernetes API did not answer the {what} within {timeout:g} s ({reason}); "
        "nothing was done. Retry later (HERALD_API_AUTH=kubernetes)"
    )

    def __init__(
        self,
        *,
        ttl: float,
        denied_ttl: float,
        size: int,
        timeout: float,
        audience: str = "",
        call: Call | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.denied_ttl = min(denied_ttl, ttl)
        self.timeout = timeout
        self.audience = audience
        self._call = call
        self.observe: Callable[[str, str], None] = lambda review, result: None
        """Told each review and its result (allowed, denied, error): the worker counts them."""
        self._identities: TLRUCache[str, _Entry] = TLRUCache(size, ttu=_ttl, timer=clock)
        self._decisions: TLRUCache[tuple[Any, ...], _Entry] = TLRUCache(size, ttu=_ttl, timer=clock)
        self._asking: dict[tuple[Any, ...], asyncio.Task[_Entry]] = {}
        """Reviews under way: a burst of requests with one token (or one question) waits
        for one review instead of sending one each."""

    async def _once(
        self, key: tuple[Any, ...], review: Callable[[], Coroutine[Any, Any, _Entry]]
    ) -> _Entry:
        task = self._asking.get(key)
        if task is None:
            task = asyncio.ensure_future(review())
            self._asking[key] = task

            def done(finished: asyncio.Task[_Entry]) -> None:
                self._asking.pop(key, None)
                if not finished.cancelled():
                    finished.exception()  # retrieved even if every waiter went away

            task.add_done_callback(done)
        return await asyncio.shield(task)

    # -- the API server

    def load(self) -> None:
        """Load the credentials (in-cluster ServiceAccount, else kubeconfig) now, so that a
        worker without any fails at start rather than at its first request."""
        if self._call is None:
            self._call = _kubernetes_call(self.timeout)

    async def _review(self, what: str, body: dict[str, Any]) -> dict[str, Any]:
        self.load()
        call = self._call
        assert call is not None
        try:
            async with asyncio.timeout(self.timeout):
                status: dict[str, Any] = await asyncio.to_thread(call, what, body)
        except TimeoutError:
            reason = "no answer"
        except HeraldError:
            raise
        except Exception as exc:  # connection refused, TLS, HTTP 5xx, 403 for the worker...
            reason = _reason(exc)
        else:
            return status
        self.observe(what, "error")
        log.warning(
            "a review by the Kubernetes API failed",
            extra={"action": "authenticate", "review": what, "error": reason},
        )
        raise AuthUnavailable(
            self.UNAVAILABLE.format(what=what, timeout=self.timeout, reason=reason)
        )

    # -- authentication

    async def authenticate(self, token: str) -> Identity:
        """The identity of ``token`` (TokenReview); :class:`Unauthenticated` if the API server
        does not accept it, :class:`AuthUnavailable` if it cannot say."""
        key = token_key(token)
        cached = self._identities.get(key)
        if cached is None:
            cached = await self._once(("token", key), lambda: self._token_review(token))
            self._identities[key] = cached
        if isinstance(cached.value, Identity):
            return cached.value
        raise Unauthenticated(str(cached.value))

    async def _token_review(self, token: str) -> _Entry:
        spec: dict[str, Any] = {"token": token}
        if self.audience:
            spec["audiences"] = [self.audience]
        status = await self._review("TokenReview", {"spec": spec})
        self.observe("TokenReview", "allowed" if status.get("authenticated") else "denied")
        if not status.get("authenticated"):
            problem = "the bearer token is not a valid Kubernetes token"
            if self.audience:
                problem += f" for the audience {self.audience!r}"
            problem += " (TokenReview refused it: expired, revoked, or of another cluster)"
            return _Entry(problem, self.denied_ttl)
        user = status.get("user") or {}
        identity = Identity.of(
            str(user.get("username", "")), user.get("uid"), user.get("groups"), user.get("extra")
        )
        return _Entry(identity, self.ttl)

    # -- authorisation

    async def authorize(
        self,
        identity: Identity,
        verb: str,
        namespace: str,
        name: str,
        resource: str = "publishingtargets/publish",
    ) -> None:
        """Return if ``identity`` may ``verb`` the Herald ``resource`` ``name`` in
        ``namespace`` ("" for all namespaces / any name), else raise :class:`Forbidden`
        naming the permission (:class:`AuthUnavailable` if the API server cannot say).

        The one authorisation check: each route calls it (the per-target ones once per
        target, e.g. a fan-out to several targets once for each)."""
        permission = Permission(verb, resource, namespace, name)
        key = (identity, permission)
        cached = self._decisions.get(key)
        if cached is None:
            cached = await self._once(key, lambda: self._access_review(identity, permission))
            self._decisions[key] = cached
        if cached.value is not True:
            raise Forbidden(str(cached.value))

    async def _access_review(self, identity: Identity, permission: Permission) -> _Entry:
        spec: dict[str, Any] = {
            "user": identity.username,
            "groups": list(identity.groups),
            "resourceAttributes": permission.attributes(),
        }
        if identity.uid:
            spec["uid"] = identity.uid
        if identity.extra:
            spec["extra"] = {k: list(v) for k, v in identity.extra}
        status = await self._review("SubjectAccessReview", {"spec": spec})
        if status.get("allowed") and not status.get("denied"):
            self.observe("SubjectAccessReview", "allowed")
            return _Entry(True, self.ttl)
        self.observe("SubjectAccessReview", "denied")
        where = (
            f"a RoleBinding in namespace {permission.namespace!r}"
            if permission.namespace
            else "a ClusterRoleBinding"
        )
        message = (
            f"{identity.username} may not {permission.describe()}: bind a role granting it "
            f"(for publishing, the chart's ClusterRole <release>-publisher) to it with {where}"
        )
        log.info(
            "refused",
            extra={
                "action": "authorize",
                "user": identity.username,
                "permission": permission.describe(),
            },
        )
        return _Entry(message, self.denied_ttl)


def _reason(exc: BaseException) -> str:
    """What went wrong, without anything a request carried (no token, no body)."""
    status = getattr(exc, "status", None)
    if isinstance(status, int) and status:
        reason = getattr(exc, "reason", "") or ""
        return f"HTTP {status} {reason}".strip()
    return type(exc).__name__


def _kubernetes_call(timeout: float) -> Call:
    """The call to the API server through the Kubernetes client, with its own configuration
    (in-cluster first, kubeconfig second), no retries and ``timeout`` on connect and read."""
    import kubernetes

    config = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        try:
            kubernetes.config.load_kube_config(client_configuration=config)  # type: ignore[no-untyped-call]
        except (kubernetes.config.ConfigException, OSError) as exc:
            raise ConfigError(
                "HERALD_API_AUTH=kubernetes needs credentials for the Kubernetes API (the "
                f"in-cluster ServiceAccount, or a kubeconfig): {exc}"
            ) from None
    config.retries = 0  # one attempt: the caller bounds the wait and answers 503
    client = kubernetes.client.ApiClient(config)
    authn = kubernetes.client.AuthenticationV1Api(client)
    authz = kubernetes.client.AuthorizationV1Api(client)

    def call(what: str, body: dict[str, Any]) -> Any:
        k = kubernetes.client
        spec = body["spec"]
        answer: Any
        if what == "TokenReview":
            review = k.V1TokenReview(
                spec=k.V1TokenReviewSpec(token=spec["token"], audiences=spec.get("audiences"))
            )
            answer = authn.create_token_review(review, _request_timeout=(timeout, timeout))
        else:
            attrs = spec["resourceAttributes"]
            access = k.V1SubjectAccessReview(
                spec=k.V1SubjectAccessReviewSpec(
                    user=spec["user"],
                    groups=spec["groups"],
                    uid=spec.get("uid"),
                    extra=spec.get("extra"),
                    resource_attributes=k.V1ResourceAttributes(**attrs),
                )
            )
            answer = authz.create_subject_access_review(access, _request_timeout=(timeout, timeout))
        return client.sanitize_for_serialization(answer.status) or {}  # type: ignore[no-untyped-call]

    return call
