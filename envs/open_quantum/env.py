"""The monitored open quantum system `MetaSymOpenQuantum-v0` as a Gymnasium env."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np

from metasym_control.envs.open_quantum.params import (
    DEFAULT_OSCILLATOR_LEVELS,
    ENV_ID,
    SYSTEMS,
    OpenQuantumParams,
    sample_open_quantum_params,
)
from metasym_control.envs.open_quantum.physics import (
    check_physical,
    compact_observation,
    density_to_state,
    ground_density,
    observation_bounds,
    random_density,
    state_to_density,
)
from metasym_control.envs.open_quantum.render import TRAIL_LENGTH, OpenQuantumRenderer
from metasym_control.envs.open_quantum.sme import SMEBatch
from metasym_control.envs.open_quantum.tasks import StateTargetTask, make_task
from metasym_control.params import Split
from metasym_control.system_env import SystemEnv


def _resolve_params(
    system: str, n_levels: int | None, params: OpenQuantumParams | None
) -> OpenQuantumParams:
    if params is not None:
        if not isinstance(params, OpenQuantumParams):
            raise ValueError(f"{ENV_ID}: params must be OpenQuantumParams, got {type(params)}")
        return params
    if system == "oscillator":
        return OpenQuantumParams.for_system(
            "oscillator", n_levels=n_levels or DEFAULT_OSCILLATOR_LEVELS
        )
    return OpenQuantumParams.for_system(system)


def episode_params(
    given: Any,
    fixed: OpenQuantumParams | None,
    rng: np.random.Generator,
    split: Split,
    system: str,
    n: int,
) -> OpenQuantumParams:
    """The parameters of an episode: `given`, else `fixed`, else a draw from `split`.

    Args:
        given: parameters asked for by `reset(options={"params": ...})`, or None.
        fixed: the constructor's parameters, or None.
        rng: the environment's generator (used only for a draw).
        split: "train" or "test".
        system: the environment's system kind, which the parameters must match.
        n: the environment's dimension N, which the parameters must match.

    Raises:
        ValueError: parameters of another type, system or dimension.
    """
    p = given if given is not None else fixed
    if p is None:
        p = sample_open_quantum_params(rng, split, system, n)
    if not isinstance(p, OpenQuantumParams):
        raise ValueError(f"{ENV_ID}: options['params'] must be OpenQuantumParams")
    if p.system != system or p.dim != n:
        raise ValueError(f"{ENV_ID}: params for {p.system} N={p.dim} given to a {system} N={n} env")
    return p


class OpenQuantumEnv(SystemEnv):
    r"""A continuously monitored open quantum system under feedback control.

    ## Description
    A driven qubit (default) or a driven, damped oscillator truncated at N levels, whose
    conditional state ρ follows the stochastic master equation (SME) of homodyne detection
    (Itô form, ħ = 1, time in μs, rates in 1/μs, frequencies in rad/μs):

        dρ = −i[H, ρ] dt + Σ_k D[L_k]ρ dt + √η H[c]ρ dW,
        dY = √η <c + c†> dt + dW,

    with D[L]ρ = LρL† − ½{L†L, ρ}, H[c]ρ = cρ + ρc† − <c + c†>ρ, dW a Wiener increment and
    dY the measurement record (units √μs). This is QuTiP's `smesolve` convention with
    `sc_ops=[√η c]`, `c_ops=[√(1−η) c, other channels]`: QuTiP's stored measurement is
    dY/dt. Hamiltonian and channels (`OpenQuantumParams` fields in brackets):

    | | qubit (basis |e>, |g>) | oscillator (basis |0>..|N−1>) |
    |---|---|---|
    | H | Δσz/2 + (Ω/2)(u_x σx + u_y σy) | Δ a†a + (Ω/2)(u_x (a + a†) + u_y i(a − a†)) |
    | damping [γ1] | √γ1 σ− | √γ1 a (internal loss, unmonitored) |
    | dephasing [γφ] | √(γφ/2) σz | √γφ a†a |
    | monitored c [Γm, η] | √(Γm/2) σz (dispersive readout) | √Γm a (output port; x quadrature) |

    Ω = `max_rabi`; Δ = `detuning`. Integration: `SMEBatch` (a Kraus-map step, physical
    at every step, strong order 1, `substeps` steps per control period).

    ## State (`get_state`, 2N² float64)
    [Re vec ρ, Im vec ρ] with row-major vec (entry j·N + k is ρ_jk): the model's canonical
    coordinates. `set_state` checks that the vector is a density matrix (1e-8).

    ## Observation (float64)
    | system | components | bounds |
    |---|---|---|
    | qubit (4) | Bloch vector (<σx>, <σy>, <σz>), then the latest dY | [−1, 1]³, dY unbounded |
    | oscillator (N² + 1) | ρ_jj (N); Re ρ_jk, j<k row-major; Im ρ_jk; dY | [0,1], [−½,½], dY unb. |

    dY is the record increment summed over the last control period (0 after reset).

    ## Action (float32, shape (2,), [−1, 1])
    The drive's two quadratures (u_x, u_y), each scaled by Ω_max (rad/μs) as in the table,
    held constant over the control period. A non-finite or wrongly shaped action raises
    `ValueError`; out-of-range entries are clipped, and `info["action_clipped"]` says so.

    ## Reward
    F − w_u |u|², with the fidelity F = <ψ|ρ|ψ> to the task's target (default: qubit +x
    eigenstate (|e> + |g>)/√2, oscillator coherent state |α=1>), w_u = `effort_weight`.

    ## Start state and episode end
    Qubit ground state |g> (Bloch (0, 0, −1), F = ½ to +x) or oscillator vacuum, unless
    `reset(options={"state": x})` gives another (2N²,) state. Never terminates; the
    registered `TimeLimit` truncates after 400 steps.

    ## Info
    The shared keys (`SystemEnv.common_info`: `action_clipped`, `t` in μs, `params`; `clipped`
    and `time` are aliases kept for one version), `measurement` (dY of the last period, √μs),
    `fidelity`, `purity`.
    `measurement_record()` returns the whole record of the episode.

    ## Arguments
    system ("qubit" | "oscillator"), n_levels (oscillator N, default 10), params (fixed
    `OpenQuantumParams`; None draws from the `split` range at every reset unless
    `reset(options={"params": p})`), split ("train" | "test"), target ("default", "plus_x",
    "coherent", "fock"), alpha, fock, effort_weight, init_state ("ground", or "random": a
    random mixed state per reset, `random_density`; the data generator's varied starts),
    render_mode (None or "rgb_array"), width and height (of the rendered frame, pixels,
    default 480 × 480).

    ## Rendering
    `render()` returns a (height, width, 3) uint8 frame (matplotlib Agg, one figure reused;
    `envs/open_quantum/render.py`); `metadata["render_fps"]` = round(1/dt). Qubit: the Bloch
    sphere seen from azimuth 30°, elevation 20° (|e> up, +x towards the viewer's lower left),
    the state's Bloch vector as a red arrow and dot (faded when far behind), the target's as a
    green ring, a fading trail of the last 30 states, and the time (μs) and fidelity.
    Oscillator: |ρ_mn| as an N × N heat map (square-root colour scale over [0, 1]), the
    populations ρ_nn as bars with the target's |<n|ψ>|² as green marks, time and fidelity.

    The default qubit (Ω = 10 rad/μs, γ1 = γφ = 0.2/μs, Γm = 1/μs, η = 0.8, dt = 0.02 μs)
    decoheres from +x at 1.3/μs with zero drive, while a π/2 rotation takes 8 steps: a
    feedback drive can hold the conditional state near +x (F ≈ 0.88), zero drive leaves F = ½.

    ## Version history
    v0: first release.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 50}  # noqa: RUF012
    env_id = ENV_ID
    task: StateTargetTask
    params: OpenQuantumParams

    def __init__(
        self,
        system: str = "qubit",
        n_levels: int | None = None,
        params: OpenQuantumParams | None = None,
        split: Split = "train",
        target: str = "default",
        alpha: complex = 1.0,
        fock: int = 1,
        effort_weight: float = 0.01,
        render_mode: str | None = None,
        init_state: str = "ground",
        width: int = 480,
        height: int = 480,
    ) -> None:
        if system not in SYSTEMS:
            raise ValueError(f"{ENV_ID}: system must be one of {SYSTEMS}, got {system!r}")
        if init_state not in ("ground", "random"):
            raise ValueError(f"{ENV_ID}: init_state must be 'ground' or 'random': {init_state!r}")
        self.init_state = init_state
        if split not in ("train", "test"):
            raise ValueError(f"{ENV_ID}: split must be 'train' or 'test', got {split!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"{ENV_ID}: render_mode must be None or 'rgb_array': {render_mode!r}")
        if int(width) < 1 or int(height) < 1:
            raise ValueError(f"{ENV_ID}: width and height must be >= 1, got {width}x{height}")
        self.render_mode = render_mode
        self.width, self.height = int(width), int(height)
        base = _resolve_params(system, n_levels, params)
        if base.system != system and params is not None:
            system = base.system
        self.system = system
        self.n = base.dim
        self.split = split
        self._fixed_params = params
        self.params = base
        self.dt = base.dt
        self.task = make_task(system, self.n, target, alpha, fock, effort_weight)
        self.metadata = {**type(self).metadata, "render_fps": max(1, round(1.0 / self.dt))}
        self._renderer = OpenQuantumRenderer(system, self.task.target_ket, self.width, self.height)
        # recent Bloch vectors for the qubit picture's trail (kept only when rendering)
        self._trail: deque[np.ndarray] = deque(maxlen=TRAIL_LENGTH)
        nx = 2 * self.n * self.n
        self.state_names = [f"re_rho_{j}{k}" for j in range(self.n) for k in range(self.n)] + [
            f"im_rho_{j}{k}" for j in range(self.n) for k in range(self.n)
        ]
        self.state_units = ["1"] * nx
        self.action_names = ["u_x", "u_y"]
        low, high = observation_bounds(system, self.n)
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._sim = SMEBatch([base])
        self._rho = ground_density(system, self.n)[None]
        self._record: list[np.ndarray] = []
        self._last_dy = 0.0
        self._steps = 0

    # ----- state access
    def get_state(self) -> np.ndarray:
        """(2N²,) float64 state [Re vec ρ, Im vec ρ] (row-major vec)."""
        return density_to_state(self._rho[0])

    def set_state(self, state: np.ndarray) -> None:
        """Set ρ from a (2N²,) state; `ValueError` unless it is a density matrix (tol 1e-8)."""
        x = np.asarray(state, dtype=np.float64)
        nx = 2 * self.n * self.n
        if x.shape != (nx,):
            raise ValueError(f"{ENV_ID}: state of shape {x.shape}, expected ({nx},)")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{ENV_ID}: non-finite state")
        rho = state_to_density(x, self.n)
        try:
            check_physical(rho, atol=1e-8)
        except ValueError as e:
            raise ValueError(f"{ENV_ID}: state is not a density matrix: {e}") from e
        self._rho = (0.5 * (rho + rho.conj().T))[None]

    @property
    def density_matrix(self) -> np.ndarray:
        """(N, N) complex128 copy of the conditional density matrix."""
        return self._rho[0].copy()

    def measurement_record(self, per_substep: bool = False) -> np.ndarray:
        """The episode's measurement record dY (√μs).

        Args:
            per_substep: False: (T,) increments per control period; True: (T, substeps)
                increments per integration step (what `OpenQuantumModel.conditional_step`
                takes).
        """
        if not self._record:
            return np.zeros((0, self._sim.substeps) if per_substep else (0,))
        rec = np.stack(self._record)
        return rec if per_substep else rec.sum(axis=1)

    # ----- Gymnasium API
    def _obs(self) -> np.ndarray:
        comp = compact_observation(self._rho[0], self.system)
        return np.concatenate([comp, [self._last_dy]]).astype(np.float64)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start from the ground state, a random state when `init_state="random"`, or
        `options["state"]` (a (2N²,) density-matrix state); `options["params"]` fixes the
        system of this episode."""
        super().reset(seed=seed)
        options = options or {}
        p = episode_params(
            options.get("params"),
            self._fixed_params,
            self.np_random,
            self.split,
            self.system,
            self.n,
        )
        self.params = p
        self.dt = p.dt
        self._sim = SMEBatch([p])
        self._rho = ground_density(self.system, self.n)[None]
        if options.get("state") is not None:
            self.set_state(options["state"])
        elif self.init_state == "random":
            self._rho = random_density(self.np_random, self.n)[None]
        self._record = []
        self._last_dy = 0.0
        obs = self._obs()
        self._trail.clear()
        self._remember(obs)
        self._steps = 0
        info = {**self.common_info(0.0, False), "fidelity": self._fidelity()}
        return obs, {**info, "purity": self._purity()}

    def _remember(self, obs: np.ndarray) -> None:
        if self.render_mode is not None and self.system == "qubit":
            self._trail.append(obs[:3].copy())

    def _fidelity(self) -> float:
        return float(np.dot(self.get_state(), self.task.target_state))

    def _purity(self) -> float:
        r = self._rho[0]
        return float(np.einsum("ij,ji->", r, r).real)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply the drive for one control period dt; see the class docstring."""
        a, clipped = self.check_action(action)
        dw = self.np_random.normal(0.0, math.sqrt(self._sim.h), size=(1, self._sim.substeps))
        self._rho, dys = self._sim.step(self._rho, a[None], dw)
        self._record.append(dys[0])
        self._last_dy = float(dys[0].sum())
        f = self._fidelity()
        reward = f - self.task.effort_weight * float(np.dot(a, a))
        self._steps += 1
        info = {
            **self.common_info(self._steps * self.dt, clipped),
            "measurement": self._last_dy,
            "fidelity": f,
            "purity": self._purity(),
        }
        obs = self._obs()
        self._remember(obs)
        return obs, reward, False, False, info

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """(height, width, 3) uint8 frame: the Bloch sphere (qubit) or |ρ_mn| (oscillator)."""
        if self.render_mode is None:
            gym.logger.warn(f"{ENV_ID}: render called without render_mode='rgb_array'")
            return None
        t = len(self._record) * self.dt
        if self.system == "qubit":
            bloch = compact_observation(self._rho[0], "qubit")
            trail = np.asarray(self._trail).reshape(-1, 3)
            return self._renderer.qubit_frame(bloch, trail, t, self._fidelity())
        return self._renderer.density_frame(self._rho[0], t, self._fidelity())

    def close(self) -> None:
        """Release the figure."""
        self._renderer.close()
        super().close()
