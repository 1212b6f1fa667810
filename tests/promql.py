"""The metric names a PromQL expression selects, by a small lexer (what a dashboard or a
rule test needs; promtool checks the syntax itself, see promtool_check).

Skipped: string literals, label matchers ``{...}``, ranges and subqueries ``[...]``,
numbers and durations, the label lists after by/without/on/ignoring/group_left/group_right,
function and aggregation names (an identifier followed by ``(``, or an aggregation by
its modifier), and keywords."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

import yaml

_TOKEN = re.compile(
    r"""
      (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    | (?P<matchers>\{(?:"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|[^}"'])*\})
    | (?P<range>\[[^\]]*\])
    | (?P<number>(?:0x[0-9a-fA-F]+|[0-9][0-9.eE+-]*[a-z]*)+)
    | (?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<space>\s+)
    | (?P<other>.)
    """,
    re.VERBOSE,
)
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2", "start", "end"}
LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}  # fmt: skip


def _tokens(expr: str) -> list[tuple[str, str]]:
    return [
        (m.lastgroup or "", m.group())
        for m in _TOKEN.finditer(expr)
        if m.lastgroup not in ("space", "string", "matchers", "range", "number")
    ]


def metric_names(expr: str) -> set[str]:
    tokens = _tokens(expr)
    names: set[str] = set()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "name" and text.lower() in LABEL_LISTS:
            i += 1
            if following == "(":  # skip the label list
                while i < len(tokens) and tokens[i][1] != ")":
                    i += 1
        elif text in AGGREGATIONS and following.lower() in ("by", "without"):
            pass  # `sum by (x) (...)`: the aggregation, then its label list
        elif kind == "name" and following != "(" and text.lower() not in KEYWORDS:
            names.add(text)
        i += 1
    return names


GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$namespace": "herald",
    "$target": ".*",
}


def without_grafana_variables(expr: str) -> str:
    for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(variable, value)
    return expr


def promtool_check(promtool: str, exprs: Iterable[str], tmp: Path) -> None:
    """Each expression parses, as promtool (Prometheus' own parser) reads a recording rule."""
    rules = [{"record": f"check:expr_{n}", "expr": e} for n, e in enumerate(exprs)]
    path = tmp / "exprs.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
