"""The PromQL metric-name lexer of tests/promql.py, on the shapes the dashboard uses."""

from __future__ import annotations

import pytest

from tests.promql import metric_names, without_grafana_variables


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('sum(rate(a_total{x="y", z=~"by|on"}[5m]))', {"a_total"}),
        ("histogram_quantile(0.95, sum by (le, target) (rate(b_bucket[5m])))", {"b_bucket"}),
        ("topk(5, sum by (target) (increase(c_total[1h]))) > 0", {"c_total"}),
        ("max(d) and max(e) > 0", {"d", "e"}),
        ("f / on (target) group_left (name) g offset 5m", {"f", "g"}),
        ("count(h == 1) or vector(0)", {"h"}),
        ('100 * i / (i + j{reason=~"a|b"})', {"i", "j"}),
        ("k:recorded:rate5m * 1e3", {"k:recorded:rate5m"}),
        ('sum without (pod) (l{q="}"})', {"l"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_grafana_variables_are_replaced() -> None:
    assert without_grafana_variables('rate(a{n="$namespace"}[$__rate_interval])') == (
        'rate(a{n="herald"}[5m])'
    )
