#!/usr/bin/env bash
# Interleaved runs in one session: Herald, pgqueuer, procrastinate, repeated ROUNDS times
# (default 2). Each run's JSON goes to results/<stamp>/<round>-<library>.json and its
# progress lines to the matching .log. Needs the three venvs of README.md.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROUNDS="${1:-2}"
HERALD_VENV="${HERALD_VENV:-/work/venv}"
PGQ_VENV="${PGQ_VENV:-/work/cmp-pgq}"
PROC_VENV="${PROC_VENV:-/work/cmp-proc}"
OUT="$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
cd "$HERE"
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round: herald" >&2
    "$HERALD_VENV/bin/herald" bench --json >"$OUT/$round-herald.json" 2>"$OUT/$round-herald.log"
    echo "round $round: pgqueuer" >&2
    "$PGQ_VENV/bin/python" bench_pgqueuer.py >"$OUT/$round-pgqueuer.json" 2>"$OUT/$round-pgqueuer.log"
    echo "round $round: procrastinate" >&2
    "$PROC_VENV/bin/python" bench_procrastinate.py >"$OUT/$round-procrastinate.json" \
        2>"$OUT/$round-procrastinate.log"
done
echo "$OUT" >&2
"$HERALD_VENV/bin/python" summarize.py "$OUT"
