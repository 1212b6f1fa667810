"""The CEL side of event filters (see :mod:`herald_model.events`): compiling a filter,
checking its static bounds, and evaluating it over an event. Imported only through
:func:`herald_model.events.compile_filter` and :func:`herald_model.events.to_cel`, on first
use."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import celpy
import celpy.celtypes
import celpy.evaluation
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedToken

from herald_model.events import (
    FILTER_MAX_DEPTH,
    FILTER_MAX_LENGTH,
    FILTER_MAX_NODES,
    MACROS,
    VARIABLE,
    FilterError,
)

_GLOBAL_MACROS = frozenset({"has", "dyn"})
_FUNCTIONS = (
    frozenset(name for name in celpy.evaluation.base_functions if name.isidentifier())
    | _GLOBAL_MACROS
)


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
