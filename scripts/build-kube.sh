#!/usr/bin/env bash
# Build a real Kubernetes control plane (kube-apiserver, kube-controller-manager, etcd)
# from the Go module proxy into a per-user cache folder keyed by version, and print that
# folder. The cluster tests (tests/cluster) start these binaries on 127.0.0.1.
#
#   scripts/build-kube.sh            # build what is missing, print the bin folder
#   scripts/build-kube.sh --print    # print the bin folder only (exit 1 when incomplete)
#   scripts/build-kube.sh --force    # rebuild even when the binaries are cached
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces its staging modules
# with ./staging/... folders. A throwaway build module requires k8s.io/kubernetes at
# KUBE_VERSION and replaces each staging module (the `=> ./staging` lines of its go.mod)
# with the published k8s.io/<name> twin at the matching v0.x version. etcd comes from the
# same module graph (go.etcd.io/etcd/server/v3, the version Kubernetes itself requires).
#
# A cold build takes 20 to 30 minutes on 2 cores (the Go build cache makes a rebuild take
# seconds). Cache: ${HERALD_KUBE_CACHE:-${XDG_CACHE_HOME:-~/.cache}/herald/kube}/<version>/bin.
set -euo pipefail

KUBE_VERSION="${HERALD_KUBE_VERSION:-v1.33.13}"
CACHE_ROOT="${HERALD_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/herald/kube}"
OUT="$CACHE_ROOT/$KUBE_VERSION"
BIN="$OUT/bin"
BINARIES=(kube-apiserver kube-controller-manager etcd)

log() { echo "build-kube: $*" >&2; }

complete() {
    local name
    for name in "${BINARIES[@]}"; do [[ -x "$BIN/$name" ]] || return 1; done
}

force=0
case "${1:-}" in
    "") ;;
    --print) complete && { echo "$BIN"; exit 0; }; exit 1 ;;
    --force) force=1 ;;
    -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) log "unknown argument: $1 (see --help)"; exit 2 ;;
esac

if [[ $force == 0 ]] && complete; then
    log "kube $KUBE_VERSION cached in $BIN"
    echo "$BIN"
    exit 0
fi
command -v go >/dev/null || { log "Go is required (https://go.dev/dl/)"; exit 1; }

# v1.33.13 -> v0.33.13: the staging modules are published with a v0 major.
STAGING_VERSION="v0.${KUBE_VERSION#v1.}"
mkdir -p "$OUT"
MOD="$OUT/module"
rm -rf "$MOD"
mkdir -p "$MOD/etcd" "$BIN"
started=$SECONDS

cd "$MOD"
export GOFLAGS=-mod=mod CGO_ENABLED=0
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
cat >tools.go <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
EOF
log "resolving the module graph"
go mod tidy >/dev/null 2>&1 || go get "k8s.io/kubernetes@$KUBE_VERSION" go.etcd.io/etcd/server/v3

ldflags="-s -w"
for var in gitVersion=$KUBE_VERSION gitTreeState=clean gitMajor=1 \
    "gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2)"; do
    ldflags+=" -X k8s.io/component-base/version.$var -X k8s.io/client-go/pkg/version.$var"
done
for cmd in kube-apiserver kube-controller-manager; do
    log "building $cmd (cold: the longest step)"
    go build -trimpath -ldflags "$ldflags" -o "$BIN/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
    mv "$BIN/$cmd.tmp" "$BIN/$cmd"
done
log "building etcd"
go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" ./etcd
mv "$BIN/etcd.tmp" "$BIN/etcd"
"$BIN/kube-apiserver" --version >&2
log "built in $((SECONDS - started)) s into $BIN"
echo "$BIN"
