"""The chart README's values table is generated from values.schema.json (descriptions) and
values.yaml (defaults), and stays in step with them (scripts/chart_values_table.py)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.helpers import ROOT

CHART = ROOT / "deploy" / "helm" / "herald"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "chart_values_table", ROOT / "scripts" / "chart_values_table.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def rows(readme: str) -> dict[str, tuple[str, str]]:
    found = {}
    for line in readme.splitlines():
        if line.startswith("| `"):
            value, shown, description = (cell.strip() for cell in line.strip("|").split(" | "))
            found[value.strip("`")] = (shown, description)
    return found


def test_the_readme_table_is_the_generated_one() -> None:
    readme = (CHART / "README.md").read_text("utf-8")
    assert generator().render(readme) == readme, "run: python scripts/chart_values_table.py"


def test_the_table_shows_the_shipped_defaults() -> None:
    """The defaults that were once documented wrong, read from the README as a user reads it."""
    table = rows((CHART / "README.md").read_text("utf-8"))
    assert table["operator.scaling.enabled"][0] == "`true`"
    assert table["metrics.prometheusRule.enabled"][0] == "`false`"
    assert table["migrations.enabled"][0] == "`true`"
    assert table["worker.serviceAccount.create"][0] == "`true`"


def test_a_changed_default_puts_the_readme_out_of_step(tmp_path: Path) -> None:
    chart = tmp_path / "herald"
    for name in ("README.md", "values.yaml", "values.schema.json"):
        chart.mkdir(exist_ok=True)
        shutil.copy(CHART / name, chart / name)
    values = yaml.safe_load((chart / "values.yaml").read_text("utf-8"))
    assert values["operator"]["scaling"]["enabled"] is True
    values["operator"]["scaling"]["enabled"] = False
    (chart / "values.yaml").write_text(yaml.safe_dump(values), "utf-8")
    module = generator()
    assert module.main(["--check", "--chart", str(chart)]) == 1
    assert module.main(["--chart", str(chart)]) == 0
    assert rows((chart / "README.md").read_text("utf-8"))["operator.scaling.enabled"][0] == (
        "`false`"
    )
    assert module.main(["--check", "--chart", str(chart)]) == 0


def test_every_value_in_the_schema_has_a_description(tmp_path: Path) -> None:
    chart = tmp_path / "herald"
    chart.mkdir()
    shutil.copy(CHART / "values.yaml", chart / "values.yaml")
    schema = json.loads((CHART / "values.schema.json").read_text("utf-8"))
    rule = schema["properties"]["metrics"]["properties"]["prometheusRule"]
    del rule["properties"]["enabled"]["description"]
    (chart / "values.schema.json").write_text(json.dumps(schema), "utf-8")
    with pytest.raises(SystemExit, match=r"metrics\.prometheusRule\.enabled has no description"):
        generator().table(chart)
    assert all(description for _, description in rows(generator().table()).values())
