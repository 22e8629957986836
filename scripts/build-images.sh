#!/usr/bin/env bash
# Build the images EDX Arena needs, locally and offline (no registry is reachable):
#   edx-arena/base:bookworm    Debian minbase + python3-numpy/scipy/h5py (debootstrap + docker import)
#   edx-arena/runner:latest    the reference solver image (Dockerfile.runner)
#   edx-arena-test/busybox     FROM scratch + busybox-static, runs as root (hostile tests)
#   edx-arena-test/busybox-user  the same with USER 1000
# Each is skipped when it is up to date. --test-only builds just the busybox images.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '\033[1m[images]\033[0m %s\n' "$*" >&2; }
have() { docker image inspect "$1" >/dev/null 2>&1; }

mkdir -p var/log
ctx=$(mktemp -d); trap 'rm -rf "$ctx"' EXIT
cp /usr/bin/busybox "$ctx/busybox"
cp docker/busybox/Dockerfile "$ctx/Dockerfile"
have edx-arena-test/busybox:latest || { log "building edx-arena-test/busybox"; docker build -q -t edx-arena-test/busybox:latest "$ctx" >/dev/null 2>>var/log/docker-build.log; }
have edx-arena-test/busybox-user:latest || { log "building edx-arena-test/busybox-user"; docker build -q --build-arg IMAGE_USER=1000 -t edx-arena-test/busybox-user:latest "$ctx" >/dev/null 2>>var/log/docker-build.log; }
[ "${1:-}" = "--test-only" ] && exit 0

if ! have edx-arena/base:bookworm; then
  cache=var/cache/rootfs-bookworm.tar
  if [ ! -s "$cache" ]; then
    mkdir -p var/cache
    root=$(mktemp -d)
    log "debootstrap bookworm minbase with python3-numpy, python3-scipy, python3-h5py (a few minutes, once)"
    debootstrap --variant=minbase --include=python3-numpy,python3-scipy,python3-h5py bookworm "$root" >var/log/debootstrap.log 2>&1 \
      || { tail -20 var/log/debootstrap.log >&2; exit 1; }
    tar -C "$root" -cf "$cache.tmp" . && mv "$cache.tmp" "$cache"
    rm -rf "$root"
  fi
  log "importing edx-arena/base:bookworm"
  docker import "$cache" edx-arena/base:bookworm >/dev/null
fi

# Rebuild the runner whenever the harness or its Dockerfile changes.
hash=$(find harness Dockerfile.runner -name '*.py' -o -name Dockerfile.runner | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)
current=$(docker image inspect -f '{{ index .Config.Labels "edx-arena.source-hash" }}' edx-arena/runner:latest 2>/dev/null || true)
if [ "$current" != "$hash" ]; then
  log "building edx-arena/runner:latest (harness $hash)"
  docker build -q -f Dockerfile.runner --label "edx-arena.source-hash=$hash" -t edx-arena/runner:latest . >/dev/null 2>>var/log/docker-build.log
fi
