"""Schemathesis hooks for tests/integration/worker/test_fuzz.py (loaded by path through
SCHEMATHESIS_HOOKS, in the schemathesis process).

They tell the generator what a JSON Schema cannot: a time window's failedBefore is later
than its failedAfter (the server refuses the others, as documented). And they point half
of the valid submissions at a registered target, so that jobs are created and the stateful
phase has real ids to follow from one call to the next.
"""

from __future__ import annotations

import datetime as dt
import json
import zlib
from typing import Any

import schemathesis
from schemathesis.generation import GenerationMode

REGISTERED = ("hook", "default/hook", "reject")


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None


def _empty_window(where: Any) -> bool:
    if not isinstance(where, dict):
        return False
    after, before = _time(where.get("failedAfter")), _time(where.get("failedBefore"))
    try:
        return after is not None and before is not None and before <= after
    except TypeError:  # one naive, one aware: not a valid pair anyway
        return False


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    return not (_empty_window(case.query) or _empty_window(case.body))


def _pick(value: Any) -> int:
    """A deterministic choice (derandomized runs repeat exactly)."""
    return zlib.crc32(json.dumps(value, sort_keys=True, default=str).encode())


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    if case.meta is None or case.meta.generation.mode is not GenerationMode.POSITIVE:
        return case
    if case.operation.path == "/v1/jobs" and case.method.upper() == "POST":
        items = case.body if isinstance(case.body, list) else [case.body]
        for item in items:
            if isinstance(item, dict) and _pick(item) % 2 == 0:
                item["target"] = REGISTERED[_pick(item) % len(REGISTERED)]
    if case.path_parameters and "target" in case.path_parameters and _pick(case.body) % 2 == 0:
        case.path_parameters["target"] = "hook"
    return case
