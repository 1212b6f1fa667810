"""Every alert of the chart's PrometheusRule links to its section of docs/troubleshooting.md
(the annotation runbook_url), and that section exists. tests/e2e/test_chart_render.py checks the
rendered rule with helm and promtool."""

from __future__ import annotations

import re

import yaml

from tests.helpers import ROOT

CHART = ROOT / "deploy" / "helm" / "herald"
RULE = (CHART / "templates" / "prometheusrule.yaml").read_text("utf-8")
TROUBLESHOOTING = (ROOT / "docs" / "troubleshooting.md").read_text("utf-8")


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", markdown, re.M)}


def alerts() -> dict[str, list[str]]:
    """Each alert of the template, with the runbook_url annotations of its rule."""
    found: dict[str, list[str]] = {}
    for block in re.split(r"^\s+- alert: ", RULE, flags=re.M)[1:]:
        name = block.split("\n", 1)[0].strip()
        found[name] = re.findall(r"^\s+runbook_url: (.+)$", block, re.M)
    return found


def test_every_alert_links_to_its_section() -> None:
    found = alerts()
    assert len(found) == 5, found
    for name, urls in found.items():
        assert urls == [f"{{{{ $r.runbookBaseUrl }}}}#{slug(name)}"], name
        assert slug(name) in anchors(TROUBLESHOOTING), f"docs/troubleshooting.md: no ## {name}"


def test_the_default_base_url_is_the_troubleshooting_page() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text("utf-8"))
    base = values["metrics"]["prometheusRule"]["runbookBaseUrl"]
    assert base.startswith("https://") and base.endswith("/docs/troubleshooting.md")
    assert "#" not in base


def test_the_page_names_every_alert_and_its_links_resolve() -> None:
    """No section for an alert that is gone, and every #anchor of the page exists."""
    sections = {m.group(1) for m in re.finditer(r"^## (Herald[A-Za-z]+)$", TROUBLESHOOTING, re.M)}
    assert sections == set(alerts())
    for target in re.findall(r"\]\(#([^)]+)\)", TROUBLESHOOTING):
        assert target in anchors(TROUBLESHOOTING), target


def test_slug_is_githubs() -> None:
    assert slug("HeraldWorkerNotReady") == "heraldworkernotready"
    assert slug("A target is not Ready") == "a-target-is-not-ready"
    assert slug("Cannot reach PostgreSQL") == "cannot-reach-postgresql"
