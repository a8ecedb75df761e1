"""Model evaluation (`metasym-control eval`): K-shot, long-horizon open-loop errors of every model
on held-out systems, all in one fixed unit, beside trivial predictors and the identified physics.

The protocol (docs/metasym.md, "Evaluation"):
- training data from the train range, the same for every learned model; held-out systems from
  the test range, each with `max(shots) + query_episodes` long episodes: the first K are the
  support of K-shot adaptation, the last `query_episodes` are scored (the same for every K);
- every model predicts open loop from the same anchors of the query episodes (its own history
  window before the anchor, the recorded actions after it); the error at step H is the RMS
  over anchors and state components of (prediction - truth) / σ, σ the state's standard
  deviation in the training data (one fixed σ for every model, so no model is scored in its
  own units); also the RMS over steps 1..H;
- rows: each model after K-shot adaptation and unadapted (K = 0), "next state = state", "the
  training data's mean state", the analytic model with least-squares identification;
- mean and 95% interval over held-out systems × meta-training seeds;
- with `--search`, every learned model first gets the same hyperparameter search
  (`SEARCH_SPACE`: four training configurations, one seed each, scored on validation systems
  drawn from the train range, never the test range); the best is then trained with every seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metasym_control.dynamics import AdaptBudget, DynamicsModel
from metasym_control.trajectory import Trajectory
from metasym_control.windows import make_windows, to_batch

logger = logging.getLogger(__name__)

# MetaSym's fast-weight sets (`MetaSymConfig.fast_set`); "metasym" is the default set
FAST_SETS = ("meta_attention", "meta_attention_head", "decoder", "none")
BASELINES = ("mlp", "transformer", "symplectic", "hnn")
DEFAULT_MODELS = (
    "metasym",
    *(f"metasym:{s}" for s in FAST_SETS[1:]),
    *BASELINES,
    "analytic",
)
EVAL_BUDGET = AdaptBudget(inner_steps=50, lr=3e-3, optimizer="adam", horizon=4)
HOLD, MEAN = "next state = state", "training mean state"
# the hyperparameter search (`--search`): the same four meta-training configurations for every
# learned model, as factors of the recipe's outer learning rate and query-loss horizon (the
# two settings measured to move long-horizon accuracy most, docs/metasym.md)
SEARCH_SPACE: tuple[dict[str, float], ...] = (
    {"outer_lr": 1.0, "horizon": 1.0},
    {"outer_lr": 1.0 / 3.0, "horizon": 1.0},
    {"outer_lr": 1.0, "horizon": 2.0},
    {"outer_lr": 1.0 / 3.0, "horizon": 2.0},
)
# the quick size (`--quick`): minutes on 2 cores, for tests and trials
_QUICK: dict[str, Any] = {
    "shots": (1, 3),
    "horizons": (1, 10, 50),
    "test_systems": 4,
    "seeds": 1,
    "n_tasks": 8,
    "episodes": 3,
    "steps_per_episode": 60,
    "meta_steps": 30,
    "windows_per_episode": 4,
    "validation_systems": 3,
    "energy_steps": 200,
    "energy_systems": 2,
}


@dataclass(frozen=True)
class EvalArgs:
    """Evaluate models on held-out systems: K-shot adaptation, errors at long horizons.

    Attributes:
        env: the registered system.
        models: "metasym" (default fast weights), "metasym:<fast_set>" (the fast-weight
            ablation: meta_attention, meta_attention_head, decoder, none), the baselines
            ("mlp", "transformer", "symplectic", "hnn") and "analytic" (the nominal physics
            with least-squares identification, where the system has it).
        checkpoints: checkpoints evaluated as they are (no training), e.g. the shipped one.
        shots: K, support episodes of each adaptation (0, the unadapted model, always added).
        horizons: H, steps at which the open-loop error is read.
        test_systems: held-out systems from the test range.
        query_episodes: scored episodes per held-out system.
        seeds: meta-training seeds of every learned model.
        n_tasks, episodes, steps_per_episode: training data (None: the shipped recipe's).
        meta_steps: outer steps of meta-training (the same for every learned model).
        train_horizon: rollout length of meta-training's query loss, steps (None: the
            recipe's, 4), the same for every learned model.
        train_curriculum: the query-loss horizons of the earlier stages of a horizon
            curriculum (`MetaTrainConfig.horizon_curriculum`, e.g. 4 16 with
            `--train-horizon 64`; (): none), the same for every learned model.
        train_noise: meta-training's input noise (`MetaTrainConfig.input_noise`, in state
            stds; None: the recipe's), the same for every learned model.
        train_context_gap: meta-training's stale contexts (`MetaTrainConfig.context_gap`,
            steps; None: the recipe's), the same for every learned model.
        metasym_width: MetaSym's decoder width (`MetaSymConfig.d_model`; None: the
            recipe's); heads stay 16 wide.
        metasym_mlp_ratio: MetaSym's decoder MLP width / d_model (None: the recipe's).
        metasym_attitude: MetaSym's encoder also takes the rotation's local chart and
            angular momentum (`MetaSymConfig.canonical_attitude`; systems with a rotation).
        metasym_kinematic_attitude: MetaSym's quaternion follows its predicted body rates
            exactly (`MetaSymConfig.kinematic_attitude`; systems with a rotation).
        metasym_body_force: MetaSym's decoder also predicts a body-frame velocity change,
            turned with the vehicle (`MetaSymConfig.body_force`; systems with a rotation).
        windows_per_episode: anchors scored in each query episode (evenly spaced).
        search: first search each learned model's meta-training configuration
            (`SEARCH_SPACE`, four per model, one seed each) on validation systems from the
            train range, then train every seed with the best.
        validation_systems: systems of that search (train range, their own seed).
        energy_steps: spring mesh only: control steps of the long rollout of an undamped,
            unforced held-out mesh (energy drift beside position and phase error).
        energy_systems: spring mesh only: meshes of that rollout.
        quick: the small size (minutes) for tests and trials; sizes given explicitly win.
        out: folder of the run: results.json, tables.md, plots, cached checkpoints (reused
            only when their configuration matches).
        write_benchmarks: also write the tables as section "eval-<env>" of BENCHMARKS.md
            (with `section`: "eval-<env>-<section>").
        section: a name that keeps this run's BENCHMARKS.md section apart from the main
            one of its system (e.g. "full" for a full-size run of some models); None: the
            main section.
        seed: seed of the data (training, held-out) and of the first meta-training seed.
    """

    env: str = "quadrotor"
    models: tuple[str, ...] = DEFAULT_MODELS
    checkpoints: tuple[Path, ...] = ()
    shots: tuple[int, ...] = (1, 3, 5)
    horizons: tuple[int, ...] = (1, 10, 50, 100, 200)
    test_systems: int = 16
    query_episodes: int = 2
    seeds: int = 3
    n_tasks: int | None = None
    episodes: int | None = None
    steps_per_episode: int | None = None
    meta_steps: int = 300
    train_horizon: int | None = None
    train_curriculum: tuple[int, ...] = ()
    train_noise: float | None = None
    train_context_gap: int | None = None
    metasym_width: int | None = None
    metasym_mlp_ratio: int | None = None
    metasym_attitude: bool = False
    metasym_kinematic_attitude: bool = False
    metasym_body_force: bool = False
    windows_per_episode: int = 8
    search: bool = False
    validation_systems: int = 6
    energy_steps: int = 10_000
    energy_systems: int = 4
    quick: bool = False
    out: Path = Path("runs/eval")
    write_benchmarks: bool = False
    section: str | None = None
    seed: int = 0

    def sized(self) -> EvalArgs:
        """These arguments with `--quick`'s sizes where the size was left at its default."""
        if not self.quick:
            return self
        defaults = EvalArgs()
        changes = {k: v for k, v in _QUICK.items() if getattr(self, k) == getattr(defaults, k)}
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        """Check every option up front (`UsageError` naming the flag and its range)."""
        from metasym_control.systems import get_system, known_systems
        from metasym_control.usage import at_least, require, section_name

        require(self.env in known_systems(), "--env", f"one of {known_systems()}", self.env)
        known = ", ".join(("metasym", *(f"metasym:{s}" for s in FAST_SETS), *BASELINES))
        for m in self.models:
            require(m in _model_names(), "--models", f"among {known}, analytic", m)
        require(bool(self.models or self.checkpoints), "--models", "a model or --checkpoints", "")
        for c in self.checkpoints:
            require(
                Path(c).with_suffix(".json").exists(), "--checkpoints",
                "existing checkpoints (stem.json and stem.safetensors)", str(c),
            )  # fmt: skip
        require(len(self.shots) >= 1, "--shots", "at least one K", self.shots)
        for k in self.shots:
            at_least("--shots", k, 1)
        require(len(self.horizons) >= 1, "--horizons", "at least one H", self.horizons)
        for h in self.horizons:
            at_least("--horizons", h, 1)
        at_least("--test-systems", self.test_systems, 2)
        at_least("--query-episodes", self.query_episodes, 1)
        at_least("--seeds", self.seeds, 1)
        at_least("--n-tasks", self.n_tasks, 2, optional=True)
        at_least("--episodes", self.episodes, 1, optional=True)
        at_least("--steps-per-episode", self.steps_per_episode, 10, optional=True)
        at_least("--meta-steps", self.meta_steps, 1)
        at_least("--train-horizon", self.train_horizon, 1, optional=True)
        for h in self.train_curriculum:
            at_least("--train-curriculum", h, 1)
        at_least("--train-noise", self.train_noise, 0.0, optional=True)
        at_least("--train-context-gap", self.train_context_gap, 0, optional=True)
        at_least("--metasym-width", self.metasym_width, 16, optional=True)
        if self.metasym_width is not None:
            w = self.metasym_width
            require(w % 16 == 0, "--metasym-width", "a multiple of 16", w)
        at_least("--metasym-mlp-ratio", self.metasym_mlp_ratio, 1, optional=True)
        rotates = get_system(self.env).attitude_coordinates is not None
        rotation = "a system with a rotation (quadrotor)"
        if self.metasym_attitude:
            require(rotates, "--metasym-attitude", rotation, self.env)
        if self.metasym_kinematic_attitude:
            flag = "--metasym-kinematic-attitude"
            require(rotates, flag, rotation, self.env)
            require(not self.metasym_attitude, flag, "not with --metasym-attitude", True)
        if self.metasym_body_force:
            require(rotates, "--metasym-body-force", rotation, self.env)
        at_least("--windows-per-episode", self.windows_per_episode, 1)
        at_least("--validation-systems", self.validation_systems, 2)
        section_name(self.section)
        at_least("--energy-steps", self.energy_steps, 1)
        at_least("--energy-systems", self.energy_systems, 1)


def _model_names() -> tuple[str, ...]:
    return ("metasym", *(f"metasym:{s}" for s in FAST_SETS), *BASELINES, "analytic")


# ------------------------------------------------------------------------------ scoring
def state_scale(train: Sequence[Trajectory]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fixed unit of every error: (mean (nx,), std (nx,), scored (nx,) bool).

    Components that do not vary in the training data (std below 1e-9 of the largest, e.g. the
    real diagonal's imaginary parts of a density matrix) are not scored: dividing by their
    std would turn rounding into error.
    """
    x = np.concatenate([tr.states[:, :-1][tr.valid_mask()] for tr in train])
    mean, std = x.mean(0), x.std(0)
    scored = std > 1e-9 * max(float(std.max()), 1e-300)
    return mean, np.where(scored, std, 1.0), scored


def anchors(data: Trajectory, horizon: int, per_episode: int, first: int = 16) -> np.ndarray:
    """Rows of `make_windows(data, L, horizon)` to score: `per_episode` evenly spaced anchors
    of each episode long enough, from step `first` on where the episode allows (so a model's
    history window holds real transitions)."""
    rows, offset = [], 0
    for k in range(data.num):
        n = int(data.lengths[k]) - horizon + 1
        if n <= 0:
            continue
        lo = min(first, (n - 1) // 2)
        picks = np.unique(np.linspace(lo, n - 1, per_episode).round().astype(int))
        rows.append(offset + picks)
        offset += n
    return np.concatenate(rows) if rows else np.zeros(0, dtype=int)


def predict(model: DynamicsModel, windows: dict[str, np.ndarray], chunk: int = 128) -> np.ndarray:
    """Open-loop predictions (B, H, nx) of any model for windows of `make_windows`: its memory
    of each window's history, then `rollout` along the recorded actions (float64 out)."""
    ref = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None else torch.float64
    out = []
    n = int(windows["x0"].shape[0])
    with torch.no_grad():
        for i in range(0, n, chunk):
            b = to_batch(windows, np.arange(i, min(n, i + chunk)), device, dtype)
            memory = model.init_memory(b["hs"], b["ha"], b["hv"])
            out.append(model.rollout(b["x0"], b["ua"], memory).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0, 0))


def step_errors(
    pred: np.ndarray, truth: np.ndarray, std: np.ndarray, scored: np.ndarray
) -> np.ndarray:
    """(H,) RMS over windows and scored components of (pred - truth) / std at each step
    (inf where a prediction is not finite)."""
    e = (pred - truth)[..., scored] / std[scored]  # (B, H, n)
    sq = np.where(np.isfinite(e), e * e, np.inf)
    return np.sqrt(sq.mean(axis=(0, 2)))


def summarise_errors(per_step: np.ndarray, horizons: Sequence[int]) -> dict[str, list[float]]:
    """Read `at` (the error at step H) and `upto` (the RMS over steps 1..H) for each H."""
    at = [float(per_step[h - 1]) if h <= len(per_step) else float("nan") for h in horizons]
    upto = [
        float(np.sqrt(np.mean(per_step[:h] ** 2))) if h <= len(per_step) else float("nan")
        for h in horizons
    ]
    return {"at": at, "upto": upto}


def mean_interval(
    values: Sequence[float], seed: int = 0, n_boot: int = 2000
) -> tuple[float, float, float]:
    """Mean and 95% bootstrap interval of the mean (inf if any value is inf)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    if not np.all(np.isfinite(v)):
        return float("inf"), float("inf"), float("inf")
    rng = np.random.default_rng(seed)
    means = rng.choice(v, size=(n_boot, v.size), replace=True).mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(v.mean()), float(lo), float(hi)


# ------------------------------------------------------------------------------ physics
def quantum_physicality(pred: np.ndarray) -> dict[str, float]:
    """Is each predicted state a density matrix? pred (B, H, 2N²) -> the largest |tr ρ − 1|,
    the largest ‖ρ − ρ†‖_F and the smallest eigenvalue of ρ's Hermitian part (a density
    matrix has 0, 0 and >= 0) over all predicted states."""
    from metasym_control.envs.open_quantum.physics import state_to_density

    n = round(float(np.sqrt(pred.shape[-1] / 2)))
    rho = state_to_density(pred.reshape(-1, pred.shape[-1]), n)
    if not np.all(np.isfinite(rho)):
        return {"trace": float("inf"), "hermiticity": float("inf"), "min_eigenvalue": float("-inf")}
    herm = 0.5 * (rho + np.conj(np.swapaxes(rho, -1, -2)))
    return {
        "trace": float(np.abs(np.trace(rho, axis1=-2, axis2=-1) - 1.0).max()),
        "hermiticity": float(np.linalg.norm(rho - herm, axis=(-2, -1)).max() * 2.0),
        "min_eigenvalue": float(np.linalg.eigvalsh(herm).min()),
    }


@dataclass
class MeshTruth:
    """An undamped, unforced mesh flown by the environment: params, states (L + S + 1, nx),
    and exploration episodes of the same mesh (the support of adaptation)."""

    params: Any
    states: np.ndarray
    history: int
    support: Trajectory


def mesh_truths(
    seed: int, systems: int, steps: int, history: int = 16, shots: int = 3, support_steps: int = 100
) -> list[MeshTruth]:
    """`systems` held-out meshes (test range) with their damping set to 0, each flown by the
    environment with zero force for `history + steps` control steps from a seeded start, with
    `shots` exploration episodes of `support_steps` of the same mesh to adapt on."""
    from metasym_control.generate import generate_data
    from metasym_control.systems import get_system

    entry = get_system("spring_mesh")
    rng = np.random.default_rng(seed)
    out = []
    for s in range(systems):
        p = entry.sample_params(rng, "test").replace(damping=0.0)
        env = entry.make_env().unwrapped
        env.reset(seed=seed + s, options={"params": p})
        states = [env.get_state().copy()]
        zero = np.zeros(env.action_space.shape, dtype=np.float32)
        for _ in range(history + steps):
            env.step(zero)
            states.append(env.get_state().copy())
        support = generate_data(
            "spring_mesh", 1, shots, support_steps, "test", seed + 100 + s, params=[p], num_envs=1
        )
        out.append(MeshTruth(p, np.asarray(states), history, support))
    return out


def mesh_long_rollout(
    model: DynamicsModel | str, truth: MeshTruth, std: np.ndarray, mean: np.ndarray
) -> dict[str, float]:
    """Energy, position and slowest-mode phase of one long open-loop prediction of an
    undamped, unforced mesh (a model as given, or "hold" / "mean" for the trivial
    predictors; adapt a model on `truth.support` first for the protocol's K-shot row).

    Returns:
        energy_drift: the largest |E(x̂_t) − E_0| / E_0 over the rollout, E the true mesh
        energy (true parameters) of the predicted state; energy_drift_end: the same at the
        last step; position_error: RMS over steps and positions of (q̂ − q)/σ; phase_error:
        |wrapped phase difference| of the slowest mode at the last step, rad.
    """
    from metasym_control.envs.spring_mesh.physics import (
        _stiffness_matrix,
        particle_masses,
        rest_state,
        total_energy,
    )

    p, xs, L = truth.params, truth.states, truth.history
    x0, future = xs[L], xs[L + 1 :]
    n = len(future)
    if isinstance(model, str):
        pred = np.broadcast_to(x0 if model == "hold" else mean, future.shape)
    else:
        lm = int(model.history_len)
        zeros = np.zeros((L, 0))
        nu = int(model.action_dim)
        w = {
            "hs": xs[L - lm : L][None],
            "ha": np.zeros((1, lm, nu)),
            "hv": np.ones((1, lm), dtype=bool),
            "x0": x0[None],
            "ua": np.zeros((1, n, nu)),
            "y": future[None],
        }
        del zeros
        pred = predict(model, w)[0]
    e0 = float(total_energy(p, x0))
    with np.errstate(all="ignore"):
        e = total_energy(p, pred)
        drift = np.abs(e - e0) / e0
    half = xs.shape[1] // 2
    pos = (pred[:, :half] - future[:, :half]) / std[:half]
    rest = rest_state(p)[:half]
    m_half = np.sqrt(np.repeat(particle_masses(p), 2))
    lam, vec = np.linalg.eigh(_stiffness_matrix(p, rest) / np.outer(m_half, m_half))
    i = int(np.argmax(lam > 1e-9 * lam.max()))
    omega, u = float(np.sqrt(lam[i])), vec[:, i]

    def phase(x: np.ndarray) -> float:
        a = u @ (m_half * (x[:half] - rest))
        a_dot = u @ (x[half:] / m_half)
        return float(np.arctan2(-a_dot / omega, a))

    dphi = phase(pred[-1]) - phase(future[-1]) if np.all(np.isfinite(pred[-1])) else np.inf
    return {
        "energy_drift": float(np.max(np.where(np.isfinite(drift), drift, np.inf))),
        "energy_drift_end": float(drift[-1]) if np.isfinite(drift[-1]) else float("inf"),
        "position_error": float(np.sqrt(np.mean(np.where(np.isfinite(pos), pos * pos, np.inf)))),
        "phase_error": float(abs((dphi + np.pi) % (2 * np.pi) - np.pi))
        if np.isfinite(dphi)
        else float("inf"),
    }


# ------------------------------------------------------------------------------ models
def _recipe(env: str) -> Any:
    from metasym_control.pretrained import RECIPES

    return RECIPES.get((env, "metasym"))


def _horizon_text(cfg: dict[str, Any]) -> str:
    """The query-loss horizon of a run's configuration, e.g. "4" or "4 → 16 → 64"."""
    last = cfg["train_horizon"] or 4
    return " → ".join(str(h) for h in (*cfg.get("train_curriculum", ()), last))


def _variant_text(cfg: dict[str, Any]) -> str:
    """What a run changed beyond the recipe's training and size: stale training contexts,
    MetaSym's decoder width and MLP ratio (e.g. ", contexts up to 32 steps stale"), or ""."""
    parts = []
    if cfg.get("train_context_gap"):
        parts.append(f", contexts up to {cfg['train_context_gap']} steps stale")
    if cfg.get("metasym_width"):
        parts.append(f"; MetaSym's decoder {cfg['metasym_width']} wide")
    if cfg.get("metasym_mlp_ratio"):
        parts.append(f"; MetaSym's decoder MLP {cfg['metasym_mlp_ratio']}x its width")
    if cfg.get("metasym_attitude"):
        parts.append("; MetaSym's encoder also on the attitude and angular momentum")
    if cfg.get("metasym_kinematic_attitude"):
        parts.append("; MetaSym's attitude carried by its body rates")
    if cfg.get("metasym_body_force"):
        parts.append("; MetaSym's decoder with a body-frame force")
    return "".join(parts)


def _without_unset(config: Any, later: tuple[str, ...]) -> dict[str, Any]:
    """`dataclasses.asdict(config)` without those of the `later` fields that are unset."""
    out = dataclasses.asdict(config)
    for name in later:
        if not out[name]:
            del out[name]
    return out


def _config_key(payload: dict[str, Any]) -> str:
    from metasym_control.params import jsonable

    text = json.dumps(jsonable(payload), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def learned_model(
    name: str,
    train: Sequence[Trajectory],
    args: EvalArgs,
    seed: int,
    folder: Path,
    setting: dict[str, float] | None = None,
) -> tuple[Any, float]:
    """The meta-trained model `name` for meta-training seed `seed` and its training wall time.

    Its checkpoint is cached under `folder/<name>/seed<seed>-<hash>` where the hash covers the
    model, data and training configuration; a checkpoint trained otherwise is never reused.
    `setting` (an entry of `SEARCH_SPACE`) scales the recipe's outer learning rate and
    query-loss horizon; None (or factors of 1) is the recipe itself.
    """
    from metasym_control.checkpoint import load_checkpoint, save_checkpoint
    from metasym_control.meta_training import meta_train
    from metasym_control.models.metasym import MetaSymConfig
    from metasym_control.pretrained import DEFAULT_TRAIN
    from metasym_control.systems import model_for_data

    # the protocol's base is the default recipe, not a shipped checkpoint's variant of it
    # (the quadrotor's head fast set and stale contexts are flags here), so its tables
    # and cached checkpoints stay comparable across what is shipped
    cfg = dataclasses.replace(DEFAULT_TRAIN, steps=args.meta_steps, seed=seed)
    cfg = cfg.matching(EVAL_BUDGET)
    if args.train_horizon is not None:
        cfg = dataclasses.replace(cfg, horizon=args.train_horizon)
    if args.train_curriculum:
        cfg = dataclasses.replace(cfg, horizon_curriculum=tuple(args.train_curriculum))
    if args.train_noise is not None:
        cfg = dataclasses.replace(cfg, input_noise=args.train_noise)
    if args.train_context_gap is not None:
        cfg = dataclasses.replace(cfg, context_gap=args.train_context_gap)
    if setting is not None:
        scaled = [max(1, round(h * setting["horizon"])) for h in cfg.query_horizons]
        cfg = dataclasses.replace(
            cfg,
            outer_lr=cfg.outer_lr * setting["outer_lr"],
            horizon=scaled[-1],
            horizon_curriculum=tuple(scaled[:-1]),
        )
    kind, _, fast_set = name.partition(":")
    metasym = MetaSymConfig()
    unchanged = metasym  # what a baseline's key holds: MetaSym's options do not retrain it
    if fast_set:
        metasym = dataclasses.replace(metasym, fast_set=fast_set)
    if args.metasym_width is not None:
        width = args.metasym_width
        metasym = dataclasses.replace(metasym, d_model=width, n_heads=width // 16)
    if args.metasym_mlp_ratio is not None:
        metasym = dataclasses.replace(metasym, mlp_ratio=args.metasym_mlp_ratio)
    if args.metasym_attitude:
        metasym = dataclasses.replace(metasym, canonical_attitude=True)
    if args.metasym_kinematic_attitude:
        metasym = dataclasses.replace(metasym, kinematic_attitude=True)
    if args.metasym_body_force:
        metasym = dataclasses.replace(metasym, body_force=True)
    data = {"env": args.env, "seed": args.seed, "tasks": args.n_tasks, "episodes": args.episodes}
    data["steps"] = args.steps_per_episode
    # options added later leave the key when off, so older cached checkpoints stay keyed
    train_cfg = _without_unset(cfg, ("horizon_curriculum", "context_gap"))
    metasym_cfg = _without_unset(
        metasym if kind == "metasym" else unchanged,
        ("canonical_attitude", "kinematic_attitude", "body_force"),
    )
    payload = {
        "model": name,
        "train": train_cfg,
        "metasym": metasym_cfg,
        "data": data,
        "init_seed": seed,
    }
    stem = folder / name.replace(":", "-") / f"seed{seed}-{_config_key(payload)}" / "model"
    if stem.with_suffix(".json").exists():
        model, meta = load_checkpoint(stem)
        return model, float(meta.get("training", {}).get("wall_seconds", float("nan")))
    torch.manual_seed(seed)
    model = model_for_data(kind, train[0], metasym if kind == "metasym" else None)  # type: ignore[arg-type]
    model.fit_normalization(train)
    t0 = time.perf_counter()
    meta_train(model, train, cfg, progress=True)
    wall = time.perf_counter() - t0
    from metasym_control.params import jsonable

    save_checkpoint(stem, model, training=jsonable({"wall_seconds": wall, "config": payload}))
    return model, wall


def setting_label(setting: dict[str, float], args: EvalArgs) -> str:
    """A search setting in the recipe's units, e.g. "outer lr 0.001, horizon 8"."""
    from metasym_control.pretrained import DEFAULT_TRAIN

    horizon = args.train_horizon or DEFAULT_TRAIN.matching(EVAL_BUDGET).horizon
    lr = DEFAULT_TRAIN.outer_lr * setting["outer_lr"]
    return f"outer lr {lr:.2g}, horizon {max(1, round(horizon * setting['horizon']))}"


def score_on_system(
    model: Any,
    task: Trajectory,
    query: Trajectory,
    shots: int,
    args: EvalArgs,
    horizon: int,
    std: np.ndarray,
    scored: np.ndarray,
) -> tuple[dict[str, list[float]], np.ndarray, float]:
    """One model on one system: adapted on `task`'s first `shots` episodes (0: as it is),
    predicting `horizon` steps from the anchors of `query`.

    Returns:
        The errors (`summarise_errors` at `args.horizons`), the predictions (B, H, nx) and the
        adaptation's wall time (s).
    """
    w = make_windows(query, int(model.history_len), horizon)
    sub = {k: v[anchors(query, horizon, args.windows_per_episode)] for k, v in w.items()}
    t0 = time.perf_counter()
    used = model if shots == 0 else model.adapt(task.subset(list(range(shots))), EVAL_BUDGET)
    adapt_s = time.perf_counter() - t0
    pred = predict(used, sub)
    err = summarise_errors(step_errors(pred, sub["y"], std, scored), args.horizons)
    return err, pred, adapt_s


def search_setting(
    name: str,
    train: Sequence[Trajectory],
    validation: Sequence[Trajectory],
    args: EvalArgs,
    folder: Path,
    std: np.ndarray,
    scored: np.ndarray,
) -> dict[str, Any]:
    """The hyperparameter search of one learned model: every `SEARCH_SPACE` setting trained
    with the first seed and scored on the validation systems (train range) by the mean error
    at the middle horizon after the main K-shot adaptation (a diverged one scores inf).

    Returns:
        {"settings": [{"setting", "label", "score", "train_seconds"}], "chosen": the index of
        the lowest score (the first setting where none is finite)}.
    """
    k, h = _main_shot(args.shots), _mid_horizon(args.horizons)
    h_idx = list(args.horizons).index(h)
    k_max = max(args.shots)
    out: list[dict[str, Any]] = []
    scores: list[float] = []
    for setting in SEARCH_SPACE:
        model, wall = learned_model(name, train, args, args.seed, folder, setting)
        errors = []
        for task in validation:
            query = task.subset(list(range(k_max, task.num)))
            err, _, _ = score_on_system(
                model, task, query, k, args, max(args.horizons), std, scored
            )
            errors.append(err["at"][h_idx])
        score = float(np.mean(errors)) if np.all(np.isfinite(errors)) else float("inf")
        scores.append(score)
        out.append(
            {"setting": setting, "label": setting_label(setting, args), "score": score,
             "train_seconds": wall}
        )  # fmt: skip
        logger.info("eval search: %s, %s: %.4g", name, out[-1]["label"], score)
    chosen = int(np.argmin(scores)) if np.any(np.isfinite(scores)) else 0
    return {"settings": out, "chosen": chosen}


def _analytic(env: str, dt: float) -> DynamicsModel | None:
    from metasym_control.systems import get_system

    entry = get_system(env)
    if entry.analytic_model is None:
        return None
    return entry.analytic_model(entry.nominal_params(), dt)


def _fast_weights(model: Any) -> int:
    names = getattr(model, "fast_weight_names", None)
    if names is None:
        return 0
    params = dict(model.named_parameters())
    return int(sum(params[n].numel() for n in names()))


def _parameters(model: Any) -> int:
    if isinstance(model, torch.nn.Module):
        return int(sum(p.numel() for p in model.parameters()))
    return 0


# ------------------------------------------------------------------------------ the run
def evaluate(args: EvalArgs, progress: bool = True) -> dict[str, Any]:
    """Run the evaluation; returns everything the tables and plots need (JSON-ready).

    Result: {"config", "scale", "rows": [{"model", "seed", "system", "shots", "at", "upto",
    "adapt_seconds"}, ...], "models": {name: {"parameters", "fast_weights", "train_seconds"}},
    "search": {name: `search_setting`'s result} (empty without `search`)}.
    """
    from metasym_control.generate import generate_tasks
    from metasym_control.systems import get_system

    args = args.sized()
    recipe = _recipe(args.env)
    entry = get_system(args.env)
    n_tasks = args.n_tasks or (recipe.n_tasks if recipe else 32)
    episodes = args.episodes or (recipe.episodes if recipe else 4)
    steps = args.steps_per_episode or (recipe.steps_per_episode if recipe else entry.episode_steps)
    args = dataclasses.replace(args, n_tasks=n_tasks, episodes=episodes, steps_per_episode=steps)
    h_max = max(args.horizons)
    k_max = max(args.shots)
    train = generate_tasks(args.env, n_tasks, episodes, steps, "train", args.seed, progress)
    test = generate_tasks(
        args.env, args.test_systems, k_max + args.query_episodes, h_max + 24, "test",
        args.seed + 1, progress,
    )  # fmt: skip
    mean, std, scored = state_scale(train)
    folder = Path(args.out) / args.env
    rows: list[dict[str, Any]] = []
    models: dict[str, dict[str, Any]] = {}
    queries = [t.subset(list(range(k_max, t.num))) for t in test]
    # the trivial predictors, once per system
    for s, q in enumerate(queries):
        w = make_windows(q, 0, h_max)
        idx = anchors(q, h_max, args.windows_per_episode)
        truth = w["y"][idx]
        hold = np.repeat(w["x0"][idx][:, None], h_max, axis=1)
        const = np.broadcast_to(mean, truth.shape)
        for name, pred in ((HOLD, hold), (MEAN, const)):
            err = summarise_errors(step_errors(pred, truth, std, scored), args.horizons)
            rows.append({"model": name, "seed": 0, "system": s, "shots": 0, **err})
    energy: list[dict[str, Any]] = []
    truths = []
    if args.env == "spring_mesh":
        truths = mesh_truths(
            args.seed + 2, args.energy_systems, args.energy_steps, support_steps=steps
        )
        for name, kind in ((HOLD, "hold"), (MEAN, "mean")):
            for s, truth in enumerate(truths):
                met = mesh_long_rollout(kind, truth, std, mean)
                energy.append({"model": name, "seed": 0, "system": s, **met})
    # the hyperparameter search on validation systems of the train range, never the test range
    search: dict[str, dict[str, Any]] = {}
    if args.search:
        validation = generate_tasks(
            args.env, args.validation_systems, k_max + args.query_episodes, h_max + 24, "train",
            args.seed + 3, progress,
        )  # fmt: skip
        for name in dict.fromkeys(m for m in args.models if m != "analytic"):
            search[name] = search_setting(name, train, validation, args, folder, std, scored)
    # every model: unadapted and K-shot adapted on each held-out system
    specs: list[tuple[str, int]] = [(m, sd) for m in args.models for sd in range(args.seeds)]
    specs = [(m, 0) if m == "analytic" else (m, sd) for m, sd in specs]
    specs = list(dict.fromkeys(specs))  # the analytic model has no seeds
    specs += [(f"checkpoint {Path(c).name}", 0) for c in args.checkpoints]
    for name, sd in specs:
        found = search.get(name)
        setting = SEARCH_SPACE[found["chosen"]] if found is not None else None
        model, wall = _load_or_train(name, train, args, args.seed + sd, folder, setting)
        if model is None:
            logger.info("eval: %s has no analytic model; skipped", args.env)
            continue
        info = models.setdefault(
            name,
            {
                "parameters": _parameters(model),
                "fast_weights": _fast_weights(model),
                "train_seconds": [],
            },
        )
        info["train_seconds"].append(wall)
        for s, truth in enumerate(truths):  # adapted on exploration episodes of that mesh
            adapted = model.adapt(truth.support, EVAL_BUDGET)
            met = mesh_long_rollout(adapted, truth, std, mean)
            energy.append({"model": name, "seed": sd, "system": s, **met})
        for s, (task, q) in enumerate(zip(test, queries)):
            for k in (0, *args.shots):
                err, pred, adapt_s = score_on_system(model, task, q, k, args, h_max, std, scored)
                row = {"model": name, "seed": sd, "system": s, "shots": k, **err}
                row["adapt_seconds"] = adapt_s
                if args.env == "quantum":
                    row["physics"] = quantum_physicality(pred)
                rows.append(row)
            if progress:
                logger.info("eval: %s seed %d system %d done", name, sd, s)
    return {
        "config": _config_dict(args),
        "command": command_line(),
        "scale": {"std": std.tolist(), "scored": scored.tolist()},
        "rows": rows,
        "energy": energy,
        "models": models,
        "search": search,
    }


def _load_or_train(
    name: str,
    train: Sequence[Trajectory],
    args: EvalArgs,
    seed: int,
    folder: Path,
    setting: dict[str, float] | None = None,
) -> tuple[Any, float]:
    if name == "analytic":
        return _analytic(args.env, train[0].dt), 0.0
    if name.startswith("checkpoint "):
        from metasym_control.checkpoint import load_checkpoint

        path = next(c for c in args.checkpoints if Path(c).name == name.split(" ", 1)[1])
        model, _ = load_checkpoint(path)
        return model, float("nan")
    return learned_model(name, train, args, seed, folder, setting)


def _config_dict(args: EvalArgs) -> dict[str, Any]:
    from metasym_control.params import jsonable

    return jsonable(dataclasses.asdict(args))  # type: ignore[no-any-return]


def command_line() -> str:
    """The command as it was typed (`metasym-control eval ...`), for the table's header."""
    argv = [a for a in sys.argv[1:] if a != "--debug"]
    if argv and argv[0] in ("eval", "few-shot"):
        return "metasym-control " + " ".join(argv)
    return "metasym-control eval (called from Python: see the config in results.json)"


# ------------------------------------------------------------------------------ reporting
def aggregate(
    result: dict[str, Any],
) -> dict[tuple[str, int], dict[str, list[tuple[float, float, float]]]]:
    """{(model, K): {"at": [(mean, lo, hi) per H], "upto": [...]}} over systems × seeds."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in result["rows"]:
        groups.setdefault((r["model"], int(r["shots"])), []).append(r)
    out = {}
    for key, rs in groups.items():
        n_h = len(rs[0]["at"])
        out[key] = {
            kind: [mean_interval([r[kind][i] for r in rs]) for i in range(n_h)]
            for kind in ("at", "upto")
        }
    return out


def _cell(m: tuple[float, float, float]) -> str:
    mean, lo, hi = m
    if not np.isfinite(mean):
        return "diverged" if mean == float("inf") else "—"
    return f"{mean:.3g} [{lo:.3g}, {hi:.3g}]"


def report(result: dict[str, Any]) -> str:
    """The markdown tables: errors at step H and over 1..H at the middle K, the error against
    K at the middle H, the models' sizes and times, and the goals read off them."""
    from metasym_control.bench import machine_description, markdown_table

    cfg = result["config"]
    horizons, shots = cfg["horizons"], cfg["shots"]
    k_main = _main_shot(shots)
    agg = aggregate(result)
    names = list(dict.fromkeys(r["model"] for r in result["rows"]))
    trivial = [HOLD, MEAN]
    learned = [n for n in names if n not in trivial]
    out = [
        f"## Model evaluation ({cfg['env']})",
        "",
        f"Command: `{result['command']}` — {machine_description()}.",
        "",
        f"{cfg['test_systems']} held-out systems (test range) × {cfg['seeds']} meta-training "
        f"seed(s); each system's first K episodes adapt the model ({EVAL_BUDGET.inner_steps} "
        f"Adam steps, lr {EVAL_BUDGET.lr}, {EVAL_BUDGET.horizon}-step loss), its last "
        f"{cfg['query_episodes']} are scored at {cfg['windows_per_episode']} anchors each. "
        f"Training data: {cfg['n_tasks']} systems × {cfg['episodes']} episodes × "
        f"{cfg['steps_per_episode']} steps, {cfg['meta_steps']} meta-steps per model "
        f"(query loss over {_horizon_text(cfg)} steps, input noise "
        f"{cfg.get('train_noise') or 0:g} state stds{_variant_text(cfg)}). Error: RMS "
        "over anchors and state components of (prediction − truth)/σ, σ the state std of the "
        "training data (the same for every model); mean [95% interval] over systems × seeds.",
        "",
    ]
    for kind, title in (("at", "error at step H"), ("upto", "RMS error over steps 1..H")):
        rows = []
        for n in names:
            k = 0 if n in trivial else k_main
            if (n, k) in agg:
                rows.append([n if k == 0 and n in trivial else f"{n}, {k}-shot"])
                rows[-1] += [_cell(m) for m in agg[(n, k)][kind]]
        out += [
            f"{title.capitalize()}, {k_main}-shot:",
            "",
            markdown_table(["model", *[f"H = {h}" for h in horizons]], rows),
            "",
        ]
    h_mid = _mid_horizon(horizons)
    hi_idx = horizons.index(h_mid)
    rows = []
    for n in learned:
        rows.append(
            [n] + [_cell(agg[(n, k)]["at"][hi_idx]) if (n, k) in agg else "—" for k in (0, *shots)]
        )
    out += [
        f"Error at step H = {h_mid} against K (0: unadapted):",
        "",
        markdown_table(["model", *[f"K = {k}" for k in (0, *shots)]], rows),
        "",
    ]
    search = result.get("search") or {}
    sizes = []
    for n in learned:
        m = result["models"].get(n, {})
        ad = [
            r["adapt_seconds"] for r in result["rows"] if r["model"] == n and r["shots"] == k_main
        ]
        tr = [t for t in m.get("train_seconds", []) if np.isfinite(t)]
        row = [
            n,
            m.get("parameters", "—"),
            m.get("fast_weights", "—"),
            f"{np.median(tr):.0f}" if tr else "—",
            f"{np.median(ad):.2f}" if ad else "—",
        ]
        if search:
            row.append(_compute_cell(search.get(n), tr))
        sizes.append(row)
    head = [
        "model",
        "parameters",
        "fast weights",
        "meta-training s (median)",
        f"{k_main}-shot adaptation s",
    ]
    if search:
        head.append("meta-training s in all (search + seeds)")
    out += [markdown_table(head, sizes), ""]
    if search:
        out += _search_table(search, k_main, _mid_horizon(horizons), cfg)
    out += _physics_tables(result, k_main)
    out.append(goals(result, agg, k_main))
    return "\n".join(out)


def _physics_tables(result: dict[str, Any], k_main: int) -> list[str]:
    """The spring mesh's long-rollout table and the quantum system's density-matrix table."""
    from metasym_control.bench import markdown_table

    out: list[str] = []
    energy = result.get("energy") or []
    if energy:
        names = list(dict.fromkeys(r["model"] for r in energy))
        keys = ("energy_drift", "energy_drift_end", "position_error", "phase_error")
        rows = [
            [n] + [_cell(mean_interval([r[k] for r in energy if r["model"] == n])) for k in keys]
            for n in names
        ]
        steps = result["config"]["energy_steps"]
        out += [
            f"Undamped, unforced held-out meshes, {steps} control steps open loop, every model "
            "adapted on 3 exploration episodes of the same mesh; mean [95% interval] over meshes × "
            "seeds: the largest relative drift of the true energy of the predicted state, the "
            "drift at the end, the RMS position error (σ units) and the slowest mode's phase "
            "error at the end (rad). Holding the state conserves energy too: read the drift "
            "beside the position and phase errors.",
            "",
            markdown_table(
                [
                    "model",
                    "energy drift (max)",
                    "energy drift (end)",
                    "position error",
                    "phase error",
                ],
                rows,
            ),
            "",
        ]
    phys = [r for r in result["rows"] if "physics" in r and r["shots"] == k_main]
    if phys:
        names = list(dict.fromkeys(r["model"] for r in phys))
        rows = []
        for n in names:
            rs = [r["physics"] for r in phys if r["model"] == n]
            rows.append(
                [
                    n,
                    f"{max(r['trace'] for r in rs):.2e}",
                    f"{max(r['hermiticity'] for r in rs):.2e}",
                    f"{min(r['min_eigenvalue'] for r in rs):.2e}",
                ]
            )
        out += [
            f"Predicted density matrices ({k_main}-shot, every predicted step, worst over "
            "systems × seeds): a physical state has trace 1, is Hermitian and has no negative "
            "eigenvalue.",
            "",
            markdown_table(["model", "max abs(tr ρ − 1)", "max ‖ρ − ρ†‖", "min eigenvalue"], rows),
            "",
        ]
    return out


def goals(result: dict[str, Any], agg: dict, k_main: int) -> str:
    """The model goals, read off this run for each MetaSym row (the default and every
    fast-set variant, each named): its errors at H = 50 and 100 below every learned
    baseline's (interval's top below the baseline's mean) and at the longest H below both
    trivial predictors."""
    horizons = result["config"]["horizons"]
    names = [n for (n, k) in agg if k == k_main and (n == "metasym" or n.startswith("metasym:"))]
    if not names:
        return "Goals: no MetaSym row in this run."
    baselines = [n for (n, k) in agg if k == k_main and n in BASELINES]
    lines = []
    for name in names:
        ours = (name, k_main)
        lines.append(f"Goals (read off this run) for {name}:")
        for h in (50, 100):
            if h not in horizons:
                continue
            i = horizons.index(h)
            top = agg[ours]["at"][i][2]
            worse = [b for b in baselines if not top < agg[(b, k_main)]["at"][i][0]]
            verdict = "met" if baselines and not worse else "not met"
            lines.append(
                f"- H = {h}: MetaSym's interval top {top:.3g} below every learned baseline's "
                f"mean: {verdict}" + (f" (not below: {', '.join(worse)})" if worse else "")
            )
        i = len(horizons) - 1
        m = agg[ours]["at"][i][0]
        triv = [agg[(t, 0)]["at"][i][0] for t in (HOLD, MEAN) if (t, 0) in agg]
        verdict = "met" if triv and all(m < t for t in triv) else "not met"
        lines.append(
            f"- H = {horizons[i]}: MetaSym {m:.3g} below both trivial predictors "
            f"({', '.join(f'{t:.3g}' for t in triv)}): {verdict}"
        )
    return "\n".join(lines) + "\n"


def plots(result: dict[str, Any], folder: Path) -> list[Path]:
    """errors_vs_horizon.png (error at each H, middle K) and errors_vs_shots.png (error at the
    middle H against K), with the trivial predictors as references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result["config"]
    horizons, shots = cfg["horizons"], cfg["shots"]
    k_main = _main_shot(shots)
    agg = aggregate(result)
    names = list(dict.fromkeys(r["model"] for r in result["rows"]))
    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for n in names:
        k = 0 if n in (HOLD, MEAN) else k_main
        if (n, k) not in agg:
            continue
        vals = [m[0] for m in agg[(n, k)]["at"]]
        style = "--" if n in (HOLD, MEAN) else "-"
        ax.plot(horizons, vals, style, marker="o", label=n)
    ax.set(
        xscale="log", yscale="log", xlabel="horizon H (steps)", ylabel="error at step H (σ units)"
    )
    ax.set_title(f"{cfg['env']}: open-loop error after {k_main}-shot adaptation")
    ax.legend(fontsize=7)
    fig.tight_layout()
    p1 = _save(fig, folder / "errors_vs_horizon.png")
    h_mid = _mid_horizon(horizons)
    i = horizons.index(h_mid)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for n in names:
        if n in (HOLD, MEAN):
            ax.axhline(agg[(n, 0)]["at"][i][0], ls="--", color="grey", lw=1)
            ax.text(0, agg[(n, 0)]["at"][i][0], n, fontsize=7, va="bottom")
            continue
        ks = [k for k in (0, *shots) if (n, k) in agg]
        ax.plot(ks, [agg[(n, k)]["at"][i][0] for k in ks], marker="o", label=n)
    ax.set(yscale="log", xlabel="support episodes K", ylabel=f"error at step {h_mid} (σ units)")
    ax.set_title(f"{cfg['env']}: error against the number of support episodes")
    ax.legend(fontsize=7)
    fig.tight_layout()
    p2 = _save(fig, folder / "errors_vs_shots.png")
    return [p1, p2]


def _compute_cell(found: dict[str, Any] | None, final_seconds: list[float]) -> str:
    """Meta-training seconds of a model's search and final seeds together (the chosen
    setting's first seed is the search's own checkpoint, counted once)."""
    if found is None:
        return "—"
    walls = [o["train_seconds"] for o in found["settings"]]
    total = float(np.nansum(walls)) + float(np.nansum(final_seconds[1:]))
    return f"{total:.0f}"


def _search_table(
    search: dict[str, dict[str, Any]], k_main: int, h_mid: int, cfg: dict[str, Any]
) -> list[str]:
    """The hyperparameter search: each setting's validation score, the chosen one in bold."""
    labels = [o["label"] for o in next(iter(search.values()))["settings"]]
    rows: list[list[object]] = []
    for name, found in search.items():
        cells = []
        for i, o in enumerate(found["settings"]):
            v = o["score"]
            text = f"{v:.3g}" if np.isfinite(v) else "diverged"
            cells.append(f"**{text}**" if i == found["chosen"] else text)
        rows.append([name, *cells])
    from metasym_control.bench import markdown_table

    return [
        f"Hyperparameter search (the same {len(labels)} meta-training settings for every learned "
        f"model, one seed each; score: mean error at H = {h_mid} after {k_main}-shot adaptation "
        f"on {cfg['validation_systems']} validation systems drawn from the train range, never "
        "the test range; the chosen setting, in bold, is the one every seed above was trained "
        "with):",
        "",
        markdown_table(["model", *labels], rows),
        "",
    ]


def _main_shot(shots: Sequence[int]) -> int:
    """The K of the main tables: 3 where measured, else the middle one."""
    return 3 if 3 in shots else shots[len(shots) // 2]


def _mid_horizon(horizons: Sequence[int]) -> int:
    """The H of the error-against-K table and plot: the third horizon (50 by default)."""
    return horizons[min(len(horizons) - 1, 2)]


def _save(fig: Any, path: Path) -> Path:
    """Write a matplotlib figure as PNG and close it."""
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def eval_main(args: EvalArgs) -> dict[str, Any]:
    """`metasym-control eval`: run, print the tables, write results.json, tables.md, plots."""
    logging.basicConfig(level=logging.INFO)
    result = evaluate(args)
    text = report(result)
    print(text)
    folder = Path(args.out) / args.env
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(result, indent=1))
    (folder / "tables.md").write_text(text)
    for p in plots(result, folder):
        print("wrote", p)
    if args.write_benchmarks:
        from metasym_control.bench import write_section

        suffix = f"-{args.section}" if args.section else ""
        write_section(f"eval-{args.env}{suffix}", text)
    return result
