"""W3C Trace Context (https://www.w3.org/TR/trace-context/): reading a producer's
``traceparent`` and ``tracestate`` headers into a :class:`TraceContext`, the one place
Herald does it. Every route that takes work from a producer calls :func:`from_headers` with
its request's headers; a job keeps what it returns (``herald.jobs.traceparent`` and
``tracestate``) and its delivery attempts continue that trace.

A header that breaks the specification is ignored, as the specification says: the job then
starts no trace of its own (no 4xx: tracing never refuses work). A bad ``tracestate`` is
dropped alone; a bad or repeated ``traceparent`` drops both. Sizes are bounded: a
``traceparent`` longer than :data:`TRACEPARENT_MAX` characters, a ``tracestate`` longer than
:data:`TRACESTATE_MAX` or with more than :data:`TRACESTATE_MEMBERS` members are ignored.

Pure and cheap: no OpenTelemetry import (the SDK is loaded only when export is configured).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Protocol

TRACEPARENT_LENGTH = 55
"""A version-00 ``traceparent``: ``00-<32 hex>-<16 hex>-<2 hex>``."""
TRACEPARENT_MAX = 256
"""A longer ``traceparent`` (a future version may be longer than 55) is ignored."""
TRACESTATE_MAX = 512
"""Characters of ``tracestate`` kept; a longer one is ignored (the specification asks
vendors to propagate at least 512)."""
TRACESTATE_MEMBERS = 32
"""The specification's limit of list members in ``tracestate``."""

_HEX = frozenset("0123456789abcdef")
_KEY = re.compile(
    r"(?:[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})"
)
_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
_OWS = " \t"


@dataclasses.dataclass(frozen=True, slots=True)
class TraceContext:
    """A producer's trace context, valid by construction (:func:`parse`)."""

    traceparent: str
    """Version 00, lower case: ``00-<trace-id>-<parent-id>-<flags>``."""
    tracestate: str | None = None
    """The vendors' list, as received (list members joined by commas), or None."""

    @property
    def trace_id(self) -> str:
        return self.traceparent[3:35]

    @property
    def parent_id(self) -> str:
        return self.traceparent[36:52]

    @property
    def sampled(self) -> bool:
        return bool(int(self.traceparent[53:55], 16) & 1)

    def headers(self) -> dict[str, str]:
        """The headers that carry this context on (unchanged)."""
        if self.tracestate is None:
            return {"traceparent": self.traceparent}
        return {"traceparent": self.traceparent, "tracestate": self.tracestate}


def traceparent_of(trace_id: str, span_id: str, flags: int) -> str:
    """The version-00 ``traceparent`` naming ``span_id`` as the parent."""
    return f"00-{trace_id}-{span_id}-{flags & 0xFF:02x}"


def _hex(text: str) -> bool:
    return bool(text) and all(c in _HEX for c in text)


def parse_traceparent(value: str) -> str | None:
    """``value`` as a version-00 ``traceparent``, or None when it breaks the specification:
    upper-case or non-hex digits, version ff, an all-zero trace or parent id, wrong lengths.
    A later version is read by its first four fields (as the specification says) and
    carried on as version 00."""
    if len(value) > TRACEPARENT_MAX:
        return None
    value = value.strip(_OWS)
    if len(value) < TRACEPARENT_LENGTH:
        return None
    version = value[:2]
    if not _hex(version) or version == "ff":
        return None
    if version == "00" and len(value) != TRACEPARENT_LENGTH:
        return None
    if len(value) > TRACEPARENT_LENGTH and value[TRACEPARENT_LENGTH] != "-":
        return None
    head = value[:TRACEPARENT_LENGTH]
    if head[2] != "-" or head[35] != "-" or head[52] != "-":
        return None
    trace_id, parent_id, flags = head[3:35], head[36:52], head[53:55]
    if not (_hex(trace_id) and _hex(parent_id) and _hex(flags)):
        return None
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    if version != "00":  # only the sampled flag is defined: later flags are not carried
        flags = f"{int(flags, 16) & 1:02x}"
    return f"00-{trace_id}-{parent_id}-{flags}"


def parse_tracestate(values: Iterable[str]) -> str | None:
    """The ``tracestate`` header lines ``values`` joined into one list, or None when it is
    empty, longer than :data:`TRACESTATE_MAX` characters, has more than
    :data:`TRACESTATE_MEMBERS` members, a malformed member or a key twice."""
    members: list[str] = []
    keys: set[str] = set()
    size = 0
    for line in values:
        size += len(line) + 1
        if size > TRACESTATE_MAX + 1:
            return None
        for raw in line.split(","):
            member = raw.strip(_OWS)
            if not member:
                continue
            key, eq, val = member.partition("=")
            if not eq or not _KEY.fullmatch(key) or not _VALUE.fullmatch(val) or key in keys:
                return None
            keys.add(key)
            members.append(member)
            if len(members) > TRACESTATE_MEMBERS:
                return None
    return ",".join(members) or None


def parse(traceparent: Iterable[str], tracestate: Iterable[str] = ()) -> TraceContext | None:
    """A :class:`TraceContext` from the header lines given for each (several lines of
    ``traceparent`` are invalid), or None when ``traceparent`` is absent or invalid."""
    lines = list(traceparent)
    if len(lines) != 1:
        return None
    parent = parse_traceparent(lines[0])
    if parent is None:
        return None
    return TraceContext(parent, parse_tracestate(tracestate))


class MultiHeaders(Protocol):
    """Request headers that may repeat a name (aiohttp's ``request.headers``)."""

    def getall(self, key: str, default: list[str]) -> list[str]: ...


def from_headers(headers: MultiHeaders) -> TraceContext | None:
    """The trace context of an incoming request (case-insensitive header names, as aiohttp
    gives them), or None: what ``POST /v1/jobs``, the Alertmanager receiver and any other
    producer-facing route keep with the jobs they create."""
    parents = headers.getall("traceparent", [])
    if not parents:
        return None
    return parse(parents, headers.getall("tracestate", []))
