"""Structured logs. Processes (worker, operator) log JSON lines by default, one object per
line with ``time``, ``level``, ``logger``, ``message`` and the context given in ``extra``
(``action``, ``job``, ``target``...); commands log plain text. HERALD_LOG_FORMAT and
HERALD_LOG_LEVEL override both."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

from herald_core.settings import LogSettings

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# kopf's per-object loggers add their own: the whole OperatorSettings (kilobytes on every
# line), a posting flag, and the object's reference (said as ``object`` instead).
_KOPF = {"settings", "k8s_skip", "k8s_ref"}


def _context(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` context of a record, kopf's object reference as ``object``."""
    context = {
        k: v
        for k, v in vars(record).items()
        if k not in _STANDARD and k not in _KOPF and not k.startswith("_")
    }
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, dict) and ref.get("name"):
        where = f"{ref['namespace']}/{ref['name']}" if ref.get("namespace") else ref["name"]
        context.setdefault("object", f"{ref.get('kind', '')}/{where}".lstrip("/"))
    return context


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        body.update(_context(record))
        if record.exc_info:
            body["error"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in _context(record).items())
        line = f"{record.levelname.lower():7} {record.name}: {record.getMessage()}"
        if extras:
            line += f" [{extras}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: str | None, settings: LogSettings, *, process: bool) -> None:
    """``level`` (--log-level) wins over HERALD_LOG_LEVEL."""
    level_name = (level or settings.log_level or ("info" if process else "warning")).upper()
    fmt = settings.log_format or ("json" if process else "text")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level_name, logging.INFO))
    # Chatty libraries stay at WARNING unless asked for DEBUG.
    if root.level > logging.DEBUG:
        for name in ("aiohttp.access", "kubernetes", "urllib3", "psycopg.pool"):
            logging.getLogger(name).setLevel(max(root.level, logging.WARNING))
        if not process:  # a command reports a lost connection itself, in one line
            logging.getLogger("psycopg.pool").setLevel(max(root.level, logging.ERROR))
