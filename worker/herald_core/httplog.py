"""The logger Herald's HTTP servers (the worker's API, the operator's /metrics) give
aiohttp in place of ``aiohttp.server``.

A request aiohttp's parser refuses (a NUL or another control character in a header or in
the request line, a header too long...) is answered 400 by aiohttp, which then logs the
client's mistake at ERROR with a traceback, quoting the offending bytes: an
``Authorization: Bearer ...`` line among them. Here it is one line at INFO naming the
problem, without the bytes; every other error is logged as aiohttp logs it.

No aiohttp import (the queue library stays free of it): the parser's errors are known by
their shape, an HTTP status ``code`` below 500 and a ``message``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

SERVER_LOGGER = "aiohttp.server"


def _client_error(exc: object) -> tuple[int, str] | None:
    code, message = getattr(exc, "code", None), getattr(exc, "message", None)
    if not isinstance(code, int) or not 400 <= code < 500 or not isinstance(message, str):
        return None
    first = message.strip().splitlines()[0].strip().rstrip(":") if message.strip() else ""
    return code, first or type(exc).__name__


class ServerLog(logging.LoggerAdapter[logging.Logger]):
    """Pass as ``logger=`` to ``aiohttp.web.AppRunner``."""

    def __init__(self, name: str = SERVER_LOGGER) -> None:
        super().__init__(logging.getLogger(name), {})

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return msg, kwargs

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kw: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        refused = _client_error(exc)
        if refused is None:
            self.logger.exception(msg, *args, exc_info=exc_info, **kw)
            return
        code, reason = refused
        remote = f" from {args[0]}" if args else ""
        self.logger.info(
            "refused a malformed HTTP request%s: %s (answered %d)",
            remote,
            reason,
            code,
            extra={"action": "http", "error": type(exc).__name__, "status": code},
        )
