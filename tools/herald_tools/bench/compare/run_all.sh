#!/usr/bin/env bash
# Interleaved runs in one session: Herald, pgqueuer, procrastinate, River, repeated ROUNDS
# times (default 2). Each run's JSON goes to results/<stamp>/<round>-<library>.json and its
# progress lines to the matching .log. Needs the three venvs of README.md and Go (River's
# program is built once, before the first round, into the cache river/build.sh prints).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROUNDS="${1:-2}"
HERALD_VENV="${HERALD_VENV:-/work/venv}"
PGQ_VENV="${PGQ_VENV:-/work/cmp-pgq}"
PROC_VENV="${PROC_VENV:-/work/cmp-proc}"
OUT="$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)"
cd "$HERE"
# Build (or find) River's binary outside the timed rounds.
HERALD_RIVER_BIN="$(river/build.sh)"
export HERALD_RIVER_BIN
mkdir -p "$OUT"
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round: herald" >&2
    "$HERALD_VENV/bin/herald" bench --json >"$OUT/$round-herald.json" 2>"$OUT/$round-herald.log"
    echo "round $round: pgqueuer" >&2
    "$PGQ_VENV/bin/python" bench_pgqueuer.py >"$OUT/$round-pgqueuer.json" 2>"$OUT/$round-pgqueuer.log"
    echo "round $round: procrastinate" >&2
    "$PROC_VENV/bin/python" bench_procrastinate.py >"$OUT/$round-procrastinate.json" \
        2>"$OUT/$round-procrastinate.log"
    echo "round $round: river" >&2
    "$HERALD_VENV/bin/python" bench_river.py >"$OUT/$round-river.json" 2>"$OUT/$round-river.log"
done
echo "$OUT" >&2
"$HERALD_VENV/bin/python" summarize.py "$OUT"
