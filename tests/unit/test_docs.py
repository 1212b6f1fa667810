"""The documentation says what the code does: the configuration tables
(docs/configuration.md), the test command CI runs (README), and the failure classification
table (docs/delivery.md)."""

from __future__ import annotations

import re

from herald_delivery.failures import PERMANENT_STATUSES, TRANSIENT_STATUSES
from herald_tools.cli.settings_doc import tables
from tests.helpers import ROOT

README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()
DELIVERY = (ROOT / "docs" / "delivery.md").read_text()


def test_configuration_tables_are_generated_from_the_settings() -> None:
    block = CONFIGURATION.split("<!-- settings:begin -->\n", 1)[1].split("<!-- settings:end -->")[0]
    assert block == tables(), (
        "run: python -m herald_tools.cli.settings_doc, paste into docs/configuration.md"
    )


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    [command] = re.findall(r'^TEST_COMMAND="(.+)"$', ci, flags=re.M)
    assert f"```sh\n{command}\n```" in README


def test_failure_table_matches_the_classifier() -> None:
    rows = {
        line.split("|")[2].strip(): line.split("|")[1]
        for line in DELIVERY.splitlines()
        if line.startswith("| ") and line.count("|") == 4
    }
    transient = {int(n) for n in re.findall(r"\b(\d{3})\b", rows["transient"])}
    permanent = {int(n) for n in re.findall(r"\b(\d{3})\b", rows["permanent"])}
    assert transient == TRANSIENT_STATUSES
    assert permanent == PERMANENT_STATUSES


def test_worker_metrics_are_documented() -> None:
    """docs/metrics.md lists every metric the worker exports, with its labels."""
    from tests.e2e.chart_helpers import WORKER_METRICS

    text = (ROOT / "docs" / "metrics.md").read_text("utf-8")
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `(herald_[a-z_]+)` \| [a-z]+ \| ([^|]+) \|", text, re.M)
    }
    assert set(rows) == set(WORKER_METRICS)
    for name, (_, labels) in WORKER_METRICS.items():
        assert rows[name].strip() == (", ".join(labels) or "—"), name
