"""The soak benchmark's verdicts on made-up series: sizes plateau, p99 stable, RSS flat."""

from __future__ import annotations

from typing import Any

from herald_tools.bench import soak_bench as soak


def test_windows_are_the_last_ten_and_the_ten_before_or_thirds() -> None:
    assert soak.later_windows(30) == (slice(10, 20), slice(20, 30))
    assert soak.later_windows(20) == (slice(0, 10), slice(10, 20))
    assert soak.later_windows(9) == (slice(3, 6), slice(6, 9))
    assert soak.later_windows(10) == (slice(4, 7), slice(7, 10))
    assert soak.later_windows(2) is None
    assert soak.first_last_windows(30) == (slice(0, 10), slice(20, 30))
    assert soak.first_last_windows(9) == (slice(0, 3), slice(6, 9))
    assert soak.first_last_windows(1) is None


def test_a_size_plateaus_when_the_last_window_is_no_larger() -> None:
    mib = 1024.0 * 1024
    growing_then_flat = [min(i, 8) * mib for i in range(24)]
    assert soak.plateaued(growing_then_flat) is True
    sawtooth = [(100 + i % 3) * mib for i in range(20)]  # vacuumed and refilled: a plateau
    assert soak.plateaued(sawtooth) is True
    assert soak.plateaued([i * mib for i in range(24)]) is False  # steady growth
    assert soak.plateaued([mib] * 19 + [1.5 * mib]) is False  # half as large again at the end
    assert soak.plateaued([100 * mib] * 19 + [100.5 * mib]) is True  # sawtooth, within 1 %
    assert soak.plateaued([100 * mib] * 19 + [101.5 * mib]) is False
    small = 112 * 1024.0  # a table of a few rows moves by whole pages
    assert soak.plateaued([small] * 19 + [small + 32 * 1024]) is True
    assert soak.plateaued([small] * 19 + [small + 200 * 1024]) is False
    assert soak.plateaued([1.0, 2.0]) is None


def test_rss_is_flat_within_ten_percent() -> None:
    assert soak.flat([100.0] * 10 + [109.0] * 10) is True
    assert soak.flat([100.0] * 10 + [111.0] * 10) is False
    assert soak.flat([50.0, 100.0, 100.0, 100.0, 105.0, 100.0]) is True  # warm-up ignored
    assert soak.flat([80.0]) is None


def test_p99_ratio_pools_the_first_and_the_last_window() -> None:
    steady = [[float(x) for x in range(1, 101)]] * 20
    first, last, ratio = soak.p99_ratio(steady) or (0, 0, 0)
    assert first == last and ratio == 1.0
    slower = steady[:10] + [[2.0 * x for x in range(1, 101)]] * 10
    assert (soak.p99_ratio(slower) or (0, 0, 0))[2] == 2.0
    assert soak.p99_ratio([[1.0, 2.0]] * 2) is None  # too few intervals
    assert soak.p99_ratio([[], [], []]) is None  # no samples


def _interval(k: int, jobs: int, attempts: int, rss: float, backlog: int = 0) -> dict[str, Any]:
    def table(size: int) -> dict[str, int]:
        return {"table_bytes": size, "index_bytes": size // 2}

    return {
        "interval": k,
        "end_s": 60.0 * k,
        "rss_mib": rss,
        "backlog": backlog,
        "tables": {"jobs": table(jobs), "attempts_p20261207": table(attempts)},
    }


def test_verdicts_judge_all_four_and_leave_the_attempts_partitions_out() -> None:
    intervals = [_interval(k, min(k, 5) * 8192, k * 8192, 80.0) for k in range(1, 21)]
    latencies = [[10.0, 20.0, 30.0]] * 20
    v = soak.verdicts(intervals, latencies, rate=100)
    assert v["sizes_plateau"]["pass"] is True and v["sizes_plateau"]["grew"] == {}
    assert v["sizes_plateau"]["attempts_bytes_per_hour"] > 0
    assert v["p99_stable"]["pass"] is True and v["p99_stable"]["ratio"] == 1.0
    assert v["rss_flat"]["pass"] is True
    assert v["kept_up"]["pass"] is True

    bloating = [_interval(k, k * 8192, 0, 80.0 + 5 * k, backlog=k * 1000) for k in range(1, 21)]
    slower = [[10.0, 20.0]] * 10 + [[30.0, 40.0]] * 10
    v = soak.verdicts(bloating, slower, rate=100)
    assert v["sizes_plateau"]["pass"] is False and list(v["sizes_plateau"]["grew"]) == ["jobs"]
    assert v["p99_stable"]["pass"] is False
    assert v["rss_flat"]["pass"] is False
    assert v["kept_up"]["pass"] is False
    assert (v["kept_up"]["before_max_backlog"], v["kept_up"]["last_max_backlog"]) == (10000, 20000)

    v = soak.verdicts(intervals[:2], latencies[:2], rate=100)
    assert [x["pass"] for x in v.values()] == [None, None, None, None]


def test_a_backlog_that_holds_keeps_up_and_one_that_grows_does_not() -> None:
    def judged(backlogs: list[int], rate: float) -> bool | None:
        intervals = [_interval(k, 8192, 0, 80.0, backlog=b) for k, b in enumerate(backlogs, 1)]
        return soak.verdicts(intervals, [[1.0, 2.0]] * len(backlogs), rate=rate)["kept_up"]["pass"]

    assert judged([3] * 20, rate=1000) is True  # the few jobs of the last moment
    assert judged([40_000] * 20, rate=1000) is True  # behind by a constant, not falling back
    assert judged([0] * 10 + [4_999] * 10, rate=1000) is True  # within 5 s of the rate
    assert judged([0] * 10 + [5_001] * 10, rate=1000) is False
    assert judged([k * 77_000 for k in range(20)], rate=2784) is False  # the overloaded soak
