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

import dataclasses
import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

import celpy
import celpy.celtypes
import celpy.evaluation
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedToken

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
_GLOBAL_MACROS = frozenset({"has", "dyn"})
_FUNCTIONS = (
    frozenset(name for name in celpy.evaluation.base_functions if name.isidentifier())
    | _GLOBAL_MACROS
)


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


@dataclasses.dataclass(frozen=True)
class Filter:
    """A compiled filter: call :meth:`matches` with an event."""

    source: str
    comprehensions: int
    """Comprehensions (all, exists, ...) in the expression: each may visit every value of
    the payload once (see :func:`cost`)."""
    _program: Any = dataclasses.field(repr=False, compare=False)

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Whether ``event`` (id, type, namespace, priority, payload) passes the filter. An
        evaluation error or a non-boolean result is False."""
        return self.matches_cel(to_cel(event))

    def matches_cel(self, event: Any) -> bool:
        """:meth:`matches` for an event already converted by :func:`to_cel` (convert once,
        evaluate every filter)."""
        try:
            result = self._program.evaluate({VARIABLE: event})
        except (celpy.evaluation.CELEvalError, RecursionError, ValueError, TypeError):
            return False
        return isinstance(result, celpy.celtypes.BoolType) and bool(result)


def to_cel(event: Mapping[str, Any]) -> Any:
    """``event`` as CEL values."""
    return json_to_cel(dict(event))


_ENV = celpy.Environment()


@functools.lru_cache(maxsize=1024)
def compile_filter(source: str) -> Filter:
    """``source`` compiled and checked; :class:`FilterError` says why not."""
    if len(source) > FILTER_MAX_LENGTH:
        raise FilterError(
            f"is {len(source)} characters long, more than the limit of {FILTER_MAX_LENGTH}"
        )
    if not source.strip():
        raise FilterError("is empty: leave filter out to take every event of the types")
    try:
        tree = _ENV.compile(source)
    except CELParseError as exc:
        raise FilterError(f"is not valid CEL: {_parse_problem(exc)}") from None
    except RecursionError:
        raise FilterError(f"is nested too deeply (at most {FILTER_MAX_DEPTH} levels)") from None
    comprehensions = _check(tree)
    try:
        program = _ENV.program(tree)
    except Exception as exc:  # the builder may refuse what the grammar took
        raise FilterError(f"is not valid CEL: {_first_line(exc)}") from None
    return Filter(source=source, comprehensions=comprehensions, _program=program)


def _parse_problem(exc: CELParseError) -> str:
    """The compiler's complaint: what it met, and where (line and column)."""
    cause = exc.__context__
    what = "syntax error"
    if isinstance(cause, UnexpectedCharacters):
        what = f"unexpected character {cause.char!r}"
    elif isinstance(cause, UnexpectedToken):
        token = cause.token
        if token.type == "$END":
            what = "unexpected end of expression"
        else:
            what = f"unexpected {str(token)[:40]!r}"
    line, column = getattr(exc, "line", None), getattr(exc, "column", None)
    return f"{what} at line {line}, column {column}" if line and column else what


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def _check(tree: Tree[Token]) -> int:
    """The static checks: size, depth, names, comprehension nesting; the number of
    comprehensions."""
    nodes = 0
    comprehensions_seen = 0
    bound: set[str] = set()
    idents: list[str] = []
    calls: list[str] = []
    stack: list[tuple[Tree[Token], int, int]] = [(tree, 1, 0)]
    while stack:
        node, depth, comprehensions = stack.pop()
        nodes += 1
        if nodes > FILTER_MAX_NODES:
            raise FilterError(
                f"is too large: more than {FILTER_MAX_NODES} syntax-tree nodes (split the "
                "logic, or subscribe to narrower event types)"
            )
        if depth > FILTER_MAX_DEPTH:
            raise FilterError(f"is nested too deeply (more than {FILTER_MAX_DEPTH} levels)")
        inner = comprehensions
        if node.data == "member_dot_arg":
            method = _token(node.children[1])
            calls.append(method)
            if method in MACROS:
                if comprehensions:
                    raise FilterError(
                        f"nests the comprehension {method}() inside another: at most one "
                        "level of all/exists/exists_one/map/filter, so that the cost stays "
                        "linear in the payload"
                    )
                inner = comprehensions + 1
                comprehensions_seen += 1
                variable = _macro_variable(node)
                if variable is not None:
                    bound.add(variable)
        elif node.data == "ident_arg":
            calls.append(_token(node.children[0]))
        elif node.data == "ident":
            idents.append(_token(node.children[0]))
        for child in node.children:
            if isinstance(child, Tree):
                stack.append((child, depth + 1, inner))
    for name in calls:
        if name not in _FUNCTIONS and name not in MACROS:
            raise FilterError(f"calls an unknown function {name}()")
    for name in idents:
        if name != VARIABLE and name not in bound:
            raise FilterError(
                f"refers to an unknown variable {name!r}: the event is 'event' (event.type, "
                "event.id, event.namespace, event.priority, event.payload)"
            )
    return comprehensions_seen


def _token(child: Tree[Token] | Token) -> str:
    return str(child) if isinstance(child, Token) else str(child.data)


def _macro_variable(node: Tree[Token]) -> str | None:
    """The variable a comprehension binds (``x`` in ``list.all(x, x > 0)``)."""
    args = [c for c in node.children[2:] if isinstance(c, Tree)]
    if not args or not args[0].children:
        return None
    first = args[0].children[0]
    for sub in first.iter_subtrees() if isinstance(first, Tree) else ():
        if sub.data == "ident" and sub.children:
            return _token(sub.children[0])
    return None


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
