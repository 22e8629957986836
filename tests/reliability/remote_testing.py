"""A second host on one machine, for the compute-worker tests (issue 19): a second ``dockerd``
with its own data root, exec root and socket, and a Docker Distribution registry on a loopback
port. Every path is under a short ``/tmp/edxr-XXXX`` (unix socket paths must stay < 108 bytes).

The second daemon must not touch the host's networks: started with ``--bridge none`` dockerd
deletes the host's ``docker0`` bridge (moby's removeDefaultBridgeInterface), which breaks the
main daemon for everyone. It gets a private bridge of its own (``edxbr-remote``, created here
and removed after, only if we created it) and ``--iptables=false --ip6tables=false``; sandbox
containers run with no network anyway. It shares the machine's containerd under namespaces of
its own, so it sees none of the main daemon's containers.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from reliability_testing import free_port, wait_for

import docker

BRIDGE = "edxbr-remote"
BRIDGE_ADDRESS = "10.217.0.1/24"


ROOT = Path(__file__).resolve().parents[2]


def start_worker(argv: list[str], env: dict, log: Path) -> subprocess.Popen:
    """``edx-arena worker`` with ``argv`` under ``env``, its output appended to ``log``."""
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "worker", *argv],
        env=env,
        cwd=ROOT,
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
    )


def _ip(*argv: str) -> int:
    return subprocess.run(["ip", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode


@dataclass
class Host:
    root: Path
    docker_host: str
    data_root: Path
    registry: str
    registry_dir: Path

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.docker_host, timeout=120)


@contextmanager
def second_host() -> Iterator[Host]:
    """A second daemon and a registry, both stopped (by their own pids) and removed after."""
    root = Path(tempfile.mkdtemp(prefix="edxr-", dir="/tmp"))
    created_bridge = _ip("link", "show", BRIDGE) != 0
    if created_bridge:
        assert _ip("link", "add", BRIDGE, "type", "bridge") == 0
        _ip("addr", "add", BRIDGE_ADDRESS, "dev", BRIDGE)
        assert _ip("link", "set", BRIDGE, "up") == 0
    sock = root / "d.sock"
    ns = f"edxr-{root.name.removeprefix('edxr-')}"
    daemon = subprocess.Popen(
        [
            "dockerd",
            "--data-root",
            str(root / "data"),
            "--exec-root",
            str(root / "exec"),
            "--host",
            f"unix://{sock}",
            "--pidfile",
            str(root / "d.pid"),
            "--bridge",
            BRIDGE,
            "--iptables=false",
            "--ip6tables=false",
            "--containerd-namespace",
            ns,
            "--containerd-plugins-namespace",
            f"{ns}-plugins",
            "--log-level",
            "warn",
        ],
        stdout=open(root / "dockerd.log", "ab"),
        stderr=subprocess.STDOUT,
    )
    port = free_port()
    registry_dir = root / "registry"
    config = root / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {registry_dir}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    registry = subprocess.Popen(
        ["docker-registry", "serve", str(config)], stdout=open(root / "registry.log", "ab"), stderr=subprocess.STDOUT
    )
    host = Host(root, f"unix://{sock}", root / "data", f"127.0.0.1:{port}", registry_dir)
    try:

        def daemon_up() -> bool:
            assert daemon.poll() is None, (root / "dockerd.log").read_text()[-3000:]
            try:
                return bool(host.client().ping())
            except Exception:
                return False

        def registry_up() -> bool:
            assert registry.poll() is None, (root / "registry.log").read_text()[-3000:]
            try:
                return requests.get(f"http://{host.registry}/v2/", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(daemon_up, timeout=60, what="the second dockerd")
        wait_for(registry_up, timeout=30, what="the registry")
        yield host
    finally:
        try:
            client = host.client()
            for container in client.containers.list(all=True):
                container.remove(force=True)
        except Exception:
            pass
        for proc in (daemon, registry):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=15)
        time.sleep(0.5)
        subprocess.run(["umount", "-R", str(root / "exec")], stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(root, ignore_errors=True)
        if created_bridge:
            _ip("link", "del", BRIDGE)


def scan(paths, needles: list[bytes]) -> list[str]:
    """Files under ``paths`` that hold any of ``needles`` (read in overlapping 8 MiB windows)."""
    width = max(len(n) for n in needles)
    hits = []
    for top in paths:
        for path in Path(top).rglob("*"):
            if not path.is_file() or path.is_symlink():
                continue
            try:
                with path.open("rb") as f:
                    tail = b""
                    while chunk := f.read(8 * 2**20):
                        window = tail + chunk
                        if any(n in window for n in needles):
                            hits.append(str(path))
                            break
                        tail = window[-width:]
            except OSError:
                continue
    return hits
