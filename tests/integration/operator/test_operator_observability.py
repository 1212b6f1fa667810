"""A real Prometheus scrapes the running operator (the scrape configuration the chart's
ServiceMonitor implies), sees every operator metric the chart's alert rules and dashboard
can reference, and promtool accepts the exposition."""

from __future__ import annotations

import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import need_binary
from tests.e2e.chart_helpers import OPERATOR_METRICS, series_names
from tests.e2e.observability import metric_names, prometheus, query
from tests.helpers import wait_until
from tests.integration.operator.cluster import StartOperator

pytestmark = pytest.mark.e2e


async def test_prometheus_scrapes_the_operator(
    start_operator: StartOperator, tmp_path: Path
) -> None:
    binary = need_binary("prometheus", "Debian package prometheus")
    promtool = need_binary("promtool", "Debian package prometheus")
    running = await start_operator(scaling=True)
    port = running.options.settings.metrics_port
    url = f"http://127.0.0.1:{port}/metrics"

    async def exposition() -> str:
        async with aiohttp.ClientSession() as http, http.get(url) as r:
            return await r.text() if r.status == 200 else ""

    text = await wait_until(exposition, timeout=20, what="operator /metrics answering")
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    async with prometheus(binary, tmp_path, {"herald-operator": [f"127.0.0.1:{port}"]}) as prom:

        async def up() -> bool:
            result = await query(prom, 'up{job="herald-operator"}')
            return bool(result and result[0]["value"][1] == "1")

        await wait_until(up, timeout=30, what="Prometheus scraped the operator")
        expected = series_names(OPERATOR_METRICS)

        async def all_scraped() -> bool:
            return expected <= await metric_names(prom)

        await wait_until(all_scraped, timeout=20, what="every operator metric scraped")
