"""Events and what a PublishingTarget subscribes to: event types (with wildcards) and an
optional CEL filter over the event (``spec.subscriptions``).

Event types are dot-separated names (``incident.opened``, ``alertmanager.alert.firing``). A
subscription pattern is an exact type, ``*`` (every type) or a prefix ending in ``.*``
(``incident.*`` matches ``incident.opened`` and ``incident.sla.breached``, not
``incident``).

A filter is a CEL expression (the expression language of Kubernetes' own validation rules),
evaluated by ``cel-python`` (pure Python, the same library the test suite checks the CRDs'
rules with; its ``matches()`` uses RE2, so no regular expression backtracks). It sees one
variable, ``event``: ``event.id``, ``event.type``, ``event.namespace``, ``event.priority``
and ``event.payload`` (the JSON payload as sent). It is compiled and checked when the target
is parsed (``herald targets apply``, the operator, the worker's registry), never first at
delivery: a syntax error, an unknown variable or function, a comprehension inside another,
or an expression beyond the bounds below is a spec error with the compiler's message.

Cost is bounded statically: at most :data:`FILTER_MAX_LENGTH` characters,
:data:`FILTER_MAX_NODES` syntax-tree nodes, :data:`FILTER_MAX_DEPTH` levels of nesting, and
no comprehension (``all``, ``exists``, ``exists_one``, ``map``, ``filter``) nested in
another, so an evaluation is linear in the payload, which is itself bounded
(HERALD_MAX_PAYLOAD_BYTES, HERALD_MAX_PAYLOAD_DEPTH). A filter that fails at evaluation
(a missing field: guard with ``has()``), or yields something other than a boolean, does not
match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from herald_model.event_filter import Filter

EVENT_TYPE_MAX = 128
EVENT_TYPE_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
"""A dot-separated event type: letters, digits, '_' and '-' between the dots."""
EVENT_PATTERN_PATTERN = r"^(\*|[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*(\.\*)?)$"
"""A subscription pattern: an event type, ``*``, or a type prefix followed by ``.*``."""
_TYPE = re.compile(EVENT_TYPE_PATTERN)
_PATTERN = re.compile(EVENT_PATTERN_PATTERN)
MAX_EVENT_TYPES = 64
FILTER_MAX_LENGTH = 1024
FILTER_MAX_NODES = 1000
FILTER_MAX_DEPTH = 256
"""Levels of the syntax tree (about ten per parenthesis): the evaluator recurses on it."""
VARIABLE = "event"
MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})


def type_problem(value: str) -> str | None:
    """Why ``value`` is not an event type, or None."""
    if len(value) > EVENT_TYPE_MAX:
        return f"must be at most {EVENT_TYPE_MAX} characters long, got {len(value)}"
    if not _TYPE.fullmatch(value):
        return (
            "must be a dot-separated event type (letters, digits, '_' and '-' between the "
            "dots, e.g. incident.opened)"
        )
    return None


def pattern_problem(value: str) -> str | None:
    """Why ``value`` is not a subscription pattern, or None."""
    if len(value) > EVENT_TYPE_MAX:
        return f"must be at most {EVENT_TYPE_MAX} characters long, got {len(value)}"
    if not _PATTERN.fullmatch(value):
        return (
            "must be an event type (incident.opened), '*' (every type) or a prefix followed "
            "by '.*' (incident.*); '*' stands only alone or as the last segment"
        )
    return None


def type_matches(pattern: str, event_type: str) -> bool:
    """Whether the subscription ``pattern`` covers ``event_type``."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def any_type_matches(patterns: Iterable[str], event_type: str) -> bool:
    return any(type_matches(p, event_type) for p in patterns)


class FilterError(ValueError):
    """A filter that cannot be compiled, with the compiler's (or the bounds') message."""


def compile_filter(source: str) -> Filter:
    """``source`` compiled and checked; :class:`FilterError` says why not.

    The CEL library is imported on first use, so a process whose targets have no filter
    never loads it: its ~18,000 objects made each full garbage collection of a busy worker
    about 10 ms longer."""
    from herald_model import event_filter

    return event_filter.compile_filter(source)


def to_cel(event: Mapping[str, Any]) -> Any:
    """``event`` as CEL values (convert once, then :meth:`Filter.matches_cel` each filter)."""
    from herald_model import event_filter

    return event_filter.to_cel(event)


MATCH_BUDGET = 10_000
"""The most an event's filters may cost (:func:`cost`): one comprehension over 5,000
values, about 0.7 s of one core with cel-python (up to about 2 s on a loaded machine),
spent in a thread beside the API's event loop."""


def payload_values(payload: Any, limit: int) -> int:
    """How many JSON values ``payload`` holds (itself, and every member and item, at any
    depth), counting no further than ``limit + 1``."""
    count = 0
    stack = [payload]
    while stack and count <= limit:
        value = stack.pop()
        count += 1
        if isinstance(value, Mapping):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return count


def cost(filters: Iterable[Filter], values: int) -> int:
    """The estimated cost of evaluating ``filters`` over an event whose payload holds
    ``values`` JSON values: the payload is converted once (one unit a value) and each
    comprehension may visit every value (one unit each). Linear in the payload: no
    comprehension nests in another."""
    listed = list(filters)
    if not listed:
        return 0
    return values * (1 + sum(f.comprehensions for f in listed))


def event_view(
    *, event_id: str, event_type: str, namespace: str, priority: str, payload: Any
) -> dict[str, Any]:
    """The ``event`` a filter sees."""
    return {
        "id": event_id,
        "type": event_type,
        "namespace": namespace,
        "priority": priority,
        "payload": payload,
    }
