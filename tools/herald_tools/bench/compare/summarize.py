"""A Markdown table of the runs in results/<stamp>/ (one JSON per run, named
<round>-<library>.json) and the median of each figure per library.

    python summarize.py results/<stamp> [results/<other stamp> ...]
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

KEYS = (
    "enqueue_batch_per_s",
    "enqueue_single_c10_per_s",
    "drain_c1_per_s",
    "drain_best_per_s",
    "drain_best_setting",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_max_ms",
)
ORDER = {"herald": 0, "pgqueuer": 1, "procrastinate": 2, "river": 3}


def setting(value: object) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def main(dirs: list[str]) -> None:
    runs: list[tuple[str, str, dict]] = []
    for d in dirs:
        for path in sorted(Path(d).glob("*.json")):
            round_, _, library = path.stem.partition("-")
            text = path.read_text().strip()
            if not text:
                continue
            runs.append((library, f"{Path(d).name}/{round_}", json.loads(text)))
    runs.sort(key=lambda r: (ORDER.get(r[0], 9), r[1]))
    header = ["library", "run", *KEYS]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for library, run, data in runs:
        cells = [library, run]
        for key in KEYS:
            value = data.get(key, "")
            cells.append(setting(value) if key == "drain_best_setting" else str(value))
        print("| " + " | ".join(cells) + " |")
    print()
    print("Medians per library:")
    print()
    print("| " + " | ".join(["library", "runs", *KEYS]) + " |")
    print("|" + "---|" * (len(KEYS) + 2))
    for library in sorted({r[0] for r in runs}, key=lambda x: ORDER.get(x, 9)):
        mine = [d for lib, _, d in runs if lib == library]
        cells = [library, str(len(mine))]
        for key in KEYS:
            if key == "drain_best_setting":
                cells.append("; ".join(setting(d.get(key)) for d in mine))
                continue
            values = [d[key] for d in mine if isinstance(d.get(key), (int, float))]
            cells.append(f"{statistics.median(values):g}" if values else "")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
