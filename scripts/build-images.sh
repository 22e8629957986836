#!/usr/bin/env bash
# Build the images EDX Arena needs, locally and offline (no registry is needed):
#   edx-arena/base:bookworm      Debian minbase + python3-numpy/scipy/h5py/skimage (debootstrap + docker import)
#   edx-arena/runner:latest      the reference solver image (Dockerfile.runner)
#   edx-arena-test/busybox       FROM scratch + busybox-static, USER root (hostile tests)
#   edx-arena-test/busybox-user  the same with USER 1000
# Each is skipped when it exists and is up to date. --test-only builds just the busybox images.
# The debootstrap root filesystem is cached in var/cache/ (git-ignored): delete
# var/cache/rootfs-bookworm.tar and `docker rmi edx-arena/base:bookworm` to rebuild it.
# Needs: a Docker daemon; for the base image, root and debootstrap (and a Debian mirror, once);
# for the test images, Debian's busybox-static.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '\033[1m[images]\033[0m %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
have() { docker image inspect "$1" >/dev/null 2>&1; }
build() {  # build LOG_NAME ARGS...: quiet, with the log's tail shown when it fails
  local name=$1; shift
  docker build -q "$@" >"var/log/build-$name.log" 2>&1 || { tail -20 "var/log/build-$name.log" >&2; die "docker build of $name failed (log: var/log/build-$name.log)"; }
}
static_busybox() {  # a statically linked busybox: the test images have no libc to load
  local bb
  for bb in "$(command -v busybox || true)" /bin/busybox /usr/bin/busybox; do
    [ -x "$bb" ] && ! ldd "$bb" >/dev/null 2>&1 && { echo "$bb"; return; }
  done
  return 1
}

mkdir -p var/log var/cache
docker info >/dev/null 2>&1 || die "no Docker daemon answers; start dockerd (scripts/setup.sh does)"

if ! have edx-arena-test/busybox:latest || ! have edx-arena-test/busybox-user:latest; then
  bb=$(static_busybox) || die "no static busybox found; install Debian's busybox-static (apt-get install busybox-static)"
  ctx=$(mktemp -d); trap 'rm -rf "$ctx"' EXIT
  cp "$bb" "$ctx/busybox"
  cp docker/hostile/Dockerfile "$ctx/Dockerfile"
  # --network none: these builds need nothing from outside.
  have edx-arena-test/busybox:latest || { log "building edx-arena-test/busybox"; build busybox --network none -t edx-arena-test/busybox:latest "$ctx"; }
  have edx-arena-test/busybox-user:latest || { log "building edx-arena-test/busybox-user"; build busybox-user --network none --build-arg IMAGE_USER=1000 -t edx-arena-test/busybox-user:latest "$ctx"; }
fi
[ "${1:-}" = "--test-only" ] && exit 0

if ! have edx-arena/base:bookworm; then
  cache=var/cache/rootfs-bookworm.tar
  if [ ! -s "$cache" ]; then
    [ "$(id -u)" = 0 ] || die "debootstrap needs root: run this script as root once (the root filesystem is then cached in $cache)"
    command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
    root=$(mktemp -d)
    log "debootstrap bookworm minbase with python3-numpy, python3-scipy, python3-h5py, python3-skimage (a few minutes, once; log: var/log/debootstrap.log)"
    debootstrap --variant=minbase --include=python3-numpy,python3-scipy,python3-h5py,python3-skimage bookworm "$root" >var/log/debootstrap.log 2>&1 \
      || { tail -20 var/log/debootstrap.log >&2; rm -rf "$root"; die "debootstrap failed"; }
    tar -C "$root" -cf "$cache.tmp" . && mv "$cache.tmp" "$cache"
    rm -rf "$root"
  fi
  log "importing edx-arena/base:bookworm from $cache"
  docker import "$cache" edx-arena/base:bookworm >/dev/null
fi

# Rebuild the runner whenever the harness or its Dockerfile changes.
hash=$(find harness Dockerfile.runner \( -name '*.py' -o -name Dockerfile.runner \) -not -path '*/__pycache__/*' | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)
current=$(docker image inspect -f '{{ index .Config.Labels "edx-arena.source-hash" }}' edx-arena/runner:latest 2>/dev/null || true)
if [ "$current" != "$hash" ]; then
  log "building edx-arena/runner:latest (harness $hash)"
  build runner -f Dockerfile.runner --label "edx-arena.source-hash=$hash" -t edx-arena/runner:latest .
fi
