#!/usr/bin/env bash
# Builds the two base images from Debian packages, for hosts that cannot pull the official ones
# (an air-gapped registry, no Docker Hub): tandem-base/python:bookworm (python3 + venv, what the
# Dockerfiles' PYTHON_BASE needs) and tandem-base/redis:bookworm (Debian's redis-server, for
# REDIS_IMAGE). Needs mmdebstrap (apt-get install mmdebstrap) and a running Docker engine; ~2 min.
# Usage: deploy/base-images/build.sh [--force]   (skips an image that already exists)
set -euo pipefail
SUITE="${TANDEM_BASE_SUITE:-bookworm}"
MIRROR="${TANDEM_BASE_MIRROR:-}"   # empty: mmdebstrap's default mirror for the suite
FORCE="${1:-}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

build() {  # build NAME PACKAGES CMD
    local name="$1" packages="$2" cmd="$3"
    if [ "$FORCE" != "--force" ] && docker image inspect "$name" >/dev/null 2>&1; then
        echo "$name: present (use --force to rebuild)"
        return
    fi
    echo "$name: mmdebstrap $SUITE with $packages"
    # shellcheck disable=SC2086
    mmdebstrap --quiet --variant=minbase --include="$packages" \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        "$SUITE" "$work/rootfs.tar" $MIRROR
    docker import --change "CMD $cmd" --change 'ENV LANG=C.UTF-8' "$work/rootfs.tar" "$name"
    rm -f "$work/rootfs.tar"
}

build "tandem-base/python:$SUITE" "python3,python3-venv,ca-certificates" '["python3"]'
build "tandem-base/redis:$SUITE" "redis-server,ca-certificates" '["redis-server"]'
docker image ls 'tandem-base/*'
