"""The EDX forward model H(θ), operator version ``edx-forward-v1`` (design §2).

A chain M → R → D:

* **M** (modulation): each element e has a spectral signature
  ``S_e(c; θ) = Σ_lines w · A(E_l; a) · D(E_l) · G_c(E_l, σ(E_l; p)) / N_e`` where
  ``G_c`` is the Gaussian line profile integrated over channel c (erf), ``A`` the thin-film
  absorption factor, ``D`` the detector-window efficiency, and ``N_e`` the same double sum
  at nominal θ, so ``Σ_c S_e(c; 0) = 1``. A Kramers continuum
  ``B(p, c) = β (1 + b) Z̄(p) k(c; θ)`` with ``Z̄(p) = Σ_e Z_e x_e(p) / 74`` is linear in x,
  so it folds into the per-element signature.
* **R** (rotation): the known scan geometry, identity in v1, kept explicit.
* **D** (detector): gain ``g = (Ω0 + ΔΩ) / Ω0`` and dose; ``y = Poisson(λ) + N(0, σ_r²)``.

Because everything is linear in x, ``H(θ)`` is one (E, C) matrix
``M(θ) = dose · g · (S(θ) + β (1 + b) (Z / 74) ⊗ k(θ))`` and ``λ = x · M`` per pixel:
``apply`` and ``adjoint`` are one matrix product per cube. Energies are keV unless a name
says eV; arrays are float64.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy.special import erf

from harness.tiers import PRESETS, SPEC_PARAMETERS, Preset

__all__ = [
    "ATOMIC_NUMBERS",
    "ELEMENTS",
    "LINES",
    "OPERATOR_VERSION",
    "ForwardModel",
    "OperatorConstants",
    "Spec",
    "absorption_factor",
    "detector_sigma_keV",
    "energy_axis",
    "kramers",
    "window_efficiency",
]

OPERATOR_VERSION = "edx-forward-v1"

ELEMENTS: tuple[str, ...] = ("Si", "S", "Ti", "Mo", "Ba", "W")
ATOMIC_NUMBERS: Mapping[str, int] = {"Si": 14, "S": 16, "Ti": 22, "Mo": 42, "Ba": 56, "W": 74}
#: Z̄ is normalised by the heaviest element of the set (W).
_Z_REFERENCE = 74

#: Tabulated characteristic lines: element → ((line, energy keV, relative weight), ...).
LINES: Mapping[str, tuple[tuple[str, float, float], ...]] = {
    "Si": (("Ka", 1.7397, 1.0), ("Kb", 1.8359, 0.03)),
    "S": (("Ka", 2.3072, 1.0), ("Kb", 2.4640, 0.06)),
    "Ti": (("Ka", 4.5109, 1.0), ("Kb", 4.9318, 0.13)),
    "Mo": (("La", 2.2932, 1.0), ("Lb1", 2.3948, 0.32), ("Ka", 17.4793, 0.5)),
    "Ba": (("La", 4.4663, 1.0), ("Lb1", 4.8275, 0.43), ("Lb2", 5.1565, 0.15)),
    "W": (("Ma", 1.7756, 1.0), ("Mb", 1.8351, 0.59), ("La", 8.3976, 0.6), ("Lb1", 9.6724, 0.4)),
}

_FWHM_TO_SIGMA = 2.3548
#: λ values per block in :meth:`ForwardModel.sample` (16 MiB of float64).
_SAMPLE_BLOCK_VALUES = 1 << 21


@dataclass(frozen=True)
class Spec:
    """The four instrument "spec" parameters θ (design §1); all zero is the nominal spec.

    ``absorption_correction_error`` a (dimensionless, scales τ by e^(0.15 a)),
    ``detector_solid_angle`` ΔΩ (sr), ``peak_overlap`` p (σ scale 1 + 0.25 p),
    ``bremsstrahlung_background`` b (relative continuum error).
    """

    absorption_correction_error: float = 0.0
    detector_solid_angle: float = 0.0
    peak_overlap: float = 0.0
    bremsstrahlung_background: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    def as_array(self) -> np.ndarray:
        return np.array([getattr(self, name) for name in SPEC_PARAMETERS], dtype=np.float64)

    @classmethod
    def from_mapping(cls, values: Mapping[str, float]) -> Spec:
        """Build from a mapping holding exactly the four parameter names."""
        names = {f.name for f in fields(cls)}
        missing = names - set(values)
        extra = set(values) - names
        if missing or extra:
            raise ValueError(f"spec needs exactly {sorted(names)}; missing {sorted(missing)}, unknown {sorted(extra)}")
        return cls(**{k: float(values[k]) for k in names})

    @classmethod
    def from_array(cls, values: np.ndarray) -> Spec:
        return cls(**{name: float(v) for name, v in zip(SPEC_PARAMETERS, values, strict=True)})


@dataclass(frozen=True)
class OperatorConstants:
    """Every constant of design §2; stored as ``/operator`` attrs in measurement files."""

    dose: float = 100.0
    tau0: float = 2.0
    absorption_exponent: float = 0.15
    beta: float = 0.6
    beam_energy_keV: float = 20.0
    omega0_sr: float = 0.7
    window_coefficient: float = 0.05
    fwhm_ref_eV: float = 130.0
    fwhm_slope_eV: float = 2.5
    fwhm_ref_energy_eV: float = 5898.7
    peak_overlap_scale: float = 0.25
    read_noise: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_mapping(cls, values: Mapping[str, float]) -> OperatorConstants:
        """Build from a mapping (extra keys ignored, missing keys take the v1 defaults)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: float(v) for k, v in values.items() if k in names})


def energy_axis(preset: Preset) -> np.ndarray:
    """Channel centres ``E_c = e0 + (c + 0.5) · de`` (keV), shape (C,)."""
    return preset.e0_keV + (np.arange(preset.channels, dtype=np.float64) + 0.5) * preset.de_keV


def detector_sigma_keV(energy_keV: np.ndarray, peak_overlap: float, constants: OperatorConstants) -> np.ndarray:
    """Gaussian σ (keV) of a line at ``energy_keV``.

    ``FWHM(E)² = 130² + 2.5 · (E − 5898.7)`` (eV², E in eV), ``σ = FWHM / 2.3548``,
    scaled by ``1 + 0.25 · p`` for the peak_overlap error p.
    """
    e_eV = np.asarray(energy_keV, dtype=np.float64) * 1e3
    fwhm_sq = constants.fwhm_ref_eV**2 + constants.fwhm_slope_eV * (e_eV - constants.fwhm_ref_energy_eV)
    sigma_eV = np.sqrt(fwhm_sq) / _FWHM_TO_SIGMA
    return sigma_eV * (1.0 + constants.peak_overlap_scale * peak_overlap) * 1e-3


def absorption_factor(energy_keV: np.ndarray, absorption_error: float, constants: OperatorConstants) -> np.ndarray:
    """Thin-film absorption ``A(E) = (1 − e^−χ) / χ`` with ``χ = τ0 e^(0.15 a) (1 keV / E)³``.

    Computed as ``−expm1(−χ) / χ`` so it stays accurate as χ → 0 (where A → 1).
    """
    chi = constants.tau0 * np.exp(constants.absorption_exponent * absorption_error) / np.asarray(energy_keV) ** 3
    small = chi < 1e-12
    safe = np.where(small, 1.0, chi)
    return np.where(small, 1.0, -np.expm1(-safe) / safe)


def window_efficiency(energy_keV: np.ndarray, constants: OperatorConstants) -> np.ndarray:
    """Detector window transmission ``D(E) = exp(−0.05 (1 keV / E)³)``."""
    return np.exp(-constants.window_coefficient / np.asarray(energy_keV) ** 3)


def kramers(energy_keV: np.ndarray, constants: OperatorConstants) -> np.ndarray:
    """Kramers continuum shape ``K(E) = (E0 − E) / E`` for E < E0, else 0 (unnormalised)."""
    e = np.asarray(energy_keV, dtype=np.float64)
    return np.where(e < constants.beam_energy_keV, (constants.beam_energy_keV - e) / e, 0.0)


class ForwardModel:
    """H(θ) for one energy axis and one set of constants.

    Parameters
    ----------
    preset : Preset
        Energy axis (``e0_keV``, ``de_keV``, ``channels``); the grid size is not used here.
    constants : OperatorConstants
        Design §2 constants (dose, τ0, β, …).
    elements : tuple of str
        Element order of the maps, a subset/permutation of :data:`ELEMENTS`.
    """

    version = OPERATOR_VERSION

    def __init__(
        self,
        preset: Preset | str = "default",
        constants: OperatorConstants | None = None,
        *,
        elements: tuple[str, ...] = ELEMENTS,
    ) -> None:
        self.preset = PRESETS[preset] if isinstance(preset, str) else preset
        self.constants = constants or OperatorConstants()
        unknown = [e for e in elements if e not in LINES]
        if unknown:
            raise ValueError(f"unknown elements {unknown}; the v1 operator knows {list(ELEMENTS)}")
        self.elements = tuple(elements)
        self.energy_keV = energy_axis(self.preset)
        edges = self.preset.e0_keV + np.arange(self.preset.channels + 1, dtype=np.float64) * self.preset.de_keV
        self._edges = edges
        # Flatten the line table once: (L,) arrays plus the element index of each line.
        rows = [(i, energy, weight) for i, el in enumerate(self.elements) for _, energy, weight in LINES[el]]
        self._line_element = np.array([r[0] for r in rows], dtype=np.intp)
        self._line_energy = np.array([r[1] for r in rows], dtype=np.float64)
        self._line_weight = np.array([r[2] for r in rows], dtype=np.float64)
        self._z = np.array([ATOMIC_NUMBERS[e] for e in self.elements], dtype=np.float64) / _Z_REFERENCE
        nominal = Spec()
        self._line_norm = self._unnormalised_signatures(nominal).sum(axis=1)
        self._continuum_norm = float(self._unnormalised_continuum(nominal).sum())
        self._cache: dict[Spec, np.ndarray] = {}

    # -- building blocks -------------------------------------------------------------------

    def _unnormalised_signatures(self, spec: Spec) -> np.ndarray:
        """Σ_lines w · A · D · G_c per element, shape (E, C), before the nominal normalisation."""
        c = self.constants
        sigma = detector_sigma_keV(self._line_energy, spec.peak_overlap, c)
        # Channel-integrated Gaussian: Φ((edge_hi − E)/σ) − Φ((edge_lo − E)/σ), one row per line.
        z = (self._edges[None, :] - self._line_energy[:, None]) / (np.sqrt(2.0) * sigma[:, None])
        cdf = 0.5 * erf(z)
        profile = np.diff(cdf, axis=1)  # (L, C)
        amp = (
            self._line_weight
            * absorption_factor(self._line_energy, spec.absorption_correction_error, c)
            * window_efficiency(self._line_energy, c)
        )
        out = np.zeros((len(self.elements), self.preset.channels))
        np.add.at(out, self._line_element, amp[:, None] * profile)
        return out

    def _unnormalised_continuum(self, spec: Spec) -> np.ndarray:
        c = self.constants
        e = self.energy_keV
        return kramers(e, c) * absorption_factor(e, spec.absorption_correction_error, c) * window_efficiency(e, c)

    def signatures(self, spec: Spec = Spec()) -> np.ndarray:
        """Line signatures ``S_e(c; θ)`` (E, C); rows sum to 1 at nominal θ."""
        return self._unnormalised_signatures(spec) / self._line_norm[:, None]

    def continuum(self, spec: Spec = Spec()) -> np.ndarray:
        """Continuum shape ``k(c; θ) = K · A · D / Σ_c (K · A · D)|θ=0`` (C,)."""
        return self._unnormalised_continuum(spec) / self._continuum_norm

    def gain(self, spec: Spec = Spec()) -> float:
        """Detector gain ``g = (Ω0 + ΔΩ) / Ω0``."""
        return (self.constants.omega0_sr + spec.detector_solid_angle) / self.constants.omega0_sr

    def matrix(self, spec: Spec = Spec()) -> np.ndarray:
        """Expected counts per unit fraction, ``M(θ)`` (E, C), continuum included.

        ``M = dose · g · (S(θ) + β (1 + b) (Z / 74) ⊗ k(θ))``; cached per θ (read-only).
        """
        cached = self._cache.get(spec)
        if cached is not None:
            return cached
        c = self.constants
        background = c.beta * (1.0 + spec.bremsstrahlung_background) * np.outer(self._z, self.continuum(spec))
        m = c.dose * self.gain(spec) * (self.signatures(spec) + background)
        m.setflags(write=False)
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[spec] = m
        return m

    # -- the operator ----------------------------------------------------------------------

    @staticmethod
    def rotate(x: np.ndarray) -> np.ndarray:
        """R: the known scan geometry, the identity in ``edx-forward-v1``."""
        return x

    def apply(self, x: np.ndarray, spec: Spec = Spec(), *, matrix: np.ndarray | None = None) -> np.ndarray:
        """Expected counts ``λ = H(θ) x``: maps (E, H, W) → cube (H, W, C), float64.

        One (H·W, E) × (E, C) matrix product. ``matrix`` overrides ``M(θ)`` (e.g. a
        participant's rebuilt operator).
        """
        m = self.matrix(spec) if matrix is None else matrix
        x = self.rotate(np.asarray(x, dtype=np.float64))
        if x.ndim != 3 or x.shape[0] != m.shape[0]:
            raise ValueError(f"x must be (E={m.shape[0]}, H, W); got shape {x.shape}")
        e, h, w = x.shape
        return (x.reshape(e, h * w).T @ m).reshape(h, w, m.shape[1])

    def adjoint(self, y: np.ndarray, spec: Spec = Spec(), *, matrix: np.ndarray | None = None) -> np.ndarray:
        """Adjoint ``Hᵀ y``: cube (H, W, C) → maps (E, H, W), float64."""
        m = self.matrix(spec) if matrix is None else matrix
        y = np.asarray(y, dtype=np.float64)
        if y.ndim != 3 or y.shape[2] != m.shape[1]:
            raise ValueError(f"y must be (H, W, C={m.shape[1]}); got shape {y.shape}")
        h, w, c = y.shape
        return self.rotate((y.reshape(h * w, c) @ m.T).T.reshape(m.shape[0], h, w))

    def sample(self, x: np.ndarray, spec: Spec, rng: np.random.Generator) -> np.ndarray:
        """One noisy measurement ``y = Poisson(λ) + N(0, σ_r²)`` as float32 (H, W, C).

        Deterministic for a given generator state. λ is built and drawn in blocks of rows
        (``Generator.poisson`` draws element by element in C order, so the counts equal one
        draw over the whole cube) to keep the float64 λ and int64 counts off the peak memory.
        """
        m = self.matrix(spec)
        x = self.rotate(np.asarray(x, dtype=np.float64))
        if x.ndim != 3 or x.shape[0] != m.shape[0]:
            raise ValueError(f"x must be (E={m.shape[0]}, H, W); got shape {x.shape}")
        h, w = x.shape[1:]
        y = np.empty((h, w, m.shape[1]), dtype=np.float32)
        rows = max(1, _SAMPLE_BLOCK_VALUES // max(1, w * m.shape[1]))
        for r in range(0, h, rows):
            y[r : r + rows] = rng.poisson(self.apply(x[:, r : r + rows], spec, matrix=m))
        if self.constants.read_noise > 0:
            y = (y + rng.normal(0.0, self.constants.read_noise, size=y.shape)).astype(np.float32)
        return y
