"""The aiohttp application: routes, authentication, errors, request metrics."""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware
from pydantic import SecretStr

from herald_worker.api.context import CONTEXT, ApiContext
from herald_worker.api.errors import error_response, errors_middleware
from herald_worker.api.routes import ROUTES

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

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


def make_app(context: ApiContext) -> web.Application:
    app = web.Application(
        client_max_size=MAX_BODY,
        middlewares=[
            _metrics_middleware,
            errors_middleware,
            _auth_middleware(context.settings.api_token),
        ],
    )
    app[CONTEXT] = context
    app.on_response_prepare.append(_close_when_stopping)
    for route in ROUTES:
        app.router.add_route(route.method, ROUTE_PATTERNS.get(route.path, route.path), route.bind())
    return app
