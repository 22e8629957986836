"""Participant commands that need no server: ``edx-arena run`` tries a solver exactly as the
server will run it, ``edx-arena init`` writes a starter solver project.

``run`` builds its sandboxed run with the server's own code: the limits from the same
``EDX_SANDBOX_*`` settings and the isolated output validation (:mod:`services.submissions.sandbox`),
the hardening and the typed outcomes (:func:`harness.sandbox.run_container`), the input the
server gives a container (:func:`harness.formats.write_run_view`: never the truth, even from a
Public file) and, when the file carries the truth, the server's scorer. Only what the server
withholds because a Hidden run reads data nobody may see is shown here: the whole log, exact
runtime and memory, and an invalid result's precise reason beside the server's fixed message.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import shutil
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from services.cli.exit_codes import EPILOG, ExitCode

if TYPE_CHECKING:
    import docker
    from core.settings import SandboxSettings
    from harness.dataset import TierDataset
    from harness.formats import ResultExpectation
    from harness.sandbox import ImageInfo, RunResult
    from harness.scoring import TierScore

console = Console(stderr=True)
out = Console()

#: A file with one of these suffixes is a script (run in the base image); any other file is a
#: ``docker save`` archive; anything else names an image on the local daemon (as ``submit``).
_SCRIPT_SUFFIXES = (".py", ".zip")
#: An archive is loaded as ``edx-arena-sub/local/<short id>`` (the server uses the participant id).
LOCAL_OWNER = "local"
#: On every local run's container beside the run id. Never the server's instance label: a
#: server sharing this daemon sweeps only containers carrying its own.
_LOCAL_LABELS = {"edx-arena.local": "1"}
_STARTERS = resources.files("services.cli") / "starter"
#: Template file → the name it is written under (a packaged dotfile is easy to lose).
_RENAMES = {"dockerignore": ".dockerignore"}


def _fail(code: ExitCode, message: str) -> NoReturn:
    console.print(f"[red]error[/red]: {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(int(code))


@dataclass(frozen=True)
class _Solver:
    """What runs: ``kind`` is ``image``, ``archive`` or ``script``; ``image`` is pinned by id."""

    kind: str
    name: str
    image: ImageInfo
    script: Path | None = None


def _settings() -> SandboxSettings:
    from core.settings import SettingsError, load_sandbox_settings

    try:
        return load_sandbox_settings()
    except SettingsError as exc:
        _fail(ExitCode.USAGE, exc.message)


def _dataset(path: Path) -> TierDataset:
    from harness.errors import EdxArenaError
    from harness.formats import read_measurement

    try:
        return read_measurement(path)
    except EdxArenaError as exc:
        _fail(ExitCode.INVALID_FILE, f"{path}: {exc.message}")


def _docker() -> docker.DockerClient:
    import requests
    from docker.errors import DockerException

    from harness.sandbox.runner import docker_client

    try:
        client = docker_client(timeout=600)
        client.ping()
    except (DockerException, requests.RequestException) as exc:
        _fail(
            ExitCode.FAILURE,
            f"cannot reach the Docker daemon ({type(exc).__name__}); is it running, and may you use it "
            "(the docker group)?",
        )
    return client


def _local_image(name: str, client: docker.DockerClient) -> ImageInfo:
    """An image the participant built or pulled: looked up on this daemon, never pulled (a run
    pins what it looked up, as the server does)."""
    from harness.errors import ImageError
    from harness.sandbox import inspect_image
    from harness.sandbox.runner import PLATFORM

    try:
        info = inspect_image(name, client=client)
    except ImageError:
        _fail(
            ExitCode.INVALID_FILE,
            f"no image {name!r} on this machine's Docker daemon and no such file; build it "
            f"(docker build -t {name} .) or pull it first",
        )
    if (info.os, info.architecture) != PLATFORM:
        _fail(
            ExitCode.INVALID_FILE,
            f"the image is for {info.os}/{info.architecture}; the server runs linux/amd64 images "
            "(docker build --platform linux/amd64)",
        )
    return info


def _intake(target: str, settings: SandboxSettings, client: docker.DockerClient) -> _Solver:
    """What the server's intake would accept of ``target``, refused with its reason (exit 3)
    where the server would refuse the upload."""
    from harness.errors import ImageError, PlatformError
    from harness.sandbox import inspect_image, load_image_archive
    from harness.sandbox.scripts import check_script

    path = Path(target)
    if path.is_dir():
        raise typer.BadParameter(f"{target} is a folder; build it into an image first (docker build -t NAME {target})")
    if not path.is_file():
        return _Solver("image", target, _local_image(target, client))
    try:
        if path.suffix.lower() in _SCRIPT_SUFFIXES:
            size = path.stat().st_size
            if size > settings.max_script_bytes:
                _fail(
                    ExitCode.INVALID_FILE,
                    f"{path} is {size} bytes; the server takes scripts of at most {settings.max_script_bytes} "
                    "bytes (EDX_MAX_SCRIPT_BYTES)",
                )
            check_script(path)
            try:
                base = inspect_image(settings.script_image, client=client)
            except ImageError:
                _fail(
                    ExitCode.FAILURE,
                    f"scripts run in the reference base image {settings.script_image}, which is not on this "
                    "machine's Docker daemon; ask the organizers for it (docker load -i base.tar), or set "
                    "EDX_SCRIPT_IMAGE to an image with python3, numpy, scipy and h5py (then the run is not "
                    "exactly the server's)",
                )
            return _Solver("script", settings.script_image, base, script=path)
        info = load_image_archive(path, max_bytes=settings.max_image_bytes, owner=LOCAL_OWNER, client=client)
        return _Solver("archive", info.tags[0], info)
    except ImageError as exc:
        _fail(ExitCode.INVALID_FILE, f"{path}: {exc.message}")
    except PlatformError as exc:
        _fail(ExitCode.FAILURE, exc.message)


@dataclass
class _Report:
    result: RunResult
    #: The validator's own words on an invalid result (they quote the file: it is yours).
    detail: str | None = None
    scores: TierScore | None = None
    kept: Path | None = None


def _invalid_detail(path: Path, expect: ResultExpectation) -> str | None:
    from harness.errors import FormatError
    from harness.formats import validate_result_isolated

    if not path.is_file() or path.is_symlink():
        return None
    try:
        validate_result_isolated(path, expect)
    except FormatError as exc:
        return exc.message
    return None


def _finish(
    result: RunResult, *, dataset: TierDataset, expect: ResultExpectation, output_dir: Path, keep: Path | None
) -> _Report:
    """Score a succeeded run when the file has the truth, as the server's scoring step does;
    keep the result if asked; explain an invalid one."""
    from harness.errors import FormatError
    from harness.formats import output_error_message, read_result
    from harness.sandbox import Outcome
    from harness.scoring import score_tier

    report = _Report(result)
    if result.outcome == Outcome.invalid_output:
        report.detail = _invalid_detail(output_dir / "result.h5", expect)
    if result.outcome != Outcome.succeeded or result.output_path is None:
        return report
    if keep is not None:
        shutil.copyfile(result.output_path, keep)
        report.kept = keep
    if dataset.has_truth:
        try:
            answer = read_result(result.output_path, expect)
        except FormatError as exc:  # the server's scoring step fails such a run the same way
            message = f"/output/result.h5 is not a valid result: {output_error_message(exc, expect)}"
            report.result = dataclasses.replace(result, outcome=Outcome.invalid_output, message=message)
            report.detail = exc.message
            return report
        report.scores = score_tier(dataset, answer)
    return report


def _exit_code(report: _Report) -> ExitCode:
    from harness.sandbox import Outcome

    if report.result.outcome == Outcome.succeeded:
        return ExitCode.OK
    if report.result.outcome == Outcome.platform_error:  # this machine's fault, not the solver's
        return ExitCode.FAILURE
    return ExitCode.SUBMISSION_FAILED


def _as_json(report: _Report, *, solver: _Solver, dataset: TierDataset, dataset_path: Path, limits) -> dict[str, Any]:
    r = report.result
    return {
        "outcome": str(r.outcome),
        "message": r.message,
        "detail": report.detail,
        "exit_code": r.exit_code,
        "runtime_seconds": r.runtime_seconds,
        "peak_memory_bytes": r.peak_memory_bytes,
        "log": r.log,
        "image": {"kind": solver.kind, "name": solver.name, "id": solver.image.id},
        "dataset": {
            "path": str(dataset_path),
            "tier": dataset.tier,
            "scenes": list(dataset.scene_ids),
            "has_truth": dataset.has_truth,
            "content_hash": dataset.content_hash,
        },
        "limits": dataclasses.asdict(limits),
        "scores": report.scores.as_dict() if report.scores is not None else None,
        "output": str(report.kept) if report.kept else None,
    }


def _print(report: _Report, *, solver: _Solver, dataset: TierDataset, dataset_path: Path, limits) -> None:
    from services.cli.science import score_table

    r = report.result
    colour = "green" if r.outcome == "succeeded" else "red"
    what = {"image": "image", "archive": "archive loaded as", "script": "script in"}[solver.kind]
    lines = [
        f"outcome     [bold {colour}]{r.outcome}[/]: {escape(r.message)}",
        f"exit code   {r.exit_code if r.exit_code is not None else '-'}",
        f"runtime     {r.runtime_seconds:.1f} s",
        "peak memory " + (f"{r.peak_memory_bytes / 2**20:.1f} MiB" if r.peak_memory_bytes is not None else "-"),
        f"ran         {what} {escape(solver.name)} ({solver.image.id[:19]}…)",
        f"input       {escape(str(dataset_path))}: {dataset.tier} tier, {len(dataset.scenes)} scenes, without truth",
        f"limits      {limits.cpus:g} CPU, {limits.memory_bytes / 2**20:.0f} MiB, {limits.pids} pids, "
        f"{limits.wall_seconds:g} s, output {limits.output_bytes / 2**20:.0f} MiB",
    ]
    if report.detail:
        lines.insert(1, f"reason      {escape(report.detail)}")
    if report.kept:
        lines.append(f"result      kept as {escape(str(report.kept))}")
    for line in lines:
        out.print(line, soft_wrap=True, highlight=False)
    out.rule("log")
    out.out(r.log.rstrip("\n") if r.log else "(the container printed nothing)", highlight=False)
    out.rule()
    if report.scores is not None:
        out.print(score_table(report.scores, ci=True))
    elif r.outcome == "succeeded":
        out.print(f"not scored: {escape(str(dataset_path))} has no truth (a Public download has)", highlight=False)


def run(
    target: Annotated[
        str,
        typer.Argument(
            metavar="IMAGE_OR_SCRIPT",
            help="An image on this machine's Docker daemon, a `docker save` archive (.tar), or a script (.py, or .zip with main.py).",
            show_default=False,
        ),
    ],
    dataset_path: Annotated[
        Path,
        typer.Option(
            "--dataset",
            help="A measurement file (a Public download is also scored); the container gets it without truth.",
            exists=True,
            dir_okay=False,
            show_default=False,
        ),
    ],
    keep: Annotated[
        Path | None,
        typer.Option("--out", help="Keep the run's /output/result.h5 here when it succeeded.", show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No spinner (it is also off when stderr is not a terminal).")
    ] = False,
) -> None:
    """Run your image or script on a measurement file exactly as the server will, then score it.

    The same sandbox code as the server's worker: no network, a read-only root, uid 65534, the
    limits of the EDX_SANDBOX_* settings (server defaults: 1 CPU, 2 GiB, 256 pids, 1800 s, 512
    MiB of output), the same output validation and the same typed outcome. The container reads
    the file at /input/measurement.h5 without its truth, even a Public download's. A .tar is
    loaded as the server loads an upload (named edx-arena-sub/local/<id>); a script runs in the
    reference base image (EDX_SCRIPT_IMAGE). Writes nothing but --out; prints the outcome, exit
    code, runtime, peak memory, the whole log and, for a file with truth, the scores (the
    server's scorer, with intervals). Exit 0 succeeded, 4 the run failed, 3 an invalid file or
    image, 1 Docker or the machine failed.

    Examples:

        edx-arena run my-solver --dataset public.h5

        edx-arena run main.py --dataset public.h5 --json > run.json

        edx-arena run solver.tar --dataset dev.h5 --out dev-result.h5
    """
    from harness.formats import ResultExpectation, write_run_view
    from harness.sandbox.tree import remove_tree
    from services.submissions.sandbox import run_limits

    settings = _settings()
    dataset = _dataset(dataset_path)
    client = _docker()
    solver = _intake(target, settings, client)
    limits = run_limits(settings)
    expect = ResultExpectation.for_dataset(dataset, max_bytes=limits.output_bytes)
    root = Path(tempfile.mkdtemp(prefix="edx-arena-run-"))
    try:
        view = root / "measurement.h5"
        write_run_view(dataset, view)
        work = root / "run"
        work.mkdir()
        result = _run(
            solver, view=view, work=work, expect=expect, settings=settings, client=client, quiet=quiet or as_json
        )
        report = _finish(result, dataset=dataset, expect=expect, output_dir=work / "output", keep=keep)
    finally:
        if not remove_tree(root):
            console.print(
                f"[yellow]warning[/yellow]: could not remove all of {escape(str(root))} (files the container "
                "wrote as uid 65534); remove it as root",
                soft_wrap=True,
            )
    if as_json:
        import json

        print(json.dumps(_as_json(report, solver=solver, dataset=dataset, dataset_path=dataset_path, limits=limits)))
    else:
        _print(report, solver=solver, dataset=dataset, dataset_path=dataset_path, limits=limits)
    raise typer.Exit(int(_exit_code(report)))


def _run(
    solver: _Solver,
    *,
    view: Path,
    work: Path,
    expect: ResultExpectation,
    settings: SandboxSettings,
    client: docker.DockerClient,
    quiet: bool,
) -> RunResult:
    from harness.errors import ImageError
    from harness.sandbox import Outcome, RunResult, run_container
    from harness.sandbox.scripts import unpack_script
    from services.submissions.sandbox import run_spec

    files = None
    if solver.script is not None:
        try:
            files = unpack_script(solver.script, work / "submission")
        except ImageError as exc:  # as the server's run: the script failed, image_invalid
            return RunResult(Outcome.image_invalid, exc.message, image_digest=solver.image.id)
    spec = run_spec(
        run_id=f"local-{secrets.token_hex(6)}",
        image=solver.image.id,
        input_path=view,
        work_dir=work,
        expect=expect,
        settings=settings,
        labels=dict(_LOCAL_LABELS),
        script_files=files,
    )
    show = not quiet and console.is_terminal
    with console.status(f"running {escape(solver.name)} in the sandbox") if show else nullcontext():
        return run_container(spec, client=client)


class Language(StrEnum):
    python = "python"


def _slug(name: str) -> str:
    """A valid image name from a folder's name."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "solver"


def _write(target: Path, text: str) -> None:
    """Replace ``target`` with ``text``, never writing through a link that stands in its place."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def init(
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="Folder to create (or an empty one).", show_default=False)
    ],
    language: Annotated[Language, typer.Option(help="The starter's language.")] = Language.python,
    force: Annotated[
        bool, typer.Option("--force", help="Write into a folder that is not empty (the starter's files are replaced).")
    ] = False,
) -> None:
    """Write a starter solver project: Dockerfile, main.py (a baseline to replace), README, .dockerignore.

    main.py reads /input/measurement.h5 and writes a valid /output/result.h5 with numpy and
    h5py (a nominal least-squares baseline; your method goes in reconstruct()). The Dockerfile
    builds FROM the reference base image edx-arena/base:bookworm, offline; --build-arg
    BASE_IMAGE=python:3.11-slim builds on an ordinary Python image instead. The README has the
    three commands: build, `edx-arena run`, `edx-arena submit`. A folder that is not empty is
    refused without --force.

    Examples:

        edx-arena init my-solver

        edx-arena init . --force
    """
    if directory.exists() and not directory.is_dir():
        _fail(ExitCode.FAILURE, f"{directory} is a file, not a folder")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        _fail(ExitCode.FAILURE, f"{directory} is not empty; choose a new folder, or pass --force to write into it")
    directory.mkdir(parents=True, exist_ok=True)
    name = _slug(directory.resolve().name)
    starter = _STARTERS / language.value
    written = []
    for item in sorted(starter.iterdir(), key=lambda t: t.name):
        if not item.is_file():
            continue
        target = directory / _RENAMES.get(item.name, item.name)
        _write(target, item.read_text().replace("{{name}}", name).replace("{{image}}", name))
        written.append(target.name)
    console.print(f"wrote {', '.join(written)} in {escape(str(directory))}", highlight=False, soft_wrap=True)
    out.print(
        f"cd {escape(str(directory))}\ndocker build -t {name} .\nedx-arena run {name} --dataset public.h5",
        highlight=False,
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    app.command("run", epilog=EPILOG)(run)
    app.command("init")(init)
