"""Open-quantum-system parameters (qubit or oscillator) and their train / test sampler."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from metasym_control.params import (
    Split,
    SplitRange,
    SystemParams,
    require_in_range,
    require_nonnegative,
    require_positive,
)

ENV_ID = "MetaSymOpenQuantum-v0"
SystemKind = Literal["qubit", "oscillator"]
SYSTEMS: tuple[str, ...] = ("qubit", "oscillator")
DEFAULT_OSCILLATOR_LEVELS = 10


@dataclass(frozen=True)
class OpenQuantumParams(SystemParams):
    """Physical parameters of the monitored system (time unit: μs).

    The defaults are the qubit's; `OpenQuantumParams.for_system("oscillator")` gives the
    oscillator's defaults. See `OpenQuantumEnv` for the master equation they enter.

    Attributes:
        system: "qubit" (a driven two-level system, σz measured dispersively) or
            "oscillator" (a driven, damped mode truncated at `n_levels`, homodyne detection
            of the x quadrature of its output field).
        n_levels: Hilbert-space dimension N of the oscillator (None: 10); the qubit needs
            None or 2.
        detuning: Δ, drive-frame detuning, rad/μs (qubit H ⊃ Δσz/2, oscillator H ⊃ Δ a†a).
        max_rabi: Ω_max, the Rabi frequency (rad/μs) of a full-scale action.
        damping: γ1, unmonitored energy decay rate, 1/μs (qubit σ-, oscillator internal loss a).
        dephasing: γφ, unmonitored pure dephasing rate, 1/μs (qubit: coherence decay rate;
            oscillator: rate of the channel √γφ a†a).
        measurement_rate: Γm, rate of the monitored channel, 1/μs (qubit √(Γm/2) σz, so Γm is
            the measurement-induced dephasing rate; oscillator √Γm a, the output port).
        efficiency: η in [0, 1], the detection efficiency of the monitored channel.
        dt: control period (one env step), μs.
        substeps: SME integration steps per control period (step h = dt / substeps).
    """

    system: str = "qubit"
    n_levels: int | None = None
    detuning: float = 0.0
    max_rabi: float = 10.0
    damping: float = 0.2
    dephasing: float = 0.2
    measurement_rate: float = 1.0
    efficiency: float = 0.8
    dt: float = 0.02
    substeps: int = 4

    def validate(self) -> None:
        """Raise `ValueError` naming the field if the parameters are not physical."""
        owner = "OpenQuantumParams"
        if self.system not in SYSTEMS:
            raise ValueError(f"{owner}.system must be one of {SYSTEMS}, got {self.system!r}")
        if self.n_levels is not None:
            if isinstance(self.n_levels, bool) or not isinstance(self.n_levels, (int, np.integer)):
                raise ValueError(f"{owner}.n_levels must be an int, got {self.n_levels!r}")
            if self.n_levels < 2:
                raise ValueError(f"{owner}.n_levels must be >= 2, got {self.n_levels}")
            if self.system == "qubit" and self.n_levels != 2:
                raise ValueError(f"{owner}.n_levels must be 2 (or None) for a qubit")
        if not math.isfinite(self.detuning):
            raise ValueError(f"{owner}.detuning must be finite, got {self.detuning!r}")
        require_nonnegative(owner, "max_rabi", self.max_rabi)
        require_nonnegative(owner, "damping", self.damping)
        require_nonnegative(owner, "dephasing", self.dephasing)
        require_nonnegative(owner, "measurement_rate", self.measurement_rate)
        require_in_range(owner, "efficiency", self.efficiency, 0.0, 1.0)
        require_positive(owner, "dt", self.dt)
        if isinstance(self.substeps, bool) or not isinstance(self.substeps, (int, np.integer)):
            raise ValueError(f"{owner}.substeps must be an int, got {self.substeps!r}")
        if self.substeps < 1:
            raise ValueError(f"{owner}.substeps must be >= 1, got {self.substeps}")

    @property
    def dim(self) -> int:
        """N, the Hilbert-space dimension."""
        if self.system == "qubit":
            return 2
        return int(self.n_levels) if self.n_levels is not None else DEFAULT_OSCILLATOR_LEVELS

    @property
    def h(self) -> float:
        """The SME integration step dt / substeps, μs."""
        return self.dt / self.substeps

    @classmethod
    def for_system(cls, system: str = "qubit", **overrides: Any) -> OpenQuantumParams:
        """The documented defaults of `system`, with `overrides` applied."""
        if system == "qubit":
            base: dict[str, Any] = {}
        elif system == "oscillator":
            base = dict(_OSCILLATOR_DEFAULTS)
        else:
            raise ValueError(f"OpenQuantumParams.system must be one of {SYSTEMS}, got {system!r}")
        base.update(overrides)
        return cls(system=system, **base)


# The oscillator's defaults: a slower, weaker drive so that the reachable coherent states
# (|α| <= Ω_max / κ with κ = γ1 + Γm) stay well inside the N = 10 truncation.
_OSCILLATOR_DEFAULTS: dict[str, Any] = {
    "n_levels": DEFAULT_OSCILLATOR_LEVELS,
    "detuning": 0.0,
    "max_rabi": 2.0,
    "damping": 0.2,
    "dephasing": 0.05,
    "measurement_rate": 0.8,
    "efficiency": 0.8,
    "dt": 0.05,
    "substeps": 10,
}

# Train and (disjoint) test ranges per system; fields not listed keep their defaults.
OPEN_QUANTUM_RANGES: dict[str, dict[str, SplitRange]] = {
    "qubit": {
        "detuning": SplitRange((-1.0, 1.0), ((-2.0, -1.2), (1.2, 2.0))),
        "max_rabi": SplitRange((8.0, 12.0), ((6.0, 7.5), (12.5, 14.0))),
        "damping": SplitRange((0.1, 0.4), ((0.05, 0.09), (0.45, 0.6)), log=True),
        "dephasing": SplitRange((0.1, 0.4), ((0.05, 0.09), (0.45, 0.6)), log=True),
        "measurement_rate": SplitRange((0.5, 1.5), ((0.3, 0.45), (1.7, 2.2)), log=True),
        "efficiency": SplitRange((0.6, 0.9), ((0.45, 0.55), (0.92, 1.0))),
    },
    "oscillator": {
        "detuning": SplitRange((-0.5, 0.5), ((-1.0, -0.6), (0.6, 1.0))),
        "max_rabi": SplitRange((1.5, 2.5), ((1.0, 1.4), (2.6, 3.0))),
        "damping": SplitRange((0.1, 0.3), ((0.05, 0.09), (0.35, 0.5)), log=True),
        "dephasing": SplitRange((0.02, 0.08), ((0.01, 0.018), (0.09, 0.12)), log=True),
        "measurement_rate": SplitRange((0.6, 1.2), ((0.4, 0.55), (1.3, 1.6)), log=True),
        "efficiency": SplitRange((0.6, 0.9), ((0.45, 0.55), (0.92, 1.0))),
    },
}


def sample_open_quantum_params(
    rng: np.random.Generator,
    split: Split = "train",
    system: str = "qubit",
    n_levels: int | None = None,
) -> OpenQuantumParams:
    """Draw one system from the `split` range of `OPEN_QUANTUM_RANGES[system]`.

    Args:
        rng: the random generator (e.g. an env's `np_random`).
        split: "train" or "test" (disjoint ranges, so test systems are unseen).
        system: "qubit" or "oscillator".
        n_levels: oscillator dimension (None: the default 10).

    Returns:
        A validated `OpenQuantumParams`.
    """
    if system not in OPEN_QUANTUM_RANGES:
        raise ValueError(f"system must be one of {SYSTEMS}, got {system!r}")
    values = {name: r.sample(rng, split) for name, r in OPEN_QUANTUM_RANGES[system].items()}
    if system == "oscillator" and n_levels is not None:
        values["n_levels"] = n_levels
    return OpenQuantumParams.for_system(system, **values)
