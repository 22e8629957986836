"""Run a participant image in the sandbox and turn whatever happens into a typed outcome.

The hardening lives in one place, :func:`_run_kwargs`. While the container runs, one thread
samples its memory high-water mark (from the cgroup), and another measures ``/output`` and
kills the container as soon as it passes its caps, so a container cannot fill the disk. The
log is capped twice: the daemon's json-file driver rotates at a few times the cap (so
gigabytes on stdout never reach the disk), and a log-follower thread keeps only the last
``log_bytes``.

Failures of the platform are returned as ``platform_error`` (the caller retries them, not
charged), never raised; see :func:`run_container`.

Messages are user-safe: they describe what the container did, never the input's content.
Whatever comes after the container read the measurement (its exit, its output) is told in a
fixed vocabulary: the exit code, the caps, and for an invalid result whatever
``spec.validate_output`` raised, which for a Hidden run is
:func:`harness.formats.validate_output` (rule sentences and contract paths, never a word from
the file). The log is not quoted: what of it the owner sees is decided by
:mod:`harness.sandbox.disclosure`, in the exfiltration budget of ``docs/sandbox.md``.
"""

from __future__ import annotations

import collections
import logging
import os
import posixpath
import re
import stat
import threading
import time
from pathlib import Path
from typing import Any

import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

import docker
from harness.errors import FormatError, ImageError
from harness.sandbox.model import ImageInfo, Outcome, RunLimits, RunResult, RunSpec
from harness.sandbox.tree import Excess, output_excess, remove_tree
from harness.sandbox.users import read_user_files, resolve_user

__all__ = ["PLATFORM", "RUN_LABEL", "docker_client", "inspect_image", "remove_leftovers", "run_container"]

log = logging.getLogger(__name__)

RUN_LABEL = "edx-arena.run"
RESULT_NAME = "result.h5"
#: /output is measured this often (a bounded walk); what a container writes between two
#: measurements is the only overshoot of the output cap.
_OUTPUT_POLL_SECONDS = 0.1
#: Memory sampling: the host's cgroup file is a cheap read; the stats API is a daemon call.
_CGROUP_POLL_SECONDS = 0.05
_STATS_POLL_SECONDS = 0.25
#: An exit code of 128 + SIGKILL with memory this close to the limit is an OOM kill even when
#: the daemon missed the event (cgroup v1 reports OOMKilled reliably; this is the fallback).
_OOM_FRACTION = 0.9
PLATFORM = ("linux", "amd64")
#: More declared VOLUMEs than this and the image is refused (each becomes a tmpfs mount).
MAX_VOLUMES = 16
#: A tmpfs over one of these would hide the kernel's own file systems: refused.
_SYSTEM_DIRS = ("/proc", "/sys", "/dev")


def docker_client(timeout: int = 60) -> docker.DockerClient:
    return docker.from_env(timeout=timeout)


def inspect_image(ref: str, *, client: docker.DockerClient | None = None) -> ImageInfo:
    """The daemon's record of ``ref``; :class:`ImageError` if it has no such image."""
    client = client or docker_client()
    try:
        image = client.images.get(ref)
    except ImageNotFound:
        raise ImageError(f"no image {ref!r} on the server; upload it as a docker save archive") from None
    except APIError as exc:
        if not exc.is_client_error():  # the daemon's own trouble: a platform error
            raise
        raise ImageError(f"the server cannot look up {ref[:100]!r}: {exc.explanation or exc}") from None
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
        volumes=tuple((attrs.get("Config") or {}).get("Volumes") or ()),
    )


def _run_user(spec: RunSpec, image: ImageInfo, client: docker.DockerClient, tmpfs: dict[str, str]) -> str:
    """``limits.user``, or with ``allow_image_user`` the image's own USER resolved to numeric
    ``uid:gid`` from its /etc/passwd and /etc/group (:mod:`harness.sandbox.users`)."""
    if not spec.limits.allow_image_user:
        return spec.limits.user
    labels = {**spec.labels, RUN_LABEL: spec.run_id}
    passwd, group = read_user_files(client, image.pinned, labels=labels, tmpfs=tmpfs)
    uid, gid = resolve_user(image.user, passwd=passwd, group=group)
    return f"{uid}:{gid}"


def _go_clean(path: str) -> str:
    """Go's ``filepath.Clean``, which the daemon applies to a VOLUME path (unlike
    ``posixpath.normpath`` it also folds a leading ``//``)."""
    return re.sub(r"^/+", "/", posixpath.normpath(path))


def _volume_mounts(image: ImageInfo, taken: set[str], limits: RunLimits) -> dict[str, str]:
    """A tmpfs over every VOLUME the image declares, so none becomes an anonymous volume.

    The daemon would otherwise create a writable volume there (``--read-only`` does not apply to
    volumes), on its own disk, outside the /output watcher, and keep it after the container. It
    skips that for a path that already has a mount, keyed by the cleaned path: hence the same
    cleaning here. A path one of our own mounts covers is left to it; one beneath a bind mount
    of ours (/output, /input, /submission) or over the kernel's file systems is refused.
    """
    if len(image.volumes) > MAX_VOLUMES:
        raise ImageError(f"the image declares {len(image.volumes)} VOLUMEs; at most {MAX_VOLUMES} are allowed")
    binds = taken - {"/tmp"}
    mounts = {}
    for declared in image.volumes:
        path = _go_clean(declared)
        if not path.startswith("/"):
            raise ImageError(f"the image declares VOLUME {declared!r}, which is not an absolute path; remove it")
        if path in taken:
            continue
        if path == "/" or any(path == d or path.startswith(d + "/") for d in _SYSTEM_DIRS):
            raise ImageError(f"the image declares VOLUME {declared!r} over a system directory; remove it")
        if any(path.startswith(b + "/") for b in binds):
            raise ImageError(
                f"the image declares VOLUME {declared!r} inside the sandbox's {path.split('/')[1]!r} mount; remove it"
            )
        mounts[path] = f"size={limits.tmpfs_bytes},mode=1777,noexec,nosuid,nodev"
    return mounts


def _run_kwargs(spec: RunSpec, image: ImageInfo, output_dir: Path, *, client: docker.DockerClient) -> dict:
    """Every sandbox setting of design §5, in one place."""
    lim = spec.limits
    binds = {
        str(Path(spec.input_path).resolve()): {"bind": "/input/measurement.h5", "mode": "ro"},
        str(output_dir.resolve()): {"bind": "/output", "mode": "rw"},
        **{str(Path(host).resolve()): {"bind": inside, "mode": "ro"} for host, inside in spec.read_only_mounts.items()},
    }
    taken = {_go_clean(b["bind"]) for b in binds.values()} | {"/tmp"}
    tmpfs = {**_volume_mounts(image, taken, lim), "/tmp": f"size={lim.tmpfs_bytes},mode=1777"}
    kwargs = dict(
        image=image.pinned,
        command=spec.command,
        environment=spec.environment or {},
        user=_run_user(spec, image, client, tmpfs),
        detach=True,
        network_mode="none" if lim.network_disabled else "bridge",
        read_only=lim.read_only_root,
        tmpfs=tmpfs,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        nano_cpus=int(lim.cpus * 1e9),
        mem_limit=lim.memory_bytes,
        memswap_limit=lim.memory_bytes,
        pids_limit=lim.pids,
        init=True,
        ipc_mode="none",
        # RLIMIT_FSIZE stops any single file at the output cap + 1 byte inside the kernel (the
        # writer gets EFBIG/SIGXFSZ), so one huge write cannot outrun the watcher's poll; the
        # +1 lets the total exceed the cap, which is then reported as output_too_large. No core
        # dumps: they would land in the image's WORKDIR, which is left as the image set it.
        ulimits=[
            docker.types.Ulimit(name="fsize", soft=lim.output_bytes + 1, hard=lim.output_bytes + 1),
            docker.types.Ulimit(name="core", soft=0, hard=0),
        ],
        # The run label is set last so that caller labels can never hide a run from clean-up.
        labels={**spec.labels, RUN_LABEL: spec.run_id},
        # The daemon rotates its json-file at 8 × cap (JSON framing costs ~70 B a line), so
        # gigabytes on stdout never reach the disk: at most 16 × cap per run. _LogTail keeps the
        # last ``cap`` bytes in memory and marks the truncation.
        log_config={
            "type": "json-file",
            "config": {"max-size": str(8 * max(lim.log_bytes, 4096)), "max-file": "2", "compress": "false"},
        },
        volumes=binds,
    )
    if lim.runtime:
        kwargs["runtime"] = lim.runtime
    return kwargs


def _output_excess(root: Path, limits: RunLimits) -> Excess | None:
    """Why ``root`` is over its caps, or ``None`` (:func:`harness.sandbox.tree.output_excess`).

    Counting entries and levels too keeps a container that makes millions of empty files or
    a very deep tree from making this walk (and the caller's clean-up) arbitrarily slow.
    """
    return output_excess(
        root, max_bytes=limits.output_bytes, max_entries=limits.output_files, max_depth=limits.output_depth
    )


def _cgroup_peak_file(container_id: str) -> Path | None:
    """The container's memory high-water-mark file, when this process shares the daemon's host.

    cgroup v1 (cgroupfs or systemd driver) then v2; ``None`` when the harness runs elsewhere
    (e.g. in a worker container without the host's /sys/fs/cgroup).
    """
    root = Path("/sys/fs/cgroup")
    for path in (
        root / "memory" / "docker" / container_id / "memory.max_usage_in_bytes",
        root / "memory" / "system.slice" / f"docker-{container_id}.scope" / "memory.max_usage_in_bytes",
        root / "system.slice" / f"docker-{container_id}.scope" / "memory.peak",
        root / "docker" / container_id / "memory.peak",
    ):
        if os.access(path, os.R_OK):
            return path
    return None


class _PeakMemory(threading.Thread):
    """Samples the container's memory high-water mark until stopped.

    It reads the cgroup's own high-water mark (v1 ``memory.max_usage_in_bytes``, v2
    ``memory.peak``), so sparse samples still see the peak, except for a rise after the last
    sample. From the host's cgroup file it samples every ``_CGROUP_POLL_SECONDS``; otherwise
    through the daemon's stats API, whose one-shot call blocks for up to a second (its
    collector ticks once a second), hence a thread of its own: a run shorter than that may be
    reported with its start-up memory only.
    """

    def __init__(self, container) -> None:
        super().__init__(daemon=True)
        self.container = container
        self.peak: int | None = None
        self._halt = threading.Event()

    def _record(self, usage) -> None:
        if usage:
            self.peak = max(self.peak or 0, int(usage))

    def _from_stats(self) -> None:
        try:
            stats = self.container.stats(stream=False, one_shot=True)
        except (APIError, requests.RequestException, NotFound):
            return
        mem = stats.get("memory_stats") or {}
        self._record(mem.get("max_usage") or mem.get("usage"))

    def run(self) -> None:
        peak_file = _cgroup_peak_file(self.container.id)
        while not self._halt.is_set():
            if peak_file is None:
                self._from_stats()
                self._halt.wait(_STATS_POLL_SECONDS)
                continue
            try:
                self._record(peak_file.read_text().strip())
            except (OSError, ValueError):
                return  # the cgroup is gone: the container has exited
            self._halt.wait(_CGROUP_POLL_SECONDS)

    def stop(self) -> None:
        self._halt.set()  # not joined: an in-flight stats call ends on its own, harmlessly


class _OutputWatch(threading.Thread):
    """Measures /output every ``_OUTPUT_POLL_SECONDS`` and kills the container past its caps."""

    def __init__(self, container, output_dir: Path, limits: RunLimits) -> None:
        super().__init__(daemon=True)
        self.container, self.output_dir, self.limits = container, output_dir, limits
        #: Why the output caps were passed while running (the container was then killed).
        self.excess: Excess | None = None
        #: Set when the measurement itself failed: the caps could not be checked, so the
        #: container was killed rather than left running unwatched.
        self.failed = False
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                excess = _output_excess(self.output_dir, self.limits)
            except Exception:
                log.exception("the /output watcher failed; stopping the container")
                self.failed = True
                excess = None
            if excess or self.failed:
                self.excess = excess
                try:
                    self.container.kill()
                except (APIError, NotFound, requests.RequestException):
                    pass
                return
            self._halt.wait(_OUTPUT_POLL_SECONDS)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)


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
        self._stream: Any = None

    def run(self) -> None:
        try:
            self._stream = self.container.logs(stdout=True, stderr=True, stream=True, follow=True)
            for chunk in self._stream:
                self.total += len(chunk)
                self._chunks.append(chunk)
                self._kept += len(chunk)
                while self._chunks and self._kept - len(self._chunks[0]) >= self.cap:
                    self._kept -= len(self._chunks.popleft())
        except Exception:
            pass

    def text(self, *, drain_seconds: float = 10) -> str:
        """The last ``cap`` bytes, decoded, marked when earlier output was dropped."""
        self.join(timeout=drain_seconds)
        if self.is_alive() and self._stream is not None:
            self._stream.close()  # still draining gigabytes: what we hold is the tail so far
            self.join(timeout=2)
        raw = b"".join(list(self._chunks))[-self.cap :]
        if self.total > self.cap or self.is_alive():
            raw = b"[log truncated: showing the last %d bytes]\n" % len(raw) + raw
        return raw.decode("utf-8", errors="replace")


def _check_output(spec: RunSpec, output_dir: Path) -> tuple[Outcome, str, Path | None]:
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


def _prepare_output(work_dir: Path) -> Path:
    output_dir = Path(work_dir) / "output"
    if not remove_tree(output_dir):  # a retry in the same work_dir starts from an empty /output
        raise OSError(f"cannot empty {output_dir}")
    output_dir.mkdir(parents=True)
    output_dir.chmod(0o777)  # the sandbox user (65534 or the image's) must be able to write
    return output_dir


def _wait(container, wall_seconds: float) -> tuple[int | None, bool]:
    """``(exit code, timed out)``; a lost daemon connection is re-raised as a platform failure."""
    started = time.monotonic()
    try:
        return int(container.wait(timeout=wall_seconds)["StatusCode"]), False
    except requests.RequestException:
        # The SDK reports its read time-out as ReadTimeout or as a ConnectionError wrapping
        # one; a dead daemon raises ConnectionError too, but long before the wall time.
        if time.monotonic() - started < 0.95 * wall_seconds:
            raise
    try:
        container.kill()
    except APIError as exc:
        if not exc.is_client_error():  # 409: it exited on its own at the last moment
            raise
    try:
        return int(container.wait(timeout=30)["StatusCode"]), True
    except NotFound:
        return None, True


def run_container(spec: RunSpec, *, client: docker.DockerClient | None = None) -> RunResult:
    """Run ``spec.image`` on ``spec.input_path`` under the sandbox; always returns a typed result.

    Never raises for a run that went wrong: a platform failure (daemon unreachable, API
    error, missing input file) is returned as ``platform_error`` so that the caller retries
    it without charging the participant. The container is removed whatever happens.
    ``work_dir/output`` is created fresh, writable by the sandbox user, and left for the
    caller to score and then delete.

    Residual risk: /output is a bind mount, which cannot carry a size cap. RLIMIT_FSIZE stops
    any single file at the cap inside the kernel, and the watcher kills the container within
    ``_OUTPUT_POLL_SECONDS`` of the total passing it; a container writing many files at full
    disk speed can still overshoot by what the disk absorbs in that interval. Deployments that
    need a hard bound put ``work_dir`` on a filesystem with project quotas.
    """
    input_path = Path(spec.input_path)
    if not input_path.is_file():
        # Docker would silently create a directory in its place; this is never the image's fault.
        log.error("sandbox run %s: input %s is not a file", spec.run_id, input_path)
        return RunResult(
            Outcome.platform_error, "the input measurement is missing on the server (a platform fault, not the image's)"
        )
    try:
        client = client or docker_client()
        image = inspect_image(spec.image, client=client)
    except ImageError as exc:
        return RunResult(Outcome.image_invalid, exc.message)
    except (DockerException, requests.RequestException) as exc:
        return RunResult(Outcome.platform_error, f"the container platform is unavailable: {type(exc).__name__}")
    if (image.os, image.architecture) != PLATFORM:
        return RunResult(
            Outcome.image_invalid,
            f"the image is for {image.os}/{image.architecture}; the server runs linux/amd64 images",
            image_digest=image.id,
        )
    try:
        kwargs = _run_kwargs(spec, image, _prepare_output(spec.work_dir), client=client)
    except ImageError as exc:
        return RunResult(Outcome.image_invalid, exc.message, image_digest=image.id)
    except (DockerException, requests.RequestException) as exc:  # before OSError: APIError is one
        log.error("sandbox run %s: the user probe failed: %s", spec.run_id, exc)
        return RunResult(
            Outcome.platform_error,
            f"the container platform is unavailable: {type(exc).__name__}",
            image_digest=image.id,
        )
    except OSError as exc:
        log.error("sandbox run %s: cannot prepare %s: %s", spec.run_id, spec.work_dir, exc)
        return RunResult(
            Outcome.platform_error, "the server could not prepare the run's output directory", image_digest=image.id
        )
    output_dir = Path(spec.work_dir) / "output"
    container = None
    started = time.monotonic()
    try:
        try:
            container = client.containers.create(**kwargs)
            container.start()
        except APIError as exc:
            if exc.is_client_error():  # the daemon refused this image/command, e.g. no such executable
                return RunResult(
                    Outcome.image_invalid,
                    f"the image could not be started: {exc.explanation or exc}",
                    image_digest=image.id,
                )
            raise
        started = time.monotonic()
        watch, memory = _OutputWatch(container, output_dir, spec.limits), _PeakMemory(container)
        log_tail = _LogTail(container, spec.limits.log_bytes)
        for thread in (watch, memory, log_tail):
            thread.start()
        try:
            exit_code, timed_out = _wait(container, spec.limits.wall_seconds)
        finally:
            watch.stop()
            memory.stop()
        runtime = time.monotonic() - started
        container.reload()
        oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
        logs = log_tail.text()
        peak = memory.peak
        if oom:  # the cgroup reached its limit by definition, even if no sample caught it
            peak = max(peak or 0, spec.limits.memory_bytes)
        common: dict[str, Any] = dict(
            exit_code=exit_code, runtime_seconds=runtime, peak_memory_bytes=peak, log=logs, image_digest=image.id
        )
        if watch.failed:
            return RunResult(
                Outcome.platform_error, "the server could not measure /output and stopped the run", **common
            )
        # Checked first and whatever the exit code: a writer stopped by RLIMIT_FSIZE or killed
        # by the watcher exits non-zero, but the cause is the output size.
        try:
            excess = watch.excess or _output_excess(output_dir, spec.limits)
        except OSError:
            log.exception("sandbox run %s: cannot measure %s", spec.run_id, output_dir)
            return RunResult(Outcome.platform_error, "the server could not measure /output", **common)
        if excess:
            stopped = "; the run was stopped" if watch.excess else ""
            cap = " (the cap)" if excess.outcome == Outcome.output_too_large else ""
            return RunResult(excess.outcome, f"{excess.message}{cap}{stopped}", **common)
        if timed_out:
            return RunResult(
                Outcome.timeout,
                f"the container ran longer than {spec.limits.wall_seconds:g} s and was stopped",
                **common,
            )
        if oom or (exit_code == 137 and peak is not None and peak >= _OOM_FRACTION * spec.limits.memory_bytes):
            mib = spec.limits.memory_bytes / 2**20
            return RunResult(
                Outcome.oom_killed,
                f"the container used more than its {mib:.0f} MiB memory limit and was killed (exit code {exit_code})",
                **common,
            )
        if exit_code != 0:
            return RunResult(
                Outcome.nonzero_exit,
                # Not the log's last line: the message reaches the owner whatever the log
                # policy, and a line is whatever the container chose to print.
                f"the container exited with code {exit_code}; the log shows the error",
                **common,
            )
        outcome, message, path = _check_output(spec, output_dir)
        return RunResult(outcome, message, output_path=path, **common)
    except (DockerException, requests.RequestException) as exc:
        log.exception("sandbox run %s failed on the platform side", spec.run_id)
        return RunResult(
            Outcome.platform_error,
            f"the container platform failed: {type(exc).__name__}",
            runtime_seconds=time.monotonic() - started,
            image_digest=image.id,
        )
    finally:
        if container is not None:
            try:
                container.remove(force=True, v=True)  # v: any anonymous volume goes with it
            except (APIError, NotFound, requests.RequestException):
                log.warning("could not remove container of run %s; remove_leftovers will", spec.run_id)


def remove_leftovers(
    *, keep_run_ids=(), labels: dict[str, str] | None = None, client: docker.DockerClient | None = None
) -> list[str]:
    """Remove every container labelled as a sandbox run whose id is not in ``keep_run_ids``.

    ``labels`` narrows the sweep (e.g. to one deployment's instance label), so two servers
    sharing a daemon never remove each other's runs.
    """
    client = client or docker_client()
    keep = set(keep_run_ids)
    removed = []
    selector = [RUN_LABEL] + [f"{k}={v}" for k, v in (labels or {}).items()]
    for container in client.containers.list(all=True, filters={"label": selector}):
        run_id = container.labels.get(RUN_LABEL, "")
        if run_id in keep:
            continue
        try:
            container.remove(force=True, v=True)
            removed.append(run_id)
        except (APIError, NotFound):
            pass
    return removed
