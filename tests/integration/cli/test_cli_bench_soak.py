"""``herald bench --soak``, tiny: the report's shape (intervals with every Herald table's
size, the verdicts), never its figures (the verdicts' arithmetic is unit-tested)."""

from __future__ import annotations

import pytest

from tests.integration.cli.cli import herald

TABLES = {"jobs", "targets", "dead_letters", "dead_letter_counts", "attempts_default"}
INTERVAL_KEYS = {
    "interval",
    "end_s",
    "delivered",
    "per_s",
    "delivered_p50_ms",
    "delivered_p99_ms",
    "backlog",
    "rss_mib",
    "rss_mib_per_worker",
    "cpu_worker_cores",
    "cpu_postgresql_cores",
    "load_average_1m",
    "herald_bytes",
    "tables",
}
TABLE_KEYS = {
    "table_bytes",
    "index_bytes",
    "live_tuples",
    "dead_tuples",
    "autovacuum_count",
    "autoanalyze_count",
}


@pytest.mark.slow
async def test_a_tiny_soak_reports_every_interval_and_the_verdicts(pg_admin_url: str) -> None:
    # --quick measures the maximum on a small backlog first, then soaks at half of it.
    run = await herald(
        "bench", "--soak", "6s", "--interval", "2s", "--quick", "--json",
        url=pg_admin_url,
        timeout=120,
    )  # fmt: skip
    assert run.code == 0, run.err
    report = run.json()
    assert report["soak_max_per_s"] > 0 and report["soak_rate"] > 0
    intervals = report["soak_intervals"]
    assert [i["interval"] for i in intervals] == [1, 2, 3]
    for interval in intervals:
        assert set(interval) == INTERVAL_KEYS
        assert set(interval["tables"]) >= TABLES, sorted(interval["tables"])
        assert any(t.startswith("attempts_p") for t in interval["tables"])
        for table in interval["tables"].values():
            assert set(table) == TABLE_KEYS
    verdicts = report["soak_verdicts"]
    assert set(verdicts) == {"sizes_plateau", "p99_stable", "rss_flat", "kept_up"}
    for verdict in verdicts.values():
        assert verdict["pass"] in (True, False, None) and verdict["rule"]
    assert report["environment"]["postgresql"]["server_version"]


async def test_soak_options_are_checked_before_anything_starts() -> None:
    for args in (("--soak", "0s"), ("--soak", "soon"), ("--soak", "1m", "--workers", "0")):
        run = await herald("bench", *args, url="postgresql://127.0.0.1:9/none", timeout=30)
        assert run.code == 2, (args, run.err)
        assert "Traceback" not in run.err
