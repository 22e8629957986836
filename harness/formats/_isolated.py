"""Result validation in a resource-limited child process.

Why: a hostile HDF5 file can crash libhdf5 (a segfault takes the whole process with it),
make it allocate without bound (a variable-length attribute's length is only known by
reading it) or loop. :func:`validate_result` already never follows links, rejects huge
declared shapes and chunks from metadata and reads chunk by chunk, but the API and worker
must survive what libhdf5 itself might do. So they call :func:`validate_result_isolated`:
the same checks in a fresh interpreter (``python -I``) with

* ``RLIMIT_AS`` = the child's address space after its imports + ``memory_bytes``,
* ``RLIMIT_CORE`` = 0 and HDF5 dynamic filter plugins disabled (``HDF5_PLUGIN_PRELOAD=::``),
* a wall-clock ``timeout`` after which the child is killed,

and any death of the child (signal, MemoryError, unexpected exception, garbage on stdout)
becomes ``FormatError("the file could not be read safely: …", rule="unsafe")``. The
request goes in on stdin and the verdict comes back as one JSON object on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from harness.errors import FileTooLargeError, FormatError

from ._result import ResultExpectation, validate_result
from ._safety import check_size, human_bytes

__all__ = ["DEFAULT_MEMORY_BYTES", "DEFAULT_TIMEOUT_S", "validate_result_isolated"]

DEFAULT_TIMEOUT_S = 120.0
#: Address space the child may add to its post-import baseline (2× the largest chunk plus
#: libhdf5's caches fits comfortably).
DEFAULT_MEMORY_BYTES = 256 << 20
#: The directory holding the ``harness`` package, put first on the child's sys.path.
_ROOT = str(Path(__file__).resolve().parents[2])
_BOOTSTRAP = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from harness.formats._isolated import _child_main; sys.exit(_child_main())"
)


def validate_result_isolated(
    path: str | os.PathLike,
    expect: ResultExpectation,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> None:
    """:func:`validate_result` in a child process with a memory limit and a timeout.

    Parameters
    ----------
    path : path-like
        The uploaded file.
    expect : ResultExpectation
        The tier's expectation (``max_bytes`` is also checked here, before spawning).
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
    request = json.dumps(
        {"path": os.fspath(Path(path).resolve()), "expect": expect.as_dict(), "memory_bytes": int(memory_bytes)}
    )
    env = {
        "LANG": "C.UTF-8",
        "HDF5_PLUGIN_PRELOAD": "::",
        "HDF5_USE_FILE_LOCKING": "FALSE",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-c", _BOOTSTRAP, _ROOT],
            input=request.encode(),
            capture_output=True,
            timeout=timeout,
            env=env,
            cwd="/",
        )
    except subprocess.TimeoutExpired:
        raise FormatError(
            f"the file could not be read safely: validation took longer than {timeout:g} s",
            rule="timeout",
        ) from None
    verdict = _parse(proc.stdout) if proc.returncode == 0 else None
    if verdict is None:
        raise FormatError(f"the file could not be read safely: {_reason(proc, memory_bytes)}", rule="unsafe")
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


def _parse(stdout: bytes) -> dict | None:
    try:
        verdict = json.loads(stdout.decode())
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(verdict, dict) or "ok" not in verdict:
        return None
    if not verdict["ok"] and not isinstance(verdict.get("message"), str):
        return None
    return verdict


def _reason(proc: subprocess.CompletedProcess, memory_bytes: int) -> str:
    # stderr may hold paths and library internals: only its kind reaches the user.
    if b"MemoryError" in proc.stderr:
        return f"reading it needed more than {human_bytes(memory_bytes)} of memory"
    if proc.returncode < 0:
        return f"the HDF5 library crashed on it (signal {-proc.returncode})"
    return "the validator stopped unexpectedly"


def _vm_size_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmSize not found in /proc/self/status")


def _child_main() -> int:
    import resource

    import h5py

    request = json.loads(sys.stdin.read())
    # Belt and braces with HDF5_PLUGIN_PRELOAD: no plugin directory, no foreign decoders.
    while h5py.h5pl.size():
        h5py.h5pl.remove(0)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    limit = _vm_size_bytes() + int(request["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
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
    sys.stdout.write(json.dumps(verdict))
    sys.stdout.flush()
    return 0
