"""aiohttp's own answers, in the API's JSON error shape.

Before a request reaches the application (and its middlewares), aiohttp's connection
protocol refuses what it cannot parse: a request line or header longer than its limit, a
request line or method that is not HTTP, a malformed header. It answers those itself, in
``text/plain``, and its text quotes the raw bytes (``bytearray(b'/v1/alertmanager/aaa...')``).
:class:`ApiRunner` serves the application with a protocol whose :meth:`handle_error`
answers them as every other error of the API (``herald_worker.api.errors``), in words
that never echo what the client sent.
"""

from __future__ import annotations

from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from herald_worker.api.errors import error_response

LIMIT = 8190
"""aiohttp's limit on a request line and on a header line (bytes), its default."""


def protocol_problem(status: int, exc: BaseException | None) -> str:
    """What was wrong, in words; nothing of the request is quoted."""
    if isinstance(exc, http_exceptions.LineTooLong):
        return (
            f"the request line or a header line is longer than {LIMIT} bytes, the most this "
            "server reads (a target name is at most 317 characters)"
        )
    if isinstance(exc, http_exceptions.BadHttpMethod):
        return "not an HTTP request: the method is not a valid HTTP method"
    if isinstance(exc, http_exceptions.BadStatusLine):
        return "not an HTTP request: the request line is not METHOD PATH HTTP/1.1"
    if isinstance(exc, http_exceptions.InvalidHeader):
        return "a header is malformed (a control character, or no name)"
    if isinstance(exc, http_exceptions.InvalidURLError):
        return "the request's path is not a valid URL"
    if isinstance(exc, http_exceptions.BadHttpMessage):
        return "a malformed HTTP request (its framing or headers could not be read)"
    if status == 504:
        return "the request took too long to handle"
    if status >= 500:
        return "an unexpected error while handling the request (see the worker's log)"
    return "the request could not be read as HTTP"


class JsonErrorProtocol(RequestHandler):
    """aiohttp's protocol, answering its own errors as the API's JSON errors."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own: logs (ServerLog: one line, without the bytes) and refuses when an
        # answer is already under way; its text answer is replaced.
        super().handle_error(request, status, exc, message)
        response = error_response(status, protocol_problem(status, exc))
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return JsonErrorProtocol(self, loop=self._loop, **self._kwargs)


class ApiRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer protocol errors in JSON."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _JsonErrorServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )
