"""Printing for people (tables) and for programs (``--json``)."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Sequence
from typing import Any


def emit_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, empty: str) -> None:
    print(table(headers, rows) if rows else empty)


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def next_page(command: str, options: Sequence[tuple[str, Any]], cursor: str) -> str:
    """The command that prints the next page: the same filters, and ``--cursor``."""
    words = [command]
    for flag, value in options:
        if value is True:
            words.append(flag)
        elif value not in (None, False):
            words += [flag, shlex.quote(str(value))]
    return f"more: {' '.join([*words, '--cursor', cursor])}"


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 dead letter``, ``2 dead letters``."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def shown(value: Any) -> str:
    """A value of a JSON document as a person reads it in a ``key value`` listing: text as
    is, nothing as ``-``, everything else as JSON (``true``, ``3``, ``{"a": 1}``)."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)
