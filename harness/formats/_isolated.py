"""Result validation in resource-limited child processes, kept warm in a pool.

Why: a hostile HDF5 file can crash libhdf5 (a segfault takes the whole process with it),
make it allocate without bound (a variable-length attribute's length is only known by
reading it) or loop. :func:`validate_result` already never follows links, rejects huge
declared shapes and chunks from metadata and reads chunk by chunk, but the API and worker
must survive what libhdf5 itself might do. So they call :func:`validate_result_isolated`:
the same checks in another interpreter (``python -I``) with

* ``RLIMIT_AS`` = the child's address space after its imports + ``memory_bytes``,
* ``RLIMIT_CORE`` = 0 and HDF5 dynamic filter plugins disabled (``HDF5_PLUGIN_PRELOAD=::``),
* a wall-clock ``timeout`` after which the child is killed,

and any death of the child (signal, MemoryError, unexpected exception, garbage on stdout)
becomes ``FormatError("the file could not be read safely: …", rule="unsafe")``.

**Warm pool (issue 20).** Starting an interpreter and importing numpy and h5py costs about
0.3 s, more than validating a small file, so children are kept: a :class:`ValidatorPool`
holds up to ``size`` of them, each answering one request at a time (one JSON line in on
stdin, one verdict line out on stdout). A child is recycled

* after any verdict other than "valid" (a hostile file may have left libhdf5 in a bad state:
  the next participant's file gets a child that never saw it),
* after ``max_files`` requests, or once its address space has grown by half its allowance
  (fragmentation must not make a later, valid file fail the memory limit),
* when it crashes or overruns its time (it is killed).

A child that had already served requests and then dies or runs out of memory may have died
of what earlier files left behind, so that request is repeated once in a fresh child; only a
fresh child's failure is the file's verdict. Processes forked from a process holding a pool
(Celery's prefork workers) start with an empty pool of their own.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from harness.errors import FileTooLargeError, FormatError

from ._result import ResultExpectation, validate_result
from ._safety import check_size, human_bytes

__all__ = [
    "DEFAULT_MAX_FILES",
    "DEFAULT_MEMORY_BYTES",
    "DEFAULT_TIMEOUT_S",
    "ValidatorPool",
    "validate_result_isolated",
    "validator_pool",
]

DEFAULT_TIMEOUT_S = 120.0
#: Address space the child may add to its post-import baseline (2× the largest chunk plus
#: libhdf5's caches fits comfortably).
DEFAULT_MEMORY_BYTES = 256 << 20
#: Requests a child answers before it is replaced.
DEFAULT_MAX_FILES = 200
#: The directory holding the ``harness`` package, put first on the child's sys.path.
_ROOT = str(Path(__file__).resolve().parents[2])
_BOOTSTRAP = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from harness.formats._isolated import _child_main; sys.exit(_child_main())"
)
_ENV = {
    "LANG": "C.UTF-8",
    "HDF5_PLUGIN_PRELOAD": "::",
    "HDF5_USE_FILE_LOCKING": "FALSE",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}
#: A verdict line is a few hundred bytes; anything far longer is not our child talking.
_MAX_VERDICT_BYTES = 1 << 20
#: Seconds a child may take to start (import numpy and h5py); not the file's time.
_START_TIMEOUT_S = 60.0


class _ChildDied(Exception):
    """The child stopped without a verdict (crash, memory, garbage); ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _ChildTimedOut(Exception):
    pass


@dataclass
class _Child:
    proc: subprocess.Popen
    served: int = 0
    #: The child's address space right after its imports (its own report).
    baseline_vm: int = 0
    buffer: bytearray = field(default_factory=bytearray)

    #: The child's stderr: a file, not a pipe, so that warnings piling up over many requests
    #: can never fill a pipe and stall the child; read only when the child dies.
    stderr: IO[bytes] | None = None

    @classmethod
    def start(cls, memory_bytes: int) -> _Child:
        """A new child, once its imports are done and its limits set; ``RuntimeError`` if it
        cannot start (a platform fault, never the file's)."""
        stderr = tempfile.TemporaryFile()
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _BOOTSTRAP, _ROOT, str(int(memory_bytes))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=_ENV,
            cwd="/",
        )
        child = cls(proc, stderr=stderr)
        try:
            hello = child._read_line(time.monotonic() + _START_TIMEOUT_S)
            child.baseline_vm = int(json.loads(hello)["vm"])
        except (_ChildDied, _ChildTimedOut, ValueError, KeyError, TypeError):
            child.kill()
            raise RuntimeError("the isolated HDF5 validator could not start") from None
        return child

    def ask(self, request: dict, *, timeout: float, memory_bytes: int) -> dict:
        deadline = time.monotonic() + timeout
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:
            raise _ChildDied(self._reason(memory_bytes)) from None
        line = self._read_line(deadline, memory_bytes=memory_bytes)
        self.served += 1
        verdict = _parse(line)
        if verdict is None:
            raise _ChildDied("the validator stopped unexpectedly")
        return verdict

    def _read_line(self, deadline: float, *, memory_bytes: int = 0) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _ChildTimedOut
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise _ChildDied(self._reason(memory_bytes))
            self.buffer += chunk
            if len(self.buffer) > _MAX_VERDICT_BYTES:
                raise _ChildDied("the validator stopped unexpectedly")
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        return line

    def _reason(self, memory_bytes: int) -> str:
        # stderr may hold paths and library internals: only its kind reaches the user.
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
        stderr = b""
        if self.stderr is not None:
            self.stderr.seek(0, os.SEEK_END)
            self.stderr.seek(max(0, self.stderr.tell() - 65536))
            stderr = self.stderr.read()
        if b"MemoryError" in stderr:
            return f"reading it needed more than {human_bytes(memory_bytes)} of memory"
        if self.proc.returncode is not None and self.proc.returncode < 0:
            return f"the HDF5 library crashed on it (signal {-self.proc.returncode})"
        return "the validator stopped unexpectedly"

    def worn(self, verdict: dict, *, max_files: int, memory_bytes: int) -> bool:
        grown = int(verdict.get("vm", 0)) - self.baseline_vm
        return not verdict.get("ok") or self.served >= max_files or grown > memory_bytes // 2

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass

    def close(self) -> None:
        """Ask the child to stop (EOF on its stdin), killing it if it does not."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


class ValidatorPool:
    """Up to ``size`` warm validator children with one memory allowance; thread-safe.

    ``validate`` blocks while all children are busy. ``spawned`` counts children started
    (for tests and benchmarks: a warm pool starts few).
    """

    def __init__(self, *, size: int, memory_bytes: int = DEFAULT_MEMORY_BYTES, max_files: int = DEFAULT_MAX_FILES):
        if size < 1 or max_files < 1:
            raise ValueError("size and max_files must be at least 1")
        self.size = size
        self.memory_bytes = int(memory_bytes)
        self.max_files = max_files
        self.spawned = 0
        self._idle: list[_Child] = []
        self._busy = 0
        self._cond = threading.Condition()

    def _take(self, *, fresh: bool) -> _Child:
        with self._cond:
            while not self._idle and self._busy >= self.size:
                self._cond.wait()
            self._busy += 1
            child = self._idle.pop() if self._idle else None
        if child is not None and not fresh:
            return child
        if child is not None:  # a fresh one is wanted: it takes this one's place
            child.close()
        try:
            child = _Child.start(self.memory_bytes)
        except BaseException:
            self._give_back(None)
            raise
        with self._cond:
            self.spawned += 1
        return child

    def _give_back(self, child: _Child | None) -> None:
        with self._cond:
            self._busy -= 1
            if child is not None:
                self._idle.append(child)
            self._cond.notify()

    def validate(self, path: str | os.PathLike, expect: ResultExpectation, *, timeout: float) -> None:
        """The verdict of :func:`validate_result` on ``path``, from a child; raises as it does."""
        request = {"path": os.fspath(Path(path).resolve()), "expect": expect.as_dict()}
        fresh = False
        while True:
            child = self._take(fresh=fresh)
            keep: _Child | None = None
            try:
                verdict = child.ask(request, timeout=timeout, memory_bytes=self.memory_bytes)
            except _ChildTimedOut:
                child.kill()
                raise FormatError(
                    f"the file could not be read safely: validation took longer than {timeout:g} s", rule="timeout"
                ) from None
            except _ChildDied as died:
                child.kill()
                if child.served > 0 and not fresh:
                    fresh = True  # earlier files may have worn it out: ask a child that saw nothing else
                    continue
                raise FormatError(f"the file could not be read safely: {died.reason}", rule="unsafe") from None
            else:
                if child.worn(verdict, max_files=self.max_files, memory_bytes=self.memory_bytes):
                    child.close()
                else:
                    keep = child
            finally:
                self._give_back(keep)
            _raise_verdict(verdict)
            return

    def close(self) -> None:
        with self._cond:
            idle, self._idle = self._idle, []
        for child in idle:
            child.close()


_pools: dict[int, ValidatorPool] = {}
_pools_lock = threading.Lock()


def validator_pool(memory_bytes: int = DEFAULT_MEMORY_BYTES) -> ValidatorPool:
    """This process's pool for ``memory_bytes`` (created on first use; as many children as CPUs)."""
    with _pools_lock:
        pool = _pools.get(memory_bytes)
        if pool is None:
            pool = _pools[memory_bytes] = ValidatorPool(size=max(2, os.cpu_count() or 1), memory_bytes=memory_bytes)
        return pool


def _forget_pools_after_fork() -> None:
    # The parent's children and pipes belong to the parent: a forked process starts its own.
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_pools_after_fork)


def validate_result_isolated(
    path: str | os.PathLike,
    expect: ResultExpectation,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> None:
    """:func:`validate_result` in a warm child process with a memory limit and a timeout.

    Parameters
    ----------
    path : path-like
        The uploaded file.
    expect : ResultExpectation
        The tier's expectation (``max_bytes`` is also checked here, before any child is asked).
    timeout : float
        Seconds before the child is killed (then ``rule="timeout"``).
    memory_bytes : int
        Address space the child may use beyond its state after importing numpy and h5py.

    Raises
    ------
    FileTooLargeError, FormatError
        As :func:`validate_result`; a crashed or killed child gives ``rule="unsafe"``.
    """
    check_size(path, expect.max_bytes)
    validator_pool(int(memory_bytes)).validate(path, expect, timeout=timeout)


def _raise_verdict(verdict: dict) -> None:
    if verdict.get("ok"):
        return
    if verdict.get("type") == "FileTooLargeError":
        raise FileTooLargeError(verdict["message"], where=verdict.get("where", "file"))
    raise FormatError(
        verdict["message"],
        where=verdict.get("where", "file"),
        rule=verdict.get("rule", "format"),
        attribute=verdict.get("attribute"),
    )


def _parse(line: bytes) -> dict | None:
    try:
        verdict = json.loads(line.decode())
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(verdict, dict) or "ok" not in verdict:
        return None
    if not verdict["ok"] and not isinstance(verdict.get("message"), str):
        return None
    return verdict


def _vm_size_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmSize not found in /proc/self/status")


def _child_main() -> int:
    """Serve requests until stdin closes: one JSON request per line, one verdict per line."""
    import resource

    import h5py

    memory_bytes = int(sys.argv[2])
    # Belt and braces with HDF5_PLUGIN_PRELOAD: no plugin directory, no foreign decoders.
    while h5py.h5pl.size():
        h5py.h5pl.remove(0)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    baseline = _vm_size_bytes()
    limit = baseline + memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out = sys.stdout
    out.write(json.dumps({"vm": baseline}) + "\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            validate_result(request["path"], ResultExpectation.from_mapping(request["expect"]))
            verdict: dict = {"ok": True}
        except FormatError as exc:
            verdict = {
                "ok": False,
                "type": type(exc).__name__,
                "message": exc.message,
                "where": exc.where,
                "rule": exc.rule,
                "attribute": exc.attribute,
            }
        verdict["vm"] = _vm_size_bytes()
        out.write(json.dumps(verdict) + "\n")
        out.flush()
    return 0
