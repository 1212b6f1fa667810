"""W3C trace context: what Herald keeps of a producer's traceparent/tracestate, and what it
ignores (the specification's rules; a bad header never refuses the request)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from herald_core import trace_context
from herald_core.trace_context import TraceContext, from_headers, parse_traceparent

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
GOOD = f"00-{TRACE}-{SPAN}-01"


def test_a_valid_traceparent_is_kept() -> None:
    ctx = from_headers(CIMultiDict({"Traceparent": GOOD, "tracestate": "congo=t61rcWkgMzE"}))
    assert ctx == TraceContext(GOOD, "congo=t61rcWkgMzE")
    assert (ctx.trace_id, ctx.parent_id, ctx.sampled) == (TRACE, SPAN, True)
    assert ctx.headers() == {"traceparent": GOOD, "tracestate": "congo=t61rcWkgMzE"}


def test_no_traceparent_is_no_context() -> None:
    assert from_headers(CIMultiDict({"tracestate": "a=b"})) is None
    assert from_headers(CIMultiDict()) is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "00",
        GOOD.upper(),  # upper-case hex
        f"00-{TRACE}-{SPAN}-0g",
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE}-{SPAN}-01",  # version ff is invalid
        f"00-{TRACE}-{SPAN}-01-extra",  # version 00 is exactly 55 characters
        f"00_{TRACE}_{SPAN}_01",
        f"00-{TRACE[:-1]}-{SPAN}0-01",
        f"0x-{TRACE}-{SPAN}-01",
        f"01-{TRACE}-{SPAN}-01x",  # a later version: field 5 must follow a dash
        "00-" + "a" * 10_000,  # hostile size
        f"00-{TRACE}-{SPAN}-01\x00",
        f"00-{TRACE}-{SPAN}-\u00e901",
    ],
)
def test_an_invalid_traceparent_is_ignored(value: str) -> None:
    assert parse_traceparent(value) is None
    assert from_headers(CIMultiDict({"traceparent": value, "tracestate": "a=b"})) is None


def test_a_later_version_is_read_by_its_first_fields_and_carried_as_version_00() -> None:
    assert parse_traceparent(f"cc-{TRACE}-{SPAN}-03-what-comes-next") == f"00-{TRACE}-{SPAN}-01"
    assert parse_traceparent(f"01-{TRACE}-{SPAN}-00") == f"00-{TRACE}-{SPAN}-00"


def test_unsampled_flags_are_kept() -> None:
    ctx = from_headers(CIMultiDict({"traceparent": f"00-{TRACE}-{SPAN}-00"}))
    assert ctx is not None and not ctx.sampled


def test_two_traceparent_headers_are_invalid() -> None:
    headers = CIMultiDict([("traceparent", GOOD), ("traceparent", GOOD)])
    assert from_headers(headers) is None


def test_tracestate_lines_are_joined_and_spaces_dropped() -> None:
    headers = CIMultiDict(
        [("traceparent", GOOD), ("tracestate", "a=1 , b@v=2"), ("tracestate", ",c=3,")]
    )
    ctx = from_headers(headers)
    assert ctx is not None and ctx.tracestate == "a=1,b@v=2,c=3"


@pytest.mark.parametrize(
    "state",
    [
        "a",  # no =
        "A=1",  # upper-case key
        "a=1,a=2",  # a key twice
        "a=1=",  # = in a value
        "a=" + "x" * 300,  # value too long
        ",".join(f"k{i}=v" for i in range(33)),  # more than 32 members
        "a=" + "x" * 200 + ",b=" + "y" * 200 + ",c=" + "z" * 200,  # over 512 characters
        "a=\u00e9",
    ],
)
def test_an_invalid_tracestate_is_dropped_alone(state: str) -> None:
    ctx = from_headers(CIMultiDict({"traceparent": GOOD, "tracestate": state}))
    assert ctx == TraceContext(GOOD, None)


def test_a_kept_context_fits_the_columns() -> None:
    """herald.jobs checks length(traceparent) = 55 and length(tracestate) <= 512."""
    state = ",".join(f"k{i:02d}=" + "v" * 10 for i in range(32))
    ctx = from_headers(CIMultiDict({"traceparent": GOOD, "tracestate": state}))
    assert ctx is not None and ctx.tracestate == state
    assert len(ctx.traceparent) == trace_context.TRACEPARENT_LENGTH
    assert len(ctx.tracestate or "") <= trace_context.TRACESTATE_MAX
