#!/usr/bin/env bash
# Build the ecomm-cdc image with podman, on a CI machine or a laptop.
#
#   scripts/container-image.sh setup        podman & co (apt) and the base image, when missing
#   scripts/container-image.sh build [TAG]  build the image (default localhost/ecomm-cdc:dev)
#   scripts/container-image.sh [all] [TAG]  both
#
# Then run it:  podman run --rm --read-only -v ecomm-data:/data -p 8080:8080 TAG
# and check it: pytest -m container   (tests/test_container.py)
#
# Exit codes: 0 done; 1 a step failed; 3 impossible on this machine (podman
# missing and not installable, no Debian mirror for the base): the container
# test skips on 3 and prints the reason, which is the last line on stderr.
#
# Without Docker Hub the base image, docker.io/library/python:3.12-slim, is
# replaced by a stand-in built from this machine's Debian mirror (Debian's
# Python at /usr/bin/python3; the Dockerfile calls `python3` for that reason).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE=docker.io/library/python:3.12-slim
PACKAGES=(podman buildah runc slirp4netns uidmap mmdebstrap catatonit)

# The kernel here runs cgroups in hybrid mode (crun refuses it) and the
# open-files hard limit cannot be raised: the repo's containers.conf sets both.
if [[ -z ${CONTAINERS_CONF:-} ]] && command -v runc >/dev/null 2>&1; then
    export CONTAINERS_CONF=$ROOT/config/containers.conf
fi

WORK=""
trap 'if [[ -n $WORK ]]; then rm -rf "$WORK"; fi' EXIT

say() { printf 'container-image: %s\n' "$*" >&2; }
impossible() { say "$*"; exit 3; }

install_podman() {
    local missing=()
    for tool in podman runc mmdebstrap; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $(id -u) -eq 0 ]] || impossible "missing ${missing[*]}; installing needs root"
    command -v apt-get >/dev/null 2>&1 || impossible "missing ${missing[*]}; no apt-get to install it"
    say "installing ${PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null 2>&1 || impossible "apt-get update failed"
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >/dev/null 2>&1 \
        || impossible "apt-get install ${PACKAGES[*]} failed"
    export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/config/containers.conf}
}

# The first Debian (or Ubuntu) mirror of the system's own release in its apt sources.
debian_mirror() {
    local codename=$1
    # deb822 stanzas (*.sources): URIs and Suites lines of one stanza.
    awk -v want="$codename" '
        /^[[:space:]]*$/ { if (uri && ok) { print uri; exit } uri = ""; ok = 0; next }
        tolower($1) == "uris:" { uri = $2 }
        tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == want) ok = 1 }
        END { if (uri && ok) print uri }
    ' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 | grep . && return 0
    # One-line form: deb [options] URI SUITE COMPONENTS...
    sed -E 's/\[[^]]*\]//' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk -v want="$codename" '$1 == "deb" && $3 == want { print $2; exit }'
}

base_image() {
    podman image exists "$BASE" && return 0
    say "pulling $BASE"
    if timeout 60 podman pull -q "$BASE" >/dev/null 2>&1; then
        return 0
    fi
    command -v mmdebstrap >/dev/null 2>&1 || impossible "no $BASE and no mmdebstrap to build a stand-in"
    local codename mirror
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [[ -n $codename ]] || impossible "no VERSION_CODENAME in /etc/os-release"
    mirror=$(debian_mirror "$codename") || true
    [[ -n $mirror ]] || impossible "no apt mirror for $codename in /etc/apt/sources.list*"
    say "building a stand-in $BASE from $mirror ($codename)"
    WORK=$(mktemp -d)
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$codename" "$WORK/base.tar" "$mirror" >&2 \
        || impossible "mmdebstrap from $mirror failed"
    podman import -q --change 'CMD ["python3"]' "$WORK/base.tar" "$BASE" >/dev/null \
        || impossible "podman import of the stand-in base failed"
}

setup() {
    install_podman
    podman info >/dev/null 2>&1 || impossible "podman is installed but does not work: $(podman info 2>&1 | tail -n1)"
    base_image
}

build() {
    local tag=$1 args=() ca=""
    # pip inside the build: the host's CA bundle (a TLS-intercepting proxy) as a
    # build secret, and the host's index settings; none of it reaches the image.
    for f in "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" "${REQUESTS_CA_BUNDLE:-}"; do
        if [[ -n $f && -s $f ]]; then ca=$f; break; fi
    done
    [[ -n $ca ]] && args+=(--secret "id=pip-ca,src=$ca")
    [[ ${PIP_INDEX_URL:-} == http* ]] && args+=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")
    local extra=""
    for u in ${PIP_EXTRA_INDEX_URL:-}; do
        [[ $u == http* ]] && extra+="${extra:+ }$u"  # file:// indexes do not exist in the build
    done
    [[ -n $extra ]] && args+=(--build-arg "PIP_EXTRA_INDEX_URL=$extra")
    [[ -n ${PIP_TRUSTED_HOST:-} ]] && args+=(--build-arg "PIP_TRUSTED_HOST=$PIP_TRUSTED_HOST")
    say "building $tag"
    podman build --pull=never --network=host --format docker "${args[@]}" -t "$tag" "$ROOT"
}

cmd=${1:-all}
tag=${2:-localhost/ecomm-cdc:dev}
case $cmd in
    setup) setup ;;
    build) build "$tag" ;;
    all) setup; build "$tag" ;;
    *) say "usage: $0 [setup|build|all] [TAG]"; exit 2 ;;
esac
