#!/usr/bin/env bash
# Build Jaeger (the v2 "all-in-one" `jaeger` binary, in-memory storage by default) from the
# Go module proxy into a per-user cache folder keyed by version, and print the binary's
# path. The tracing journey (tests/e2e/test_tracing_jaeger.py) starts it on 127.0.0.1 and
# reads its query API to find one trace from the producer through each attempt to the
# receiver.
#
#   scripts/build-jaeger.sh            # build when missing, print the binary's path
#   scripts/build-jaeger.sh --print    # print the path only (exit 1 when not built)
#   scripts/build-jaeger.sh --force    # rebuild even when the binary is cached
#
# A throwaway module takes the program as a tool dependency (`go get -tool`), then builds
# it. A cold build took 4 minutes on an idle 2-core machine, about 10 with other work on it
# (seconds with the Go cache warm).
# Cache: ${HERALD_JAEGER_CACHE:-${XDG_CACHE_HOME:-~/.cache}/herald/jaeger}/<version>/jaeger.
set -euo pipefail

JAEGER_VERSION="${HERALD_JAEGER_VERSION:-v1.75.0}"
CACHE_ROOT="${HERALD_JAEGER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/herald/jaeger}"
OUT="$CACHE_ROOT/$JAEGER_VERSION"
BIN="$OUT/jaeger"

log() { echo "build-jaeger: $*" >&2; }

force=0
print=0
for arg in "$@"; do
    case "$arg" in
        --print) print=1 ;;
        --force) force=1 ;;
        -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) log "unknown argument: $arg (see --help)"; exit 2 ;;
    esac
done
if [[ $print == 1 ]]; then
    [[ -x "$BIN" ]] && { echo "$BIN"; exit 0; }
    exit 1
fi
if [[ $force == 0 && -x "$BIN" ]]; then
    log "jaeger $JAEGER_VERSION cached at $BIN"
    echo "$BIN"
    exit 0
fi
command -v go >/dev/null || { log "Go is required (https://go.dev/dl/)"; exit 1; }

mkdir -p "$OUT"
MOD="$OUT/module"
started=$SECONDS
export GOFLAGS=-mod=mod CGO_ENABLED=0
if [[ $force == 1 || ! -f "$MOD/go.sum" ]] || ! grep -q "jaegertracing/jaeger/cmd/jaeger" "$MOD/go.mod"; then
    rm -rf "$MOD"
    mkdir -p "$MOD"
    cd "$MOD"
    go mod init herald.local/jaeger-build >/dev/null 2>&1
    log "resolving github.com/jaegertracing/jaeger@$JAEGER_VERSION"
    go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION"
fi
cd "$MOD"
log "building jaeger $JAEGER_VERSION (cold: 4 to 10 minutes on 2 cores)"
go build -trimpath -ldflags "-s -w" -o "$BIN.tmp" github.com/jaegertracing/jaeger/cmd/jaeger
mv "$BIN.tmp" "$BIN"
log "built in $((SECONDS - started)) s into $BIN"
echo "$BIN"
