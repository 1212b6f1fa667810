#!/usr/bin/env bash
# Build bench-river (main.go: Herald's queue benchmark steps on River) from this folder's
# pinned go.mod/go.sum, through the Go module proxy, into a per-user cache folder keyed by
# River's version, and print the binary's path (as scripts/build-kube.sh does for the
# Kubernetes control plane).
#
#   compare/river/build.sh            # build when missing or stale, print the binary
#   compare/river/build.sh --print    # print the binary only (exit 1 when not built)
#   compare/river/build.sh --force    # rebuild
#
# Cache: ${HERALD_RIVER_CACHE:-${XDG_CACHE_HOME:-~/.cache}/herald/river}/<version>/bench-river,
# rebuilt when main.go, go.mod or go.sum change (their hash is kept beside it).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
log() { echo "build-river: $*" >&2; }

RIVER_VERSION="$(sed -n 's#^[[:space:]]*github.com/riverqueue/river \(v[^ ]*\).*#\1#p' "$HERE/go.mod")"
[[ -n "$RIVER_VERSION" ]] || { log "no github.com/riverqueue/river in $HERE/go.mod"; exit 1; }
CACHE_ROOT="${HERALD_RIVER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/herald/river}"
OUT="$CACHE_ROOT/$RIVER_VERSION"
BIN="$OUT/bench-river"
SOURCES_HASH="$(cd "$HERE" && cat go.mod go.sum main.go | sha256sum | cut -d' ' -f1)"

fresh() { [[ -x "$BIN" && "$(cat "$OUT/sources.sha256" 2>/dev/null)" == "$SOURCES_HASH" ]]; }

force=0
case "${1:-}" in
    "") ;;
    --print) fresh && { echo "$BIN"; exit 0; }; exit 1 ;;
    --force) force=1 ;;
    -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) log "unknown argument: $1 (see --help)"; exit 2 ;;
esac
if [[ $force == 0 ]] && fresh; then
    log "river $RIVER_VERSION cached in $BIN"
    echo "$BIN"
    exit 0
fi
command -v go >/dev/null || { log "Go is required (https://go.dev/dl/)"; exit 1; }

# -mod=mod: resolve from the module cache or GOPROXY as the machine has it; go.sum pins
# every module's hash, so a proxy cannot change what is built.
export GOFLAGS=-mod=mod CGO_ENABLED=0
mkdir -p "$OUT"
started=$SECONDS
log "building bench-river against river $RIVER_VERSION"
(cd "$HERE" && go build -trimpath -ldflags "-s -w" -o "$BIN.tmp" .)
mv "$BIN.tmp" "$BIN"
echo "$SOURCES_HASH" >"$OUT/sources.sha256"
log "built in $((SECONDS - started)) s into $BIN"
echo "$BIN"
