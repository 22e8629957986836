"""The PNG pictures of scenes and answers, rendered once and kept on disk. Who may see which
picture is :mod:`services.access`'s to say (design §3): a tier's mean spectra where it is
``pictured``; its truth maps where the dataset's view carries the truth; a submission's own maps
``x̂`` (owner or organizer; stored HDF5 results only) and its error ``|x̂ − x|`` where the truth
is in the view.

Pictures are rendered from the tier's participant view file (never the full file with the
hidden truth) and the submission's stored result, all scenes of a tier or result at once
(reading the file costs more than drawing), and stored under
``storage_dir/plots/<PLOTS_VERSION>/`` by content: the dataset content hash and the result's
sha256 never change for the same bytes, so a stored picture never goes stale.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import h5py
from sqlalchemy.orm import Session

from core.settings import get_settings
from db.models import Dataset, Kind, Participant, Submission
from harness.formats import read_measurement, read_result
from harness.forward import LINES
from harness.plots import error_maps, lines_of, maps_png, mean_spectrum, spectrum_png
from services.access import can_picture, can_picture_truth, get_submission
from services.datasets import active_dataset, result_expectation, scene_ids
from services.errors import NotFoundError

__all__ = ["PLOTS_VERSION", "submission_picture", "tier_picture"]

#: Bump when the look of a picture changes: stored pictures of the old look are then unused.
PLOTS_VERSION = "plots-v1"
#: The largest error shown at full colour (fractions): errors above it saturate.
ERROR_SCALE = 0.5

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _scene(row: Dataset, scene: str) -> str:
    if scene not in scene_ids(row):
        raise NotFoundError(f"the {row.tier} tier has no scene {scene!r}; its scenes are {', '.join(scene_ids(row))}")
    return scene


def tier_picture(session: Session, *, tier: str, scene: str, picture: str) -> bytes:
    """``maps`` (the truth) or ``spectrum`` (mean spectrum with element lines) of a scene of
    the tier's active dataset, as PNG bytes."""
    can_picture(tier, picture)
    row = active_dataset(session, tier)
    _scene(row, scene)
    if picture == "maps":
        can_picture_truth(row)
    folder = _root() / "tiers" / row.content_hash
    return _cached(folder, f"{scene}-{picture}.png", lambda: _render_tier(row, folder))


def submission_picture(session: Session, *, submission_id: str, viewer: Participant, scene: str, picture: str) -> bytes:
    """The submission's own maps ``x̂`` or its error ``|x̂ − x|`` for one scene, as PNG bytes
    (owner or organizer only)."""
    submission = get_submission(session, submission_id=submission_id, viewer=viewer)
    can_picture(submission.tier, picture, of_submission=True)
    if submission.kind != Kind.hdf5 or not submission.file_path or not Path(submission.file_path).is_file():
        raise NotFoundError("this submission has no stored result file to picture")
    row = submission.dataset
    _scene(row, scene)
    if picture == "error":
        can_picture_truth(row, against=True)
    folder = _root() / "submissions" / f"{submission.file_sha256}-{row.content_hash}"
    return _cached(folder, f"{scene}-{picture}.png", lambda: _render_submission(submission, folder))


# -- rendering and the store ---------------------------------------------------------------


def _root() -> Path:
    return get_settings().storage_dir / "plots" / PLOTS_VERSION


def _cached(folder: Path, name: str, render) -> bytes:
    path = folder / name
    if path.is_file():
        return path.read_bytes()
    with _locks_guard:
        lock = _locks.setdefault(str(folder), threading.Lock())
    with lock:  # concurrent first requests for one folder render it once
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            for picture_name, png in render().items():
                _write_atomically(folder / picture_name, png)
    return path.read_bytes()


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _render_tier(row: Dataset, folder: Path) -> dict[str, bytes]:
    dataset = read_measurement(row.view_path)  # the participants' view: never the hidden truth
    energy = dataset.operator().energy_keV
    lines = lines_of({e: LINES[e] for e in dataset.elements})
    out = {}
    for scene in dataset.scenes:
        out[f"{scene.scene_id}-spectrum.png"] = spectrum_png(
            energy,
            mean_spectrum(scene.y),
            lines,
            title=f"{scene.scene_id}: mean spectrum over {scene.shape[0]} × {scene.shape[1]} pixels",
        )
        if scene.x_true is not None:
            out[f"{scene.scene_id}-maps.png"] = maps_png(
                scene.x_true, dataset.elements, title=f"{scene.scene_id}: true maps x"
            )
    return out


def _render_submission(submission: Submission, folder: Path) -> dict[str, bytes]:
    row = submission.dataset
    result = read_result(submission.file_path, result_expectation(row, max_bytes=get_settings().max_upload_bytes))
    truth = read_measurement(row.view_path) if row.truth_in_view else None
    elements = truth.elements if truth is not None else _elements(row.view_path)
    out = {}
    for scene_id, answer in result.scenes.items():
        out[f"{scene_id}-maps.png"] = maps_png(answer.x_hat, elements, title=f"{scene_id}: your maps x̂")
        if truth is not None:
            err = error_maps(answer.x_hat, truth.scene(scene_id).x_true)
            out[f"{scene_id}-error.png"] = maps_png(
                err,
                elements,
                title=f"{scene_id}: |x̂ − x| (max {err.max():.3f})",
                vmax=ERROR_SCALE,
                cmap="magma",
                colorbar_label=f"absolute error (≥ {ERROR_SCALE} saturates)",
            )
    return out


def _elements(view_path: str) -> tuple[str, ...]:
    """The element order of a measurement file, without reading its counts."""
    with h5py.File(view_path, "r") as f:
        return tuple(e.decode() if isinstance(e, bytes) else str(e) for e in f["elements"][()])
