#!/usr/bin/env bash
# Build the Herald image from the repository's Dockerfile without a container registry, and
# print a docker-archive of it (what `ctr images import` and `podman load` take).
#
#   scripts/build-image.sh            # build what is missing; print the archive's path
#   scripts/build-image.sh --print    # print the archive's path only (exit 1 when not built)
#   scripts/build-image.sh --ref      # print the image's reference (localhost/herald:<hash>)
#
# Needs root, mmdebstrap and buildah (Debian packages). Two steps, each cached by its inputs
# under ${HERALD_IMAGE_CACHE:-${XDG_CACHE_HOME:-~/.cache}/herald/image}:
#
# 1. The base: no registry is reachable here, so python:3.11-slim-bookworm cannot be pulled.
#    mmdebstrap makes a minimal Debian bookworm with Python 3.11 from the Debian archive
#    (the same interpreter version, at /usr/bin/python3.11 in both stages), imported into
#    buildah as localhost/herald-base:<hash of this recipe> (about 90 s cold).
# 2. The image: `buildah bud --layers` of the real Dockerfile with PYTHON_IMAGE set to that
#    base, tagged localhost/herald:<hash of the build context>; the host's CA bundle is
#    mounted for pip during the build only. A code-only change rebuilds the last layers.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${HERALD_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/herald/image}"
SUITE=bookworm
MIRROR="${HERALD_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES=python3,python3-venv,python-is-python3,ca-certificates,netbase,tzdata,passwd
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

log() { echo "build-image: $*" >&2; }

# The build context's content: what the Dockerfile copies, and the Dockerfile itself.
context_hash() {
    cd "$ROOT"
    find Dockerfile .dockerignore pyproject.toml README.md deploy/image worker operator \
        -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' \
        ! -path '*/.mypy_cache/*' -print0 \
        | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16
}
base_hash() {
    printf '%s\n' "$SUITE" "$PACKAGES" "minbase" | sha256sum | cut -c1-16
}

BASE_REF="localhost/herald-base:$(base_hash)"
REF="localhost/herald:$(context_hash)"
ARCHIVE="$CACHE/herald-${REF##*:}.tar"

case "${1:-}" in
    "") ;;
    --print) [[ -f "$ARCHIVE" ]] && { echo "$ARCHIVE"; exit 0; }; exit 1 ;;
    --ref) echo "$REF"; exit 0 ;;
    -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) log "unknown argument: $1 (see --help)"; exit 2 ;;
esac

if [[ -f "$ARCHIVE" ]]; then
    log "$REF cached in $ARCHIVE"
    echo "$ARCHIVE"
    exit 0
fi
[[ $(id -u) == 0 ]] || { log "needs root (buildah with chroot isolation, mmdebstrap)"; exit 1; }
for tool in mmdebstrap buildah; do
    command -v "$tool" >/dev/null || { log "$tool is required (apt-get install $tool)"; exit 1; }
done
mkdir -p "$CACHE"
started=$SECONDS

if ! buildah inspect --type image "$BASE_REF" >/dev/null 2>&1; then
    tarball="$CACHE/base-${BASE_REF##*:}.tar"
    if [[ ! -f "$tarball" ]]; then
        log "making the base with mmdebstrap ($SUITE: $PACKAGES)"
        mmdebstrap --quiet --variant=minbase --format=tar --include="$PACKAGES" \
            --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            "$SUITE" "$tarball.tmp" "$MIRROR"
        mv "$tarball.tmp" "$tarball"
    fi
    log "importing the base as $BASE_REF"
    container="$(buildah from scratch)"
    trap 'buildah rm "$container" >/dev/null 2>&1 || true' EXIT
    buildah add --quiet "$container" "$tarball" / >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd python3 "$container"
    buildah commit --quiet --rm "$container" "$BASE_REF" >/dev/null
    trap - EXIT
fi

log "building $REF from the Dockerfile on $BASE_REF"
volume=()
[[ -f "$CA_BUNDLE" ]] && volume=(--volume "$CA_BUNDLE:$CA_BUNDLE:ro")
buildah bud --quiet --isolation chroot --layers --pull-never "${volume[@]}" \
    --build-arg "PYTHON_IMAGE=$BASE_REF" --tag "$REF" --file "$ROOT/Dockerfile" "$ROOT" >&2
rm -f "$ARCHIVE.tmp"
buildah push --quiet "$REF" "docker-archive:$ARCHIVE.tmp:$REF" >&2
mv "$ARCHIVE.tmp" "$ARCHIVE"
# Older archives of other build contexts are dropped: the cache keeps the newest only.
find "$CACHE" -maxdepth 1 -name 'herald-*.tar' ! -path "$ARCHIVE" -delete
log "built $REF ($(buildah images --format '{{.Size}}' "$REF" 2>/dev/null || echo '?')) in $((SECONDS - started)) s"
echo "$ARCHIVE"
