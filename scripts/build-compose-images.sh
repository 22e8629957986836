#!/usr/bin/env bash
# Build the compose stack's images locally (docker-compose.yml), with no registry:
#   edx-arena/services:latest   API and worker (Dockerfile.services): the pinned Python packages
#                               from a host-side wheelhouse, then harness/, core/, services/, db/
#   edx-arena/postgres:15       Debian's postgresql-15 on the base (docker/postgres)
#   edx-arena/redis:7           Debian's redis-server on the base (docker/redis)
#   edx-arena/registry:2.8      Debian's docker-registry on the base (docker/registry)
# Every image is skipped when its inputs have not changed (a source-hash label), so running it
# again is cheap. The base defaults to edx-arena/base:bookworm (scripts/build-images.sh); with
# internet access `--base python:3.11-slim-bookworm` (or any Debian bookworm image) works too.
# Needs: a Docker daemon; PyPI reachable from the host once (the wheelhouse is cached in
# var/cache/wheelhouse, git-ignored); a Debian mirror reachable from `docker build` once
# (the postgres and redis images apt-get their server).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '\033[1m[compose-images]\033[0m %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
base=edx-arena/base:bookworm
while [ $# -gt 0 ]; do
  case $1 in
    --base) base=$2; shift 2 ;;
    *) die "unknown argument $1 (usage: $0 [--base IMAGE])" ;;
  esac
done
mkdir -p var/log var/cache
docker info >/dev/null 2>&1 || die "no Docker daemon answers; start dockerd (scripts/setup.sh does)"
docker image inspect "$base" >/dev/null 2>&1 || [ "$base" != edx-arena/base:bookworm ] \
  || die "$base is missing: run scripts/build-images.sh first"
py=.venv/bin/python; [ -x "$py" ] || py=python3

label() { docker image inspect -f '{{ index .Config.Labels "edx-arena.source-hash" }}' "$1" 2>/dev/null || true; }
hash_of() { { echo "$base"; find "$@" -type f -not -path '*/__pycache__/*' -not -name '*.pyc' | LC_ALL=C sort | xargs sha256sum; } | sha256sum | cut -c1-16; }
build() {  # build NAME CONTEXT HASH ARGS...: quiet, the log's tail shown when it fails
  local name=$1 ctx=$2 hash=$3; shift 3
  log "building edx-arena/$name (inputs $hash; log: var/log/build-compose-$name.log)"
  docker build --build-arg "BASE_IMAGE=$base" --label "edx-arena.source-hash=$hash" "$@" "$ctx" \
    >"var/log/build-compose-$name.log" 2>&1 \
    || { tail -20 "var/log/build-compose-$name.log" >&2; return 1; }
}

for server in postgres:15 redis:7 registry:2.8; do
  name=${server%%:*}
  hash=$(hash_of "docker/$name")
  [ "$(label "edx-arena/$server")" = "$hash" ] && continue
  # apt-get needs a Debian mirror: through the default bridge, else (no NAT on this host) the host's network.
  build "$name" "docker/$name" "$hash" -t "edx-arena/$server" \
    || { log "retrying $name with --network host"; build "$name" "docker/$name" "$hash" --network host -t "edx-arena/$server" \
         || die "docker build of $name failed"; }
done

# The wheelhouse: every pinned dependency of pyproject.toml as a CPython 3.11 manylinux wheel
# (the base's python3), downloaded by the host's pip, which has the host's certificates and
# index settings. Keyed by the dependency list. async-timeout: redis needs it on Python < 3.11.3
# (Debian's 3.11.2), which markers evaluated on the host's newer 3.11 leave out.
"$py" - >var/cache/requirements.txt <<'PY'
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))
PY
wheels=var/cache/wheelhouse
want=$({ cat var/cache/requirements.txt; echo async-timeout; } | sha256sum | cut -c1-16)
if [ "$(cat "$wheels/.requirements" 2>/dev/null || true)" != "$want" ]; then
  log "downloading the pinned wheels into $wheels (log: var/log/wheelhouse.log)"
  rm -rf "$wheels"; mkdir -p "$wheels"
  "$py" -m pip download --disable-pip-version-check -q --only-binary=:all: --python-version 3.11 \
    --implementation cp --abi cp311 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$wheels" -r var/cache/requirements.txt pip "async-timeout>=4.0.3" >var/log/wheelhouse.log 2>&1 \
    || { tail -20 var/log/wheelhouse.log >&2; die "pip download failed"; }
  echo "$want" >"$wheels/.requirements"
fi

hash=$(hash_of harness core services db pyproject.toml Dockerfile.services var/cache/requirements.txt)
if [ "$(label edx-arena/services:latest)" != "$hash" ]; then
  ctx=$(mktemp -d); trap 'rm -rf "$ctx"' EXIT
  # A small context of hard links (copies across file systems): not the whole checkout with var/ and .venv/.
  cp -al harness core services db pyproject.toml "$ctx/" 2>/dev/null || cp -a harness core services db pyproject.toml "$ctx/"
  cp -al "$wheels" "$ctx/wheelhouse" 2>/dev/null || cp -a "$wheels" "$ctx/wheelhouse"
  cp var/cache/requirements.txt "$ctx/requirements.txt"
  find "$ctx" -name __pycache__ -prune -exec rm -rf {} +
  build services "$ctx" "$hash" -f Dockerfile.services -t edx-arena/services:latest || die "docker build of services failed"
fi
log "ready: edx-arena/services:latest edx-arena/postgres:15 edx-arena/redis:7 edx-arena/registry:2.8"
