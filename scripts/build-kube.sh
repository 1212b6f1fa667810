#!/usr/bin/env bash
# Build a real Kubernetes control plane (kube-apiserver, kube-controller-manager, etcd)
# from the Go module proxy into a per-user cache folder keyed by version, and print that
# folder. The cluster tests (tests/cluster) start these binaries on 127.0.0.1.
#
#   scripts/build-kube.sh            # build what is missing, print the bin folder
#   scripts/build-kube.sh --print    # print the bin folder only (exit 1 when incomplete)
#   scripts/build-kube.sh --force    # rebuild even when the binaries are cached
#   scripts/build-kube.sh --node     # also a node: kubelet, kube-scheduler, kube-proxy and
#                                    # the pause binary (tests/node); combines with the above
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces its staging modules
# with ./staging/... folders. A throwaway build module requires k8s.io/kubernetes at
# KUBE_VERSION and replaces each staging module (the `=> ./staging` lines of its go.mod)
# with the published k8s.io/<name> twin at the matching v0.x version. etcd comes from the
# same module graph (go.etcd.io/etcd/server/v3, the version Kubernetes itself requires).
#
# A cold build (empty Go module and build caches) took 6 minutes on an idle 2-core machine
# (2026-12-08) and 20 to 30 with other work on it (the Go build cache makes a rebuild take
# seconds; the node's binaries add about a minute with it warm). pause is compiled from
# build/pause/linux/pause.c of the same k8s.io/kubernetes module (static; needs gcc).
# Cache: ${HERALD_KUBE_CACHE:-${XDG_CACHE_HOME:-~/.cache}/herald/kube}/<version>/bin.
set -euo pipefail

KUBE_VERSION="${HERALD_KUBE_VERSION:-v1.33.13}"
CACHE_ROOT="${HERALD_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/herald/kube}"
OUT="$CACHE_ROOT/$KUBE_VERSION"
BIN="$OUT/bin"
BINARIES=(kube-apiserver kube-controller-manager etcd)
NODE_BINARIES=(kubelet kube-scheduler kube-proxy pause)

log() { echo "build-kube: $*" >&2; }

complete() {
    local name
    for name in "${BINARIES[@]}"; do [[ -x "$BIN/$name" ]] || return 1; done
}

force=0
print=0
for arg in "$@"; do
    case "$arg" in
        --print) print=1 ;;
        --force) force=1 ;;
        --node) BINARIES+=("${NODE_BINARIES[@]}") ;;
        -h|--help) sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) log "unknown argument: $arg (see --help)"; exit 2 ;;
    esac
done
if [[ $print == 1 ]]; then
    complete && { echo "$BIN"; exit 0; }
    exit 1
fi

if [[ $force == 0 ]] && complete; then
    log "kube $KUBE_VERSION cached in $BIN"
    echo "$BIN"
    exit 0
fi
command -v go >/dev/null || { log "Go is required (https://go.dev/dl/)"; exit 1; }

# Which binaries to build: all with --force, else the missing ones.
missing=()
for name in "${BINARIES[@]}"; do
    if [[ $force == 1 || ! -x "$BIN/$name" ]]; then missing+=("$name"); fi
done
wants() { [[ " ${missing[*]} " == *" $1 "* ]]; }

# v1.33.13 -> v0.33.13: the staging modules are published with a v0 major.
STAGING_VERSION="v0.${KUBE_VERSION#v1.}"
mkdir -p "$OUT"
MOD="$OUT/module"
started=$SECONDS
export GOFLAGS=-mod=mod CGO_ENABLED=0
COMMANDS=(kube-apiserver kube-controller-manager kubelet kube-scheduler kube-proxy)

# The build module is made once (again with --force, or when it predates the node's
# commands); the node's binaries then build from the same module graph and Go cache.
module_ready() {
    [[ -f "$MOD/go.sum" && -f "$MOD/tools.go" && -f "$MOD/etcd/main.go" ]] || return 1
    local cmd
    for cmd in "${COMMANDS[@]}"; do
        grep -q "cmd/$cmd\"" "$MOD/tools.go" || return 1
    done
}

if [[ $force == 1 ]] || ! module_ready; then
rm -rf "$MOD"
mkdir -p "$MOD/etcd" "$BIN"
cd "$MOD"
go mod init herald.local/kube-build >/dev/null 2>&1
log "reading k8s.io/kubernetes@$KUBE_VERSION's go.mod"
gomod="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
[[ -f "$gomod" ]] || { log "could not download k8s.io/kubernetes@$KUBE_VERSION"; exit 1; }
mapfile -t staging < <(sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*#\1#p' "$gomod")
(( ${#staging[@]} > 10 )) || { log "found only ${#staging[@]} staging modules in $gomod"; exit 1; }
log "${#staging[@]} staging modules replaced by their published $STAGING_VERSION twins"
edits=(-require="k8s.io/kubernetes@$KUBE_VERSION")
for module in "${staging[@]}"; do
    edits+=(-replace="$module=$module@$STAGING_VERSION")
done
go mod edit "${edits[@]}"
go mod edit -go="$(sed -n 's/^go \(.*\)/\1/p' "$gomod")"

# etcd's own main package lives in its root module; this one-line main calls the same
# entry point from the server module that Kubernetes' graph already pins.
cat >etcd/main.go <<'EOF'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
{
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "${COMMANDS[@]}"
    printf ')\n'
} >tools.go
log "resolving the module graph"
go mod tidy >/dev/null 2>&1 || go get "k8s.io/kubernetes@$KUBE_VERSION" go.etcd.io/etcd/server/v3
fi
mkdir -p "$BIN"
cd "$MOD"

ldflags="-s -w"
for var in gitVersion=$KUBE_VERSION gitTreeState=clean gitMajor=1 \
    "gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2)"; do
    ldflags+=" -X k8s.io/component-base/version.$var -X k8s.io/client-go/pkg/version.$var"
done
for cmd in "${COMMANDS[@]}"; do
    wants "$cmd" || continue
    log "building $cmd (cold: kube-apiserver is the longest step)"
    go build -trimpath -ldflags "$ldflags" -o "$BIN/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
    mv "$BIN/$cmd.tmp" "$BIN/$cmd"
done
if wants etcd; then
    log "building etcd"
    go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" ./etcd
    mv "$BIN/etcd.tmp" "$BIN/etcd"
fi
if wants pause; then
    # The sandbox's init process, from the same module (Kubernetes builds it the same way).
    command -v gcc >/dev/null || { log "gcc is required for pause (apt-get install gcc libc6-dev)"; exit 1; }
    dir="$(go list -m -f '{{.Dir}}' k8s.io/kubernetes)"
    log "compiling pause from $dir/build/pause/linux/pause.c"
    gcc -Os -Wall -Werror -static -DVERSION="v${KUBE_VERSION#v}-herald" -o "$BIN/pause.tmp" \
        "$dir/build/pause/linux/pause.c"
    strip "$BIN/pause.tmp"
    mv "$BIN/pause.tmp" "$BIN/pause"
fi
"$BIN/kube-apiserver" --version >&2
log "built in $((SECONDS - started)) s into $BIN"
echo "$BIN"
