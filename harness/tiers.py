"""Tiers, their published spec ranges and the size presets (design §1, §3)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "BLIND_TIERS",
    "PRESETS",
    "REFERENCE_ROWS",
    "SCENES_PER_TIER",
    "SPEC_PARAMETERS",
    "TIERS",
    "TIER_RANGES",
    "Preset",
    "spec_ranges",
]

#: The three blind tiers, in leaderboard order.
BLIND_TIERS: tuple[str, ...] = ("public", "dev", "hidden")
#: Every tier the harness knows; ``standard`` is the known-operator track (design §3).
TIERS: tuple[str, ...] = (*BLIND_TIERS, "standard")

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


def spec_ranges(tier: str) -> Mapping[str, tuple[float, float]]:
    """The published ranges of ``tier``; raises ``ValueError`` naming the known tiers."""
    try:
        return TIER_RANGES[tier]
    except KeyError:
        raise ValueError(f"unknown tier {tier!r}; expected one of {', '.join(TIERS)}") from None
