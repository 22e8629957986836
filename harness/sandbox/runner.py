"""Run a participant image in the sandbox and turn whatever happens into a typed outcome.

The hardening lives in one place, :func:`_run_kwargs`. A watcher thread samples the
container's memory (cgroup ``max_usage``) and the size of ``/output`` while it runs, and kills
it as soon as the output passes its cap, so a container cannot fill the disk. The log is
capped twice: the daemon's json-file driver rotates at a few times the cap (so gigabytes on
stdout never reach the disk), and a log-follower thread keeps only the last ``log_bytes``.

Messages are user-safe: they describe what the container did, never the input's content.
"""

from __future__ import annotations

import collections
import logging
import os
import stat
import threading
import time
from pathlib import Path

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from harness.errors import FormatError, ImageError
from harness.sandbox.model import ImageInfo, Outcome, RunLimits, RunResult, RunSpec

log = logging.getLogger(__name__)

RUN_LABEL = "edx-arena.run"
RESULT_NAME = "result.h5"
_POLL_SECONDS = 0.25


def docker_client(timeout: int = 60) -> docker.DockerClient:
    return docker.from_env(timeout=timeout)


def inspect_image(ref: str, *, client: docker.DockerClient | None = None) -> ImageInfo:
    """The daemon's record of ``ref``; :class:`ImageError` if it has no such image."""
    client = client or docker_client()
    try:
        image = client.images.get(ref)
    except ImageNotFound:
        raise ImageError(f"no image {ref!r} on the server; upload it as a docker save archive") from None
    attrs = image.attrs
    digests = attrs.get("RepoDigests") or []
    return ImageInfo(
        id=attrs["Id"],
        repo_digest=digests[0] if digests else None,
        tags=tuple(attrs.get("RepoTags") or ()),
        user=(attrs.get("Config") or {}).get("User") or "",
        os=attrs.get("Os", ""),
        architecture=attrs.get("Architecture", ""),
        size=int(attrs.get("Size", 0)),
    )


def _is_root(user: str) -> bool:
    name = user.split(":", 1)[0]
    return name in ("", "0", "root")


def _run_user(limits: RunLimits, image: ImageInfo) -> str:
    if not limits.allow_image_user:
        return limits.user
    if _is_root(image.user):
        raise ImageError(
            f"the image runs as {image.user or 'root'}; set a non-root USER in its Dockerfile (e.g. USER 65534)"
        )
    return image.user


def _run_kwargs(spec: RunSpec, image: ImageInfo, output_dir: Path) -> dict:
    """Every sandbox setting of design §5, in one place."""
    lim = spec.limits
    kwargs = dict(
        image=image.pinned,
        command=spec.command,
        environment=spec.environment or {},
        user=_run_user(lim, image),
        detach=True,
        network_mode="none" if lim.network_disabled else "bridge",
        read_only=lim.read_only_root,
        tmpfs={"/tmp": f"size={lim.tmpfs_bytes},mode=1777"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        nano_cpus=int(lim.cpus * 1e9),
        mem_limit=lim.memory_bytes,
        memswap_limit=lim.memory_bytes,
        pids_limit=lim.pids,
        init=True,
        ipc_mode="none",
        # RLIMIT_FSIZE stops any single file at the output cap + 1 byte inside the kernel (the
        # writer gets EFBIG/SIGXFSZ), so one huge write cannot outrun the 0.25 s watcher poll;
        # the +1 lets the total exceed the cap, which is then reported as output_too_large.
        ulimits=[docker.types.Ulimit(name="fsize", soft=lim.output_bytes + 1, hard=lim.output_bytes + 1)],
        labels={RUN_LABEL: spec.run_id, **spec.labels},
        # The daemon rotates its json-file at 8 × cap (JSON framing costs ~70 B a line), so
        # gigabytes on stdout never reach the disk: at most 16 × cap per run. _LogTail keeps the
        # last ``cap`` bytes in memory and marks the truncation.
        log_config={"type": "json-file", "config": {"max-size": str(8 * max(lim.log_bytes, 4096)), "max-file": "2", "compress": "false"}},
        volumes={
            str(Path(spec.input_path).resolve()): {"bind": "/input/measurement.h5", "mode": "ro"},
            str(output_dir.resolve()): {"bind": "/output", "mode": "rw"},
        },
        working_dir="/tmp",
    )
    if lim.runtime:
        kwargs["runtime"] = lim.runtime
    return kwargs


def _tree_size(root: Path) -> int:
    """Bytes under ``root`` by lstat: symlinks are counted as links, never followed."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames + dirnames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


class _Watcher(threading.Thread):
    """Samples peak memory and output size; kills the container when the output is too big."""

    def __init__(self, container, output_dir: Path, output_cap: int) -> None:
        super().__init__(daemon=True)
        self.container, self.output_dir, self.output_cap = container, output_dir, output_cap
        self.peak_memory: int | None = None
        self.output_exceeded = False
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                stats = self.container.stats(stream=False, one_shot=True)
                mem = stats.get("memory_stats") or {}
                usage = mem.get("max_usage") or mem.get("usage")
                if usage:
                    self.peak_memory = max(self.peak_memory or 0, int(usage))
            except (APIError, requests.RequestException, NotFound):
                pass
            if _tree_size(self.output_dir) > self.output_cap:
                self.output_exceeded = True
                try:
                    self.container.kill()
                except (APIError, NotFound):
                    pass
                return
            self._halt.wait(_POLL_SECONDS)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


class _LogTail(threading.Thread):
    """Follows the container's log stream and keeps only its last ``cap`` bytes in memory.

    Counting every byte that passes is what makes the truncation marker reliable: the daemon's
    rotated json-file may already have dropped the beginning, so its size says nothing.
    """

    def __init__(self, container, cap: int) -> None:
        super().__init__(daemon=True)
        self.container, self.cap = container, cap
        self.total = 0
        self._chunks: collections.deque[bytes] = collections.deque()
        self._kept = 0
        self._stream = None

    def run(self) -> None:
        try:
            self._stream = self.container.logs(stdout=True, stderr=True, stream=True, follow=True)
            for chunk in self._stream:
                self.total += len(chunk)
                self._chunks.append(chunk)
                self._kept += len(chunk)
                while self._chunks and self._kept - len(self._chunks[0]) >= self.cap:
                    self._kept -= len(self._chunks.popleft())
        except Exception:  # noqa: BLE001 - the container may vanish mid-stream; keep what arrived
            pass

    def text(self, *, drain_seconds: float = 10) -> str:
        """The last ``cap`` bytes, decoded, marked when earlier output was dropped."""
        self.join(timeout=drain_seconds)
        if self.is_alive() and self._stream is not None:
            self._stream.close()  # still draining gigabytes: what we hold is the tail so far
            self.join(timeout=2)
        raw = b"".join(list(self._chunks))[-self.cap:]
        if self.total > self.cap or self.is_alive():
            raw = b"[log truncated: showing the last %d bytes]\n" % len(raw) + raw
        return raw.decode("utf-8", errors="replace")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def _check_output(spec: RunSpec, output_dir: Path) -> tuple[Outcome, str, Path | None]:
    if _tree_size(output_dir) > spec.limits.output_bytes:
        return Outcome.output_too_large, f"/output holds more than {spec.limits.output_bytes} bytes", None
    result = output_dir / RESULT_NAME
    try:
        st = os.lstat(result)
    except FileNotFoundError:
        return Outcome.missing_output, f"the container exited 0 but wrote no /output/{RESULT_NAME}", None
    if not stat.S_ISREG(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        return Outcome.invalid_output, f"/output/{RESULT_NAME} is {kind}; write the result file itself", None
    if spec.validate_output is not None:
        try:
            spec.validate_output(result)
        except FormatError as exc:
            return Outcome.invalid_output, f"/output/{RESULT_NAME} is not a valid result: {exc.message}", None
    return Outcome.succeeded, "the container finished and wrote a valid result", result


def run_container(spec: RunSpec, *, client: docker.DockerClient | None = None) -> RunResult:
    """Run ``spec.image`` on ``spec.input_path`` under the sandbox; always returns a typed result.

    The container is removed whatever happens. ``work_dir/output`` is created fresh, writable by
    the sandbox user, and left for the caller to score and then delete.
    """
    try:
        client = client or docker_client()
        image = inspect_image(spec.image, client=client)
    except ImageError as exc:
        return RunResult(Outcome.image_invalid, exc.message)
    except (DockerException, requests.RequestException) as exc:
        return RunResult(Outcome.platform_error, f"the container platform is unavailable: {type(exc).__name__}")
    output_dir = Path(spec.work_dir) / "output"
    output_dir.mkdir(parents=True, exist_ok=False)
    output_dir.chmod(0o777)  # the sandbox user (65534) must be able to write its result
    container = None
    started = time.monotonic()
    try:
        try:
            kwargs = _run_kwargs(spec, image, output_dir)
        except ImageError as exc:
            return RunResult(Outcome.image_invalid, exc.message, image_digest=image.id)
        try:
            container = client.containers.create(**kwargs)
            container.start()
        except (APIError, requests.RequestException) as exc:
            status = getattr(exc, "status_code", None)
            if status is not None and 400 <= status < 500:
                return RunResult(Outcome.image_invalid, f"the image could not be started: {getattr(exc, 'explanation', exc)}", image_digest=image.id)
            return RunResult(Outcome.platform_error, f"the container could not be started: {type(exc).__name__}", image_digest=image.id)
        watcher = _Watcher(container, output_dir, spec.limits.output_bytes)
        watcher.start()
        log_tail = _LogTail(container, spec.limits.log_bytes)
        log_tail.start()
        timed_out = False
        exit_code: int | None = None
        try:
            exit_code = int(container.wait(timeout=spec.limits.wall_seconds)["StatusCode"])
        except requests.RequestException:  # the SDK's wait time-out surfaces as ConnectionError/ReadTimeout
            timed_out = True
            try:
                container.kill()
                exit_code = int(container.wait(timeout=30)["StatusCode"])
            except (APIError, NotFound, requests.RequestException):
                pass
        finally:
            watcher.stop()
        runtime = time.monotonic() - started
        container.reload()
        oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
        logs = log_tail.text()
        common = dict(exit_code=exit_code, runtime_seconds=runtime, peak_memory_bytes=watcher.peak_memory, log=logs, image_digest=image.id)
        if watcher.output_exceeded or _tree_size(output_dir) > spec.limits.output_bytes:
            return RunResult(Outcome.output_too_large, f"/output grew past {spec.limits.output_bytes} bytes; the run was stopped", **common)
        if timed_out:
            return RunResult(Outcome.timeout, f"the container ran longer than {spec.limits.wall_seconds:g} s and was stopped", **common)
        if oom:
            mib = spec.limits.memory_bytes / 2**20
            return RunResult(Outcome.oom_killed, f"the container used more than its {mib:.0f} MiB memory limit and was killed", **common)
        if exit_code != 0:
            return RunResult(Outcome.nonzero_exit, f"the container exited with code {exit_code}; last log line: {_last_line(logs)}", **common)
        outcome, message, path = _check_output(spec, output_dir)
        return RunResult(outcome, message, output_path=path, **common)
    except (DockerException, requests.RequestException) as exc:
        log.exception("sandbox run %s failed on the platform side", spec.run_id)
        return RunResult(Outcome.platform_error, f"the container platform failed: {type(exc).__name__}", runtime_seconds=time.monotonic() - started)
    finally:
        if container is not None:
            try:
                container.remove(force=True)
            except (APIError, NotFound, requests.RequestException):
                log.warning("could not remove container of run %s; remove_leftovers will", spec.run_id)


def remove_leftovers(*, keep_run_ids=(), client: docker.DockerClient | None = None) -> list[str]:
    """Remove every container labelled as a sandbox run whose id is not in ``keep_run_ids``."""
    client = client or docker_client()
    keep = set(keep_run_ids)
    removed = []
    for container in client.containers.list(all=True, filters={"label": RUN_LABEL}):
        run_id = container.labels.get(RUN_LABEL, "")
        if run_id in keep:
            continue
        try:
            container.remove(force=True)
            removed.append(run_id)
        except (APIError, NotFound):
            pass
    return removed
