"""Durations as people write them: ``90``, ``90s``, ``15m``, ``24h``, ``30d`` or ``1h30m``.

Settings (HERALD_LEASE...), command-line options (``--older-than``) and API query
parameters all read them with :func:`parse_duration`.
"""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

MAX_DURATION = 100 * 365.25 * 86400
"""The longest duration accepted anywhere (100 years): beyond it, times overflow."""

FORMS = "seconds, or e.g. 90s, 15m, 24h, 30d"
"""The accepted forms, as error messages say them."""


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises ValueError with the accepted forms."""
    raw = text.strip().lower()
    try:
        total = float(raw)
    except ValueError:
        position, total = 0, 0.0
        for match in _PART.finditer(raw):
            if match.start() != position:
                break
            total += float(match[1]) * _UNIT_SECONDS[match[2]]
            position = match.end()
        if position != len(raw) or not raw:
            raise ValueError(f"{text!r} is not a duration (use {FORMS})") from None
    if not 0 <= total <= MAX_DURATION:  # also false for NaN
        raise ValueError(f"{text!r} is not a duration from 0 to 100 years")
    return total


def format_duration(seconds: float) -> str:
    """``90`` -> ``90s``, ``86400`` -> ``24h``, ``2592000`` -> ``30d``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
