"""``edx-arena plot``: PNG pictures of measurement and result files, offline (no server).

The same pictures the web pages show: element maps (the truth, or a result's x̂), the
absolute error |x̂ − x| of a result against the truth, and each scene's mean spectrum with
the element lines marked. Files are written as ``<out>/<scene>-<picture>.png``.

Exit codes: 0 success, 2 usage error, 3 invalid input file or a picture the file cannot
give (e.g. truth maps of a file without truth).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from harness.errors import EdxArenaError

#: The exit code of the science commands for an invalid input file.
EXIT_INVALID_FILE = 3
console = Console(stderr=True)

plot_app = typer.Typer(
    help="Draw PNG pictures of a measurement or result file: element maps, |x̂ − x| errors, mean spectra.",
    no_args_is_help=True,
)

_Measurement = Annotated[
    Path,
    typer.Argument(help="Measurement file (a tier download, or a full dataset file).", exists=True, dir_okay=False),
]
_Out = Annotated[Path, typer.Option("--out", help="Folder for the PNG files (created if missing).", file_okay=False)]
_Scenes = Annotated[
    list[str] | None, typer.Option("--scene", help="Only this scene (repeatable); default: every scene.")
]


def _fail(error: EdxArenaError) -> typer.Exit:
    console.print(f"[red]error[/red] ({error.code}): {error.message}")
    return typer.Exit(EXIT_INVALID_FILE)


def _load(measurement: Path, scenes: list[str] | None):
    from harness.formats import read_measurement

    try:
        dataset = read_measurement(measurement)
    except EdxArenaError as exc:
        raise _fail(exc) from None
    chosen = scenes or dataset.scene_ids
    unknown = [s for s in chosen if s not in dataset.scene_ids]
    if unknown:
        console.print(
            f"[red]error[/red]: no scene {', '.join(unknown)} in {measurement}; its scenes are {', '.join(dataset.scene_ids)}"
        )
        raise typer.Exit(2)
    return dataset, chosen


def _load_result(path: Path, dataset):
    from harness.formats import ResultExpectation, read_result

    try:
        return read_result(path, ResultExpectation.for_dataset(dataset, max_bytes=1 << 40))
    except EdxArenaError as exc:
        raise _fail(exc) from None


def _need_truth(dataset, measurement: Path, what: str) -> None:
    if not dataset.has_truth:
        console.print(
            f"[red]error[/red]: {measurement} has no truth (x_true), so it cannot give {what}; "
            "use the Public download or a full dataset file"
        )
        raise typer.Exit(EXIT_INVALID_FILE)


def _write(out_dir: Path, name: str, png: bytes) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    path.write_bytes(png)
    typer.echo(str(path))  # plain: one path a line, never wrapped, for scripts


@plot_app.command("maps")
def maps(
    measurement: _Measurement,
    out_dir: _Out,
    result: Annotated[
        Path | None,
        typer.Option(
            "--result", help="A result file: draw its maps x̂ instead of the truth.", exists=True, dir_okay=False
        ),
    ] = None,
    scene: _Scenes = None,
    cmap: Annotated[str, typer.Option(help="matplotlib colour map.")] = "viridis",
) -> None:
    """Element maps per scene on a fixed 0–1 scale: the truth x (needs a file with truth) or,
    with --result, the result's x̂. Writes <scene>-maps.png (truth) or <scene>-result-maps.png.

    Examples:

        edx-arena plot maps public.h5 --out pictures

        edx-arena plot maps dev.h5 --result dev-result.h5 --scene dev-s0 --out pictures
    """
    from harness.plots import maps_png

    dataset, scenes = _load(measurement, scene)
    answer = _load_result(result, dataset) if result else None
    if answer is None:
        _need_truth(dataset, measurement, "truth maps")
    for scene_id in scenes:
        try:
            if answer is None:
                png = maps_png(
                    dataset.scene(scene_id).x_true, dataset.elements, title=f"{scene_id}: true maps x", cmap=cmap
                )
                _write(out_dir, f"{scene_id}-maps.png", png)
            else:
                png = maps_png(
                    answer.scenes[scene_id].x_hat,
                    dataset.elements,
                    title=f"{scene_id}: maps x̂ ({result.name})",
                    cmap=cmap,
                )
                _write(out_dir, f"{scene_id}-result-maps.png", png)
        except ValueError as exc:
            console.print(f"[red]error[/red]: {exc}")
            raise typer.Exit(2) from None


@plot_app.command("error")
def error(
    measurement: _Measurement,
    out_dir: _Out,
    result: Annotated[Path, typer.Option("--result", help="The result file to compare.", exists=True, dir_okay=False)],
    scene: _Scenes = None,
    vmax: Annotated[float, typer.Option(help="Error at full colour; larger errors saturate.")] = 0.5,
) -> None:
    """|x̂ − x| per element after the scorer's sanitising (NaN/inf → 0, clip to [0, 1]),
    against the truth in MEASUREMENT (Public download or full file). Writes <scene>-error.png.

    Example:

        edx-arena plot error public.h5 --result public-result.h5 --out pictures
    """
    from harness.plots import error_maps, maps_png

    dataset, scenes = _load(measurement, scene)
    _need_truth(dataset, measurement, "an error map")
    answer = _load_result(result, dataset)
    for scene_id in scenes:
        err = error_maps(answer.scenes[scene_id].x_hat, dataset.scene(scene_id).x_true)
        try:
            png = maps_png(
                err,
                dataset.elements,
                title=f"{scene_id}: |x̂ − x| (max {err.max():.3f})",
                vmax=vmax,
                cmap="magma",
                colorbar_label=f"absolute error (≥ {vmax} saturates)",
            )
        except ValueError as exc:
            console.print(f"[red]error[/red]: {exc}")
            raise typer.Exit(2) from None
        _write(out_dir, f"{scene_id}-error.png", png)


@plot_app.command("spectrum")
def spectrum(
    measurement: _Measurement,
    out_dir: _Out,
    scene: _Scenes = None,
    log: Annotated[
        bool, typer.Option("--log", help="Logarithmic counts axis (shows the continuum and weak lines).")
    ] = False,
) -> None:
    """Each scene's mean spectrum (counts per channel averaged over all pixels) with every
    element's characteristic lines marked. Writes <scene>-spectrum.png.

    Example:

        edx-arena plot spectrum dev.h5 --out pictures
    """
    from harness.forward import LINES
    from harness.plots import lines_of, mean_spectrum, spectrum_png

    dataset, scenes = _load(measurement, scene)
    energy = dataset.operator().energy_keV
    lines = lines_of({e: LINES[e] for e in dataset.elements})
    for scene_id in scenes:
        s = dataset.scene(scene_id)
        png = spectrum_png(
            energy,
            mean_spectrum(s.y),
            lines,
            log_scale=log,
            title=f"{scene_id}: mean spectrum over {s.shape[0]} × {s.shape[1]} pixels",
        )
        _write(out_dir, f"{scene_id}-spectrum.png", png)


def register(app: typer.Typer) -> None:
    app.add_typer(plot_app, name="plot")
