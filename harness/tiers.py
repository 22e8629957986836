"""Tiers: what each publishes and accepts (:data:`TIER_RULES`), their published spec ranges
and the size presets (design §1, §3).

Every rule that tells the tiers apart lives in :data:`TIER_RULES`, one row per tier: the
services read it (downloads, pictures, what a viewer is told, which kinds a tier accepts, which
score ranks it) instead of comparing tier names, so the code that guards hidden data can be
reviewed in this one table. A new tier rule is a new field here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Literal

__all__ = [
    "BLIND_TIERS",
    "PRESETS",
    "REFERENCE_ROWS",
    "SANDBOXED_KINDS",
    "SCENES_PER_TIER",
    "SPEC_PARAMETERS",
    "TIERS",
    "TIER_RANGES",
    "TIER_RULES",
    "Kind",
    "Preset",
    "TierRules",
    "run_tiers",
    "spec_ranges",
    "tier_rules",
]


class Kind(StrEnum):
    """How a submission arrives (design §3, §5)."""

    #: A result file (``edx-arena-result``), scored as uploaded.
    hdf5 = "hdf5"
    #: A container image: an uploaded ``docker save`` archive, a registry link or a local name.
    container = "container"
    #: A Python script (or a zip with ``main.py``) run in the reference base image.
    script = "script"


#: Kinds the server runs in the sandbox (their output obeys the sandbox's caps).
SANDBOXED_KINDS: tuple[Kind, ...] = (Kind.container, Kind.script)


@dataclass(frozen=True)
class TierRules:
    """What one tier publishes, accepts and ranks by (design §3, §6, §7)."""

    name: str
    #: Participants may download the tier's measurements (its participant view).
    downloadable: bool
    #: The participant view carries the truth (``x_true`` and the true θ): ``True``, ``False``,
    #: or ``None`` when the organizer chooses per dataset (the Standard track's ``with_truth``,
    #: default without); a dataset records the choice it was made with.
    truth_in_view: bool | None
    #: The tier's scenes and answers may be pictured (mean spectra; truth and error maps only
    #: where the truth is in the view). Never for a tier whose measurements nobody may see.
    pictured: bool
    #: The submission kinds the tier accepts.
    kinds: tuple[Kind, ...]
    #: The score that ranks the tier: ``"blind"`` or ``"standard"`` (design §6).
    score: Literal["blind", "standard"]
    #: One of the blind tiers whose mean is the overall score.
    blind: bool

    @property
    def server_runs(self) -> bool:
        """The server runs the tier's submissions in the sandbox (none is uploaded as a result)."""
        return all(kind in SANDBOXED_KINDS for kind in self.kinds)

    @property
    def submit_as(self) -> str:
        """What a submission to the tier is, in words."""
        return "container image" if Kind.container in self.kinds else "HDF5 result"

    def takes(self, kind: Kind, *, server_run: bool = False) -> bool:
        """Whether a submission of ``kind`` may be scored on this tier: the kinds participants
        may send, or (``server_run``) the server's own run, on a blind tier, of an artifact sent
        to another blind tier (:func:`run_tiers`: Public and Dev take no image from
        participants, but a Hidden image is run on them)."""
        return kind in self.kinds or (server_run and self.blind and kind in SANDBOXED_KINDS)

    def truth_published(self, *, organizer_choice: bool = False) -> bool:
        """Whether a dataset of this tier hands its truth to participants; ``organizer_choice``
        decides only where the rules leave it to the organizer."""
        return organizer_choice if self.truth_in_view is None else self.truth_in_view

    def discloses_true_spec(self, *, truth_in_view: bool) -> bool:
        """Whether anything derived from the true θ (``|θ̂ − θ|``, which at a range bound *is*
        θ) may reach participants: only where θ itself is published, i.e. where the dataset's
        view carries the truth (Public; Standard when the organizer published it)."""
        return self.truth_published(organizer_choice=truth_in_view)


#: The rules of every tier, in leaderboard order (the blind tiers first).
TIER_RULES: Mapping[str, TierRules] = MappingProxyType(
    {
        rules.name: rules
        for rules in (
            TierRules(
                "public",
                downloadable=True,
                truth_in_view=True,
                pictured=True,
                kinds=(Kind.hdf5,),
                score="blind",
                blind=True,
            ),
            TierRules(
                "dev",
                downloadable=True,
                truth_in_view=False,
                pictured=True,
                kinds=(Kind.hdf5,),
                score="blind",
                blind=True,
            ),
            TierRules(
                "hidden",
                downloadable=False,
                truth_in_view=False,
                pictured=False,
                kinds=SANDBOXED_KINDS,
                score="blind",
                blind=True,
            ),
            # The known-operator track: scored with the standard formula on its own board.
            TierRules(
                "standard",
                downloadable=True,
                truth_in_view=None,
                pictured=True,
                kinds=(Kind.hdf5,),
                score="standard",
                blind=False,
            ),
        )
    }
)

#: Every tier the harness knows; ``standard`` is the known-operator track (design §3).
TIERS: tuple[str, ...] = tuple(TIER_RULES)
#: The three blind tiers, in leaderboard order.
BLIND_TIERS: tuple[str, ...] = tuple(t for t, rules in TIER_RULES.items() if rules.blind)

#: The four instrument "spec" parameters θ, in canonical order.
SPEC_PARAMETERS: tuple[str, ...] = (
    "absorption_correction_error",
    "detector_solid_angle",
    "peak_overlap",
    "bremsstrahlung_background",
)

_RANGES = {
    "public": {
        "absorption_correction_error": (-3.0, 6.0),
        "detector_solid_angle": (-0.15, 0.15),
        "peak_overlap": (-0.6, 1.2),
        "bremsstrahlung_background": (-0.15, 0.15),
    },
    "dev": {
        "absorption_correction_error": (-3.6, 5.4),
        "detector_solid_angle": (-0.15, 0.15),
        "peak_overlap": (-0.72, 1.08),
        "bremsstrahlung_background": (-0.15, 0.15),
    },
    "hidden": {
        "absorption_correction_error": (-2.1, 6.9),
        "detector_solid_angle": (-0.15, 0.15),
        "peak_overlap": (-0.42, 1.38),
        "bremsstrahlung_background": (-0.15, 0.15),
    },
    # Standard track: the operator is exactly known, θ = 0.
    "standard": {name: (0.0, 0.0) for name in SPEC_PARAMETERS},
}

#: Published θ ranges per tier: ``TIER_RANGES[tier][parameter] == (lo, hi)``.
TIER_RANGES: Mapping[str, Mapping[str, tuple[float, float]]] = MappingProxyType(
    {tier: MappingProxyType(r) for tier, r in _RANGES.items()}
)

SCENES_PER_TIER = 3
#: The calibration standard: the first rows of every scan, full width (design §2).
REFERENCE_ROWS = 4


@dataclass(frozen=True)
class Preset:
    """Grid and energy-axis size of a tier's scenes.

    ``channels`` centres are ``e0_keV + (c + 0.5) * de_keV`` keV.
    """

    name: str
    height: int
    width: int
    channels: int
    e0_keV: float
    de_keV: float


PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        "default": Preset("default", 128, 128, 1000, 0.2, 0.02),
        "small": Preset("small", 32, 32, 250, 0.2, 0.08),
    }
)


def tier_rules(tier: str) -> TierRules:
    """The rules of ``tier``; raises ``ValueError`` naming the known tiers."""
    try:
        return TIER_RULES[tier]
    except KeyError:
        raise ValueError(f"unknown tier {tier!r}; expected one of {', '.join(TIERS)}") from None


def run_tiers(tier: str, kind: Kind) -> tuple[str, ...]:
    """The tiers a submission of ``kind`` sent to ``tier`` is scored on, its own first.

    An artifact the server runs (an image or a script), sent to a blind tier, is run on every
    blind tier: one artifact, run by the server everywhere and scored against each tier's truth,
    is what a Certified method row is made of (design §7). Anything else is scored on its tier.
    """
    rules = tier_rules(tier)
    if rules.blind and kind in SANDBOXED_KINDS and rules.takes(kind):
        return (tier, *(t for t in BLIND_TIERS if t != tier))
    return (tier,)


def spec_ranges(tier: str) -> Mapping[str, tuple[float, float]]:
    """The published ranges of ``tier``; raises ``ValueError`` naming the known tiers."""
    try:
        return TIER_RANGES[tier]
    except KeyError:
        raise ValueError(f"unknown tier {tier!r}; expected one of {', '.join(TIERS)}") from None
