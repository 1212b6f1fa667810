"""The aiohttp application: routes, authentication, errors, request metrics."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware
from pydantic import SecretStr

from herald_core.errors import Unauthenticated
from herald_worker.api.access import ACCESS, AUTH, IDENTITY, OPERATE
from herald_worker.api.context import CONTEXT, ApiContext
from herald_worker.api.errors import error_response, errors_middleware
from herald_worker.api.routes import ROUTES
from herald_worker.kubeauth import KubernetesAuth
from herald_worker.settings import WorkerSettings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("herald.api")

# Open without a token (route templates): probes, metrics, the API description and the
# public keys receivers verify v1a signatures with.
PUBLIC = frozenset(route.path for route in ROUTES if route.public)
# Request bodies above this are refused with 413 before they are read (per-job payloads
# have their own limit, HERALD_MAX_PAYLOAD_BYTES).
MAX_BODY = 16 * 1024 * 1024

# Path parameters that must not match a sibling's fixed segment: without this,
# /v1/dead-letters/replay also matched /v1/dead-letters/{id} (id "replay"), so that
# OPTIONS or GET on it answered 405 with "Allow: GET,POST" instead of "Allow: POST".
ROUTE_PATTERNS = {"/v1/dead-letters/{id}": "/v1/dead-letters/{id:(?!replay$|stats$)[^/]+}"}

# What a route needs in Kubernetes mode (access.ACCESS), by method and route template; a
# route without a row needs the most a route may (fail closed).
NEEDS = {(route.method, route.path): ACCESS.get(route.operation_id, OPERATE) for route in ROUTES}

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods kept as metric label values; any other a client sends counts as "other"."""


def _auth_middleware(token: SecretStr | None) -> Middleware:
    expected = f"Bearer {token.get_secret_value()}".encode() if token else None

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        if expected is None or (resource is not None and resource.canonical in PUBLIC):
            return await handler(request)
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return error_response(
                401,
                "missing or wrong bearer token: send 'Authorization: Bearer <token>' "
                "(HERALD_API_TOKEN)",
                "Authorization",
                headers={"WWW-Authenticate": 'Bearer realm="herald"'},
            )
        return await handler(request)

    return auth


def _unauthorized(message: str) -> web.Response:
    return error_response(
        401, message, "Authorization", headers={"WWW-Authenticate": 'Bearer realm="herald"'}
    )


def _kubernetes_middleware(auth: KubernetesAuth) -> Middleware:
    """HERALD_API_AUTH=kubernetes: the bearer token's identity by TokenReview, then the
    route's permission by SubjectAccessReview (access.ACCESS; the publishing routes check
    each target themselves). A refusal is 401 or 403; an API server that cannot say, 503."""

    @web.middleware
    async def kubernetes_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        if resource is not None and resource.canonical in PUBLIC:
            return await handler(request)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _unauthorized(
                "missing bearer token: send 'Authorization: Bearer <token>' with a Kubernetes "
                "ServiceAccount token (HERALD_API_AUTH=kubernetes)"
            )
        try:
            identity = await auth.authenticate(token)
        except Unauthenticated as exc:
            return _unauthorized(str(exc))
        request[IDENTITY] = identity
        needs = NEEDS.get((request.method, resource.canonical)) if resource is not None else None
        if needs is not None and not needs.per_target:
            await auth.authorize(identity, needs.verb, "", "", needs.resource)
        return await handler(request)

    return kubernetes_auth


def kubernetes_auth(settings: WorkerSettings) -> KubernetesAuth:
    """The authoriser of HERALD_API_AUTH=kubernetes, its credentials loaded (a worker
    without any fails at start)."""
    auth = KubernetesAuth(
        ttl=settings.api_auth_cache_ttl,
        denied_ttl=settings.api_auth_denied_ttl,
        size=settings.api_auth_cache_size,
        timeout=settings.api_auth_timeout,
        audience=settings.api_auth_audience,
    )
    auth.load()
    log.info(
        "API callers authorised by Kubernetes (TokenReview, SubjectAccessReview)",
        extra={
            "action": "listen",
            "cache_ttl": settings.api_auth_cache_ttl,
            "denied_ttl": auth.denied_ttl,
            "audience": settings.api_auth_audience or None,
        },
    )
    if settings.api_token is not None:
        log.warning(
            "HERALD_API_TOKEN is set but not used: HERALD_API_AUTH=kubernetes takes Kubernetes "
            "tokens only",
            extra={"action": "listen"},
        )
    return auth


@web.middleware
async def _metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.monotonic()
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics = request.app[CONTEXT].metrics
        method = request.method if request.method in KNOWN_METHODS else "other"
        metrics.api_requests.labels(name, method, str(status)).inc()
        metrics.api_duration.labels(name).observe(time.monotonic() - started)


async def _close_when_stopping(request: web.Request, response: web.StreamResponse) -> None:
    """A stopping worker answers with ``Connection: close``: a producer's kept-alive
    connection (which kube-proxy keeps sending to this Pod after its endpoint has left the
    Service) is not reused, so its next request opens a connection to another worker
    instead of meeting this one's listener closing (HERALD_SHUTDOWN_DRAIN)."""
    if request.app[CONTEXT].health.stopping:
        response.force_close()
        # The hook runs after aiohttp has written the headers' keep-alive decision: say it
        # too, or the client reuses the connection the server is about to close.
        response.headers[hdrs.CONNECTION] = "close"


def make_app(context: ApiContext, auth: KubernetesAuth | None = None) -> web.Application:
    """The application; with HERALD_API_AUTH=kubernetes, callers are authorised by ``auth``
    (made from the settings when not given)."""
    settings = context.settings
    if settings.api_auth == "kubernetes":
        auth = auth or kubernetes_auth(settings)
        authentication = _kubernetes_middleware(auth)
    else:
        auth = None
        authentication = _auth_middleware(settings.api_token)
    app = web.Application(
        client_max_size=MAX_BODY,
        middlewares=[_metrics_middleware, errors_middleware, authentication],
    )
    app[CONTEXT] = context
    if auth is not None:
        app[AUTH] = auth
        reviews = context.metrics.api_auth_reviews
        auth.observe = lambda review, result: reviews.labels(review, result).inc()
    app.on_response_prepare.append(_close_when_stopping)
    for route in ROUTES:
        app.router.add_route(route.method, ROUTE_PATTERNS.get(route.path, route.path), route.bind())
    return app
