"""Every PromQL expression of the Grafana dashboard parses (promtool) and selects only
metric names that a real worker and a real operator export: a scrape of both /metrics, not
a hand-kept list. Also: the panels seed 001 names are there."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from tests.conftest import need_binary
from tests.helpers import ROOT, wait_until
from tests.integration.operator.cluster import (
    PT_URL,
    Emulator,
    RunningOperator,
    create,
    target,
    wait_ready,
)
from tests.integration.worker.harness import metric, parse_metrics, worker
from tests.promql import metric_names, promtool_check, without_grafana_variables

DASHBOARD = ROOT / "deploy/helm/herald/files/dashboard.json"


def expressions() -> dict[str, list[str]]:
    board = json.loads(DASHBOARD.read_text("utf-8"))
    return {
        p["title"]: [t["expr"] for t in p.get("targets", [])]
        for p in board["panels"]
        if p["type"] != "row"
    }


async def test_dashboard_queries_use_exported_metric_names(
    k8s: Emulator, operator: RunningOperator, db_url: str, tmp_path: Path
) -> None:
    panels = expressions()
    assert {"Success rate %", "Top failing targets", "Capacity fill"} <= set(panels)
    exprs = [without_grafana_variables(e) for group in panels.values() for e in group]
    promtool_check(
        need_binary("promtool", "Debian package prometheus: apt-get install prometheus"),
        exprs,
        tmp_path,
    )
    # A target with every optional series: a capacity (the capacity gauges).
    await create(k8s, PT_URL, target("hook", capacity={"jobs": 100}, paused=True))
    await wait_ready(k8s, "hook")
    async with worker(db_url) as w, aiohttp.ClientSession() as http:
        await w.get("/v1/queue/stats")  # an API request, for the API's series

        async def sampled() -> str | None:
            text = await w.metrics_text()
            found = metric(parse_metrics(text), "herald_queue_capacity_jobs", target="default/hook")
            return text if found == 100 else None

        worker_text = await wait_until(sampled, timeout=15, what="the worker sampled hook")
        port = operator.settings.metrics_port
        async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
            assert r.status == 200
            operator_text = await r.text()
    exported = {name for name, _ in parse_metrics(worker_text)} | {
        name for name, _ in parse_metrics(operator_text)
    }
    for title, group in panels.items():
        for expr in group:
            used = metric_names(without_grafana_variables(expr))
            assert used, f"{title}: no metric in {expr}"
            assert used <= exported, f"{title}: {sorted(used - exported)} not exported ({expr})"
