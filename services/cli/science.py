"""Offline science commands: build and export tier datasets, solve them, score results.

These call the harness directly (no server needed), so an organizer can prepare tiers and a
participant can check a result file before submitting it.

Exit codes scripts can rely on (services/cli/exit_codes.py): 0 success, 2 usage error,
3 invalid input file (the message says which part of the file and which rule), 1 anything else.
Progress bars go to stderr, only on a terminal and without ``--quiet``.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness.errors import EdxArenaError
from services.cli.exit_codes import ExitCode

if TYPE_CHECKING:
    from harness.scoring import TierScore

EXIT_INVALID_FILE = int(ExitCode.INVALID_FILE)

console = Console(stderr=True)
out = Console()

dataset_app = typer.Typer(
    help="Build, import and export tier datasets (organizers): `edx-arena dataset COMMAND --help`.",
    no_args_is_help=True,
)
Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bar (it is also off when stderr is not a terminal).")
]


def _fail(error: EdxArenaError) -> typer.Exit:
    console.print(f"[red]error[/red] ({error.code}): {error.message}")
    return typer.Exit(EXIT_INVALID_FILE)


def _progress(quiet: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=quiet or not console.is_terminal,
    )


@dataset_app.command("build")
def build(
    tier: Annotated[str, typer.Option(help="public, dev, hidden or standard.")],
    out_path: Annotated[Path, typer.Option("--out", help="Full dataset file to write (contains the truth).")],
    seed: Annotated[
        int | None,
        typer.Option(
            help="Generator seed. Omit for a secret random seed: a known seed lets anyone regenerate the truth."
        ),
    ] = None,
    size: Annotated[str, typer.Option(help="Grid preset: default (128×128×1000) or small (32×32×250).")] = "default",
    quiet: Quiet = False,
) -> None:
    """Generate a tier's 3 scenes (θ drawn from the tier's published ranges) and write the full file.

    Writes --out: the organizer's full file, with the truth (x_true, true θ) and the seed. Never
    hand it out: `dataset export` makes the participant views. A bar counts the scenes.

    Examples:

        edx-arena dataset build --tier hidden --out hidden.h5

        edx-arena dataset build --tier public --seed 2026 --size small --out public-full.h5
    """
    from harness.formats import write_measurement
    from harness.scenes import build_tier
    from harness.tiers import SCENES_PER_TIER

    if seed is None:
        seed = secrets.randbits(62)
    with _progress(quiet) as progress:
        task = progress.add_task(f"building {tier} tier: scene 1/{SCENES_PER_TIER}", total=SCENES_PER_TIER)

        def step(done: int, total: int) -> None:
            label = f"scene {done + 1}/{total}" if done < total else "done"
            progress.update(
                task, completed=done, total=total, description=f"building {tier} tier: {label}", refresh=True
            )

        try:
            dataset = build_tier(tier, seed=seed, preset=size, progress=step)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        progress.update(task, description=f"writing {out_path.name}")
        write_measurement(dataset, out_path, include_truth=True)
    console.print(
        f"wrote {out_path} (tier {tier}, {len(dataset.scenes)} scenes, content hash {dataset.content_hash[:16]}…)"
    )


@dataset_app.command("import")
def import_maps(
    maps_path: Annotated[
        Path, typer.Argument(help="HDF5 with /elements and /scenes/<id>/x_true (E, H, W).", exists=True, dir_okay=False)
    ],
    tier: Annotated[str, typer.Option(help="public, dev, hidden or standard.")],
    out_path: Annotated[Path, typer.Option("--out", help="Full dataset file to write (contains the truth).")],
    seed: Annotated[int | None, typer.Option(help="Seed for θ and the noise; omit for a secret random one.")] = None,
    size: Annotated[str, typer.Option(help="Grid preset the maps are drawn on: default or small.")] = "default",
) -> None:
    """Make a tier from your own ground-truth maps: θ drawn from the tier's ranges, y simulated.

    Rows 0–3 of every scene are overwritten with the published calibration composition. Writes
    --out, a full file with the truth, like `dataset build`.

    Example:

        edx-arena dataset import my-maps.h5 --tier dev --out dev-full.h5
    """
    from harness.formats import read_truth_maps, write_measurement
    from harness.scenes import dataset_from_maps

    if seed is None:
        seed = secrets.randbits(62)
    try:
        maps = read_truth_maps(maps_path)
        dataset = dataset_from_maps(tier, maps, seed=seed, preset=size)
    except EdxArenaError as exc:
        raise _fail(exc) from None
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    write_measurement(dataset, out_path, include_truth=True)
    console.print(
        f"wrote {out_path} (tier {tier}, scenes {', '.join(dataset.scene_ids)}, content hash {dataset.content_hash[:16]}…)"
    )


@dataset_app.command("export")
def export(
    dataset_path: Annotated[Path, typer.Argument(help="Full dataset file (with truth).", exists=True, dir_okay=False)],
    out_path: Annotated[Path, typer.Option("--out", help="Participant file to write.")],
    public_view: Annotated[bool, typer.Option("--public-view", help="Keep the truth (Public tier download).")] = False,
    dev_view: Annotated[
        bool, typer.Option("--dev-view", help="Strip the truth (Dev tier download, container input).")
    ] = False,
) -> None:
    """Write the participant view of a full dataset file: Public keeps the truth, Dev strips it.

    Writes --out. No view carries the seed; --dev-view also drops x_true and the true θ (use it
    for the Dev download and the Hidden container input).

    Examples:

        edx-arena dataset export public-full.h5 --public-view --out public.h5

        edx-arena dataset export hidden.h5 --dev-view --out hidden-input.h5
    """
    from harness.formats import read_measurement, write_measurement

    if public_view == dev_view:
        raise typer.BadParameter("pass exactly one of --public-view or --dev-view")
    try:
        dataset = read_measurement(dataset_path)
    except EdxArenaError as exc:
        raise _fail(exc) from None
    if public_view and not dataset.has_truth:
        raise typer.BadParameter(f"{dataset_path} has no truth to publish; pass the organizer's full file")
    write_measurement(dataset.participant_view(with_truth=public_view), out_path, include_truth=public_view)
    console.print(f"wrote {'public' if public_view else 'truth-free'} view {out_path}")


def solve(
    measurement: Annotated[Path, typer.Argument(help="Measurement file (download).", exists=True, dir_okay=False)],
    out_path: Annotated[Path, typer.Option("--out", help="Result file to write.")],
    solver: Annotated[str, typer.Option(help="Reference solver name (see harness.solvers.SOLVERS).")] = "nnls",
    quiet: Quiet = False,
) -> None:
    """Run a reference solver on every scene of a measurement file and write a result file.

    Writes --out, a result file (x_hat and the corrected spec per scene) ready for `score` and
    `submit`. A bar counts the scenes.

    Examples:

        edx-arena solve public.h5 --out result.h5

        edx-arena solve dev.h5 --out result.h5 --solver mlem
    """
    from harness.formats import read_measurement, write_result
    from harness.solvers import SOLVERS, solve_dataset

    if solver not in SOLVERS:
        raise typer.BadParameter(f"unknown solver {solver!r}; choose one of {', '.join(sorted(SOLVERS))}")
    try:
        dataset = read_measurement(measurement).without_truth()
    except EdxArenaError as exc:
        raise _fail(exc) from None
    with _progress(quiet) as progress:
        task = progress.add_task(f"{solver} on {dataset.tier}", total=len(dataset.scenes))
        result = solve_dataset(
            dataset, solver=solver, progress=lambda d, t: progress.update(task, completed=d, total=t)
        )
    write_result(result, out_path)
    console.print(f"wrote {out_path}")


def score(
    dataset_path: Annotated[
        Path, typer.Option("--dataset", help="Dataset file with truth.", exists=True, dir_okay=False)
    ],
    result_path: Annotated[Path, typer.Option("--result", help="Result file to score.", exists=True, dir_okay=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    max_bytes: Annotated[int, typer.Option(help="Size cap for the result file (bytes).")] = 1 << 30,
    ci: Annotated[
        bool,
        typer.Option("--ci", help="Also the 95 % block-bootstrap interval of each score (the server's, same seeds)."),
    ] = False,
) -> None:
    """Validate a result file and score it with the current scorer (edx-score-v2) against a dataset with truth.

    Writes nothing; stdout gets a table per scene and tier, or the JSON with --json. An invalid
    result exits 3 with the part of the file and the rule, as the server would refuse it.

    Examples:

        edx-arena score --dataset public.h5 --result result.h5 --ci

        edx-arena score --dataset public.h5 --result result.h5 --json > scores.json
    """
    from harness.formats import ResultExpectation, read_measurement, read_result
    from harness.scoring import score_tier
    from harness.uncertainty import N_RESAMPLES

    try:
        dataset = read_measurement(dataset_path)
        if not dataset.has_truth:
            raise typer.BadParameter(f"{dataset_path} has no truth; scoring needs the Public or the organizer's file")
        result = read_result(result_path, ResultExpectation.for_dataset(dataset, max_bytes=max_bytes))
    except EdxArenaError as exc:
        raise _fail(exc) from None
    tier_score = score_tier(dataset, result, n_resamples=N_RESAMPLES if ci else 0)
    if as_json:
        out.print_json(json.dumps(tier_score.as_dict()))
        return
    out.print(score_table(tier_score, ci=ci))


def score_table(tier_score: TierScore, *, ci: bool) -> Table:
    """A row per scene and one for the tier (bold); with ``ci``, each score's 95 % interval."""
    from harness.scoring import SCORER_VERSION

    table = Table(title=f"{tier_score.tier} tier · {SCORER_VERSION}")
    columns = ["scene", "PSNR dB", "SSIM", "consistency", "standard", "blind", "max |Δθ|"]
    if ci:
        columns.append(f"{'standard' if tier_score.tier == 'standard' else 'blind'} 95 % CI")
    for column in columns:
        table.add_column(column, justify="right")

    def interval(lo: float | None, hi: float | None) -> list[str]:
        return [f"[{lo:.4f}, {hi:.4f}] ±{(hi - lo) / 2:.4f}"] if ci and lo is not None and hi is not None else []

    for s in tier_score.scenes:
        table.add_row(
            s.scene_id,
            f"{s.psnr:.2f}",
            f"{s.ssim:.4f}",
            f"{s.consistency:.4f}",
            f"{s.standard:.4f}",
            f"{s.blind:.4f}",
            f"{max(s.spec_error.values()):.3g}",
            *interval(s.ci_low, s.ci_high),
        )
    table.add_row(
        "tier",
        f"{tier_score.psnr:.2f}",
        f"{tier_score.ssim:.4f}",
        f"{tier_score.consistency:.4f}",
        f"{tier_score.standard:.4f}",
        f"{tier_score.blind:.4f}",
        "",
        *interval(tier_score.ci_low, tier_score.ci_high),
        style="bold",
    )
    return table


_SEED_CONTEXT = (
    "For context, the seed's published table lists nominal least squares (MLS) at 22.3 dB PSNR and "
    "0.708 standard score on its own data; it is a reference point, not a target."
)


def baselines(
    out_path: Annotated[Path, typer.Option("--out", help="Markdown file to write.")] = Path("docs/baselines.md"),
    seed: Annotated[
        int, typer.Option(help="Seed of the three generated tiers (published, so anyone can rerun it).")
    ] = 2026,
    size: Annotated[str, typer.Option(help="Grid preset: default or small.")] = "default",
    solvers: Annotated[
        list[str] | None, typer.Option("--solver", help="Solver to include (repeat); default all.")
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Run every reference solver on freshly built Public, Dev and Hidden tiers and write the table.

    Writes --out (Markdown) and prints it on stdout. Takes minutes on the default preset.

    Examples:

        edx-arena baselines

        edx-arena baselines --size small --solver nnls --solver mlem --out /tmp/baselines.md
    """
    import platform

    from harness.baselines import run_baselines
    from harness.scenes import build_tier
    from harness.scoring import SCORER_VERSION
    from harness.solvers import SOLVERS
    from harness.tiers import BLIND_TIERS

    chosen = solvers or list(SOLVERS)
    unknown = sorted(set(chosen) - set(SOLVERS))
    if unknown:
        raise typer.BadParameter(f"unknown solver(s) {unknown}; choose from {', '.join(sorted(SOLVERS))}")
    datasets = [build_tier(tier, seed=seed + i, preset=size) for i, tier in enumerate(BLIND_TIERS)]
    with _progress(quiet) as progress:
        task = progress.add_task("baselines", total=len(chosen) * len(datasets))
        done = [0]

        def step(solver: str, tier: str) -> None:
            progress.update(task, completed=done[0], description=f"{solver} on {tier}")
            done[0] += 1

        rows = run_baselines(datasets, solvers=chosen, progress=step)
        progress.update(task, completed=done[0])
    lines = [
        "# Reference baselines",
        "",
        f"Generated by `edx-arena baselines --seed {seed} --size {size}` on {platform.machine()} "
        f"({platform.python_implementation()} {platform.python_version()}); tiers built with seeds "
        f"{seed}, {seed + 1}, {seed + 2} (Public, Dev, Hidden), dose 100, scorer `{SCORER_VERSION}`.",
        "Blind = 0.4·PSNR_norm + 0.4·SSIM + 0.2·consistency; standard = 0.5·PSNR_norm + 0.5·SSIM.",
        "|Δθ| columns are tier means of |θ̂ − θ| (a: absorption_correction_error, ΔΩ: detector_solid_angle in sr, "
        "p: peak_overlap, b: bremsstrahlung_background).",
        "",
        "| solver | tier | blind | standard | PSNR dB | SSIM | consistency | \\|Δa\\| | \\|ΔΩ\\| | \\|Δp\\| | \\|Δb\\| | runtime s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        e = r.spec_error
        lines.append(
            f"| {r.solver} | {r.tier} | {r.blind:.3f} | {r.standard:.3f} | {r.psnr:.2f} | {r.ssim:.3f} | "
            f"{r.consistency:.3f} | {e['absorption_correction_error']:.2f} | {e['detector_solid_angle']:.3f} | "
            f"{e['peak_overlap']:.2f} | {e['bremsstrahlung_background']:.3f} | {r.runtime_seconds:.1f} |"
        )
    lines += ["", _SEED_CONTEXT, ""]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n".join(lines))
    out.print("\n".join(lines))
    console.print(f"wrote {out_path}")


def register(app: typer.Typer) -> None:
    app.add_typer(dataset_app, name="dataset")
    app.command("solve")(solve)
    app.command("score")(score)
    app.command("baselines")(baselines)
