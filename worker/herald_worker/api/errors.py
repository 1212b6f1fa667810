"""Errors as the API answers them: ``{"error": {"status", "field", "message"}}`` with a
4xx for anything the client can fix and 503 (with Retry-After) while PostgreSQL is away.
Bad input never yields a 500."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

import psycopg
import psycopg_pool
from aiohttp import web

from herald_core.errors import DATABASE_AWAY, HeraldError, InvalidRequest
from herald_core.json_depth import MAX_DEPTH_CEILING, deeper_than
from herald_queue import db

log = logging.getLogger("herald.api")


def error_response(
    status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"error": {"status": status, "field": field, "message": message}}
    return web.json_response(body, status=status, headers=headers)


def http_error(exc: BaseException) -> web.Response:
    """The response for an exception a handler raised: a Herald error says its own status,
    field, message and Retry-After (:class:`HeraldError`); PostgreSQL's own errors are
    503."""
    if isinstance(exc, HeraldError):
        headers = None if exc.retry_after is None else {"Retry-After": exc.retry_after}
        return error_response(exc.http_status, exc.http_message(), exc.field, headers=headers)
    if isinstance(exc, psycopg.OperationalError) and not db.is_connection_failure(exc):
        # Answered by the server: a lock wait past HERALD_DB_LOCK_TIMEOUT, a conflict
        # still there after its retries, a cancelled statement. Busy, not away.
        return error_response(
            503,
            f"PostgreSQL is busy: {db.what_happened(exc)}; nothing was written. Try again shortly.",
            headers={"Retry-After": "2"},
        )
    if isinstance(exc, psycopg.OperationalError | psycopg_pool.PoolTimeout):
        return error_response(503, DATABASE_AWAY, headers={"Retry-After": "2"})
    raise exc


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(413, f"request body too large: {exc.text}", "body")
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            # Keep what the client may need (Allow on a 405); the body is ours now.
            kept = {
                k: v
                for k, v in exc.headers.items()
                if k.lower() not in ("content-type", "content-length")
            }
            return error_response(exc.status, exc.reason, headers=kept or None)
        raise
    except (HeraldError, psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
        return http_error(exc)
    except psycopg.DataError as exc:  # a value PostgreSQL cannot hold (a NUL in a name...)
        return error_response(400, f"a value in the request cannot be stored: {exc}")


async def read_json(
    request: web.Request,
    loads: Callable[[bytes], object] = json.loads,
    *,
    max_depth: int = MAX_DEPTH_CEILING + 2,
) -> object:
    """The request's JSON body, decoded by ``loads``; refused (400) when it is not JSON or
    nests deeper than ``max_depth``, checked on the bytes before anything is decoded."""
    if request.content_type not in ("application/json", "") and not request.content_type.endswith(
        "+json"
    ):
        raise InvalidRequest(
            "Content-Type", f"must be application/json, got {request.content_type}"
        )
    raw = await request.read()
    if not raw.strip():
        raise InvalidRequest("body", "is empty; expected a JSON document")
    depth = deeper_than(raw, max_depth)
    if depth is not None:
        raise InvalidRequest(
            "body",
            f"is nested {depth} levels deep (arrays and objects), more than the {max_depth} any "
            "request may (a job payload may nest at most HERALD_MAX_PAYLOAD_DEPTH levels)",
        )
    try:
        return loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidRequest("body", f"is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise InvalidRequest("body", "is not UTF-8") from None
    except RecursionError:
        raise InvalidRequest("body", "is nested too deeply") from None
