"""Model-predictive path integral control (MPPI) in torch over any `DynamicsModel`."""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from metasym_control.controller import Controller, History
from metasym_control.controllers.common import (
    FallbackCounter,
    FallbackKind,
    FaultKind,
    check_plan,
    history_window,
    last_resort,
    model_device_dtype,
    region_tolerance,
    trusted_bounds,
    unrecoverable,
)
from metasym_control.controllers.objective import SequenceObjective
from metasym_control.controllers.offset import (
    DisturbanceObserver,
    OffsetModel,
    check_disturbance_options,
    observe_fallback,
)
from metasym_control.dynamics import DynamicsModel, expand_memory
from metasym_control.task import Task

logger = logging.getLogger(__name__)

# the history window: states (L, nx), actions (L, nu), validity (L,) as 1.0 / 0.0
Window = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
# new plan (T, nu), its predicted states (T, nx), stats (3,) = [finite samples, min, mean cost]
PlanOutput = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
# (x0 (nx,), U (T, nu), eps (K, T, nu), window, x_ref (T+1, nx), u_ref (T+1, nu)) -> PlanOutput
PlanFn = Callable[..., PlanOutput]


@dataclass(frozen=True)
class MPPIConfig:
    """MPPI settings (names after Williams et al.: K samples, horizon T, temperature λ).

    Attributes:
        horizon: T, planning steps of `model.dt` each.
        num_samples: K, action sequences rolled out per iteration (one batch).
        temperature: λ of the softmin weights `exp(-(S_k - min S) / λ)`: in cost units, or,
            with `normalize_costs`, relative to the spread `mean S - min S` of the batch.
        normalize_costs: divide the cost gaps by their batch mean, so one λ suits tasks of
            any cost scale and the update never freezes on the noise-free sample.
        noise_sigma: exploration standard deviation in normalised action units, one value or
            one per action component.
        noise_beta: colour of the exploration noise along time, power spectrum ∝ f^-β
            (0 white, 1 pink, 2 red/Brownian-like): larger β gives smoother sequences.
        iterations: MPPI updates per control step (each with fresh noise).
        include_mean: sample 0 is the noise-free warm start, so the update never loses it.
        seed: seed of the controller's own torch generator (noise is reproducible per run).
        plan_rollout: "exact" rolls the new plan out once more (batch 1) for `last_plan` and
            the trust/finiteness checks; "weighted" uses the softmin-weighted mean of the
            sampled trajectories instead (no second sequential rollout: about half the
            kernels on a GPU; an approximation of the plan's prediction).
        trust_samples: give samples whose predicted states leave the model's trusted region
            (`model.trusted_lower/upper`) infinite cost, so the update weighs only trusted
            samples (the weighted plan, a mean of states inside the box, stays inside it);
            if no sample is trusted all are weighed and the plan check falls back as before.
            At horizon 30 on the figure-8 it turns 106-122 fallbacks in 150 steps (and a
            crash with the exact plan) into 0-3 (docs/controllers.md).
        compile: run the sample-and-weigh step through `torch.compile` (CPU or CUDA). On a
            CPU it is what makes MPPI real time: with the shipped MetaSym at K 256, T 20 a step
            takes 8 ms instead of 30 (6.7 ms with `plan_rollout="weighted"`), after 35-85 s
            of compilation at the first call; models of the same architecture given by
            `set_model` reuse the compiled code (docs/controllers.md, "MPPI on the CPU").
        cuda_graph: capture the sample-and-weigh step in a CUDA graph (CUDA devices only;
            ignored with a warning elsewhere).
        profile: time each phase of `act` (reference and history copy, noise, history
            encoding, rollout, costs, update, plan prediction, checks and host work) into
            `last_info["phase_ms"]`; the update then runs eagerly, phase by phase (with a
            device synchronisation at each mark on CUDA), whatever `compile`/`cuda_graph` say.
        disturbance_gain: offset-free MPC (`controllers/offset.py`): the samples are rolled
            out with `x_{k+1} = f(x_k, u_k) + d`, d estimated from the model's one-step
            errors with this gain per step (0, default: off; then no wrapper, no cost).
            The rollouts then step one by one (no fused rollout).
        disturbance_index: the state components that carry d (None: all).
        supervise: a step whose measured state the task calls not recoverable
            (`Task.recoverable`: the quadrotor could no longer brake before the floor or a
            wall) is flown by the fallback controller (fault "unrecoverable"), whatever the
            model predicts; no effect without a fallback controller.
        trust_tolerance: how far (a fraction of the trusted region's span per component) the
            plan's prediction may leave the region (widened to contain the measured state)
            and still be flown; the samples are weighed against the region itself.
    """

    horizon: int = 20
    num_samples: int = 1024
    temperature: float = 0.1
    normalize_costs: bool = True
    noise_sigma: float | tuple[float, ...] = 0.2
    noise_beta: float = 0.0
    iterations: int = 1
    include_mean: bool = True
    seed: int = 0
    plan_rollout: Literal["exact", "weighted"] = "exact"
    trust_samples: bool = True
    compile: bool = False
    cuda_graph: bool = False
    profile: bool = False
    disturbance_gain: float = 0.0
    disturbance_index: tuple[int, ...] | None = None
    supervise: bool = True
    trust_tolerance: float = 0.0

    def __post_init__(self) -> None:
        check_disturbance_options("MPPIConfig", self.disturbance_gain, self.disturbance_index)
        if self.horizon < 1 or self.num_samples < 2 or self.iterations < 1:
            raise ValueError("MPPIConfig: horizon >= 1, num_samples >= 2, iterations >= 1")
        if not self.temperature > 0:
            raise ValueError(f"MPPIConfig.temperature must be > 0, got {self.temperature}")
        sig = np.atleast_1d(np.asarray(self.noise_sigma, dtype=float))
        if not np.all(np.isfinite(sig)) or np.any(sig < 0):
            raise ValueError(f"MPPIConfig.noise_sigma must be finite and >= 0: {sig}")
        if not (math.isfinite(self.noise_beta) and self.noise_beta >= 0):
            raise ValueError(f"MPPIConfig.noise_beta must be >= 0, got {self.noise_beta}")


class MPPI:
    """Sampling-based MPC: K perturbed action sequences rolled out in one batch, softmin-averaged.

    Each control step: encode the history once (`model.init_memory`), expand the memory to K
    samples, draw coloured noise around the warm start (the previous plan shifted by one
    step), roll all samples out under `torch.no_grad()`, score them with the task's torch
    cost along the reference `task.reference(t + k·dt)`, and average them with softmin
    weights. The first action of the new plan is applied; the plan, shifted, is the next warm
    start.

    Faults (never raised): non-finite predictions of a sample give it infinite cost; if the
    new plan's prediction is non-finite or leaves the model's trusted region
    (`model.trusted_lower/upper`), the shifted previous plan is used if its own prediction
    passes the same checks, else the task's reference action at `t` (hover for the
    quadrotor). `last_info` reports `fallback`, `fault` and `fallback_count`.

    Args:
        model: any `DynamicsModel`; its tensors must live on `device` in `dtype`.
        task: the task giving the reference and the torch costs.
        config: MPPI settings.
        device: torch device of the rollouts (a CUDA device runs everything on the GPU);
            None: the model's (CPU for a model without tensors).
        dtype: floating dtype of the rollouts; None: the model's (float64 without tensors).
    """

    def __init__(
        self,
        model: DynamicsModel,
        task: Task,
        config: MPPIConfig | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        fallback: Controller | None = None,
    ) -> None:
        self.config = config or MPPIConfig()
        self.task = task
        self.fallback = fallback
        self.device, self.dtype = model_device_dtype(model, device, dtype)
        dtype = self.dtype
        self.model: DynamicsModel | None = model
        self.last_plan: np.ndarray | None = None
        self.last_actions: np.ndarray | None = None
        self.last_info: dict[str, Any] = {}
        nu = task.action_dim
        c = self.config
        self._action_lower = torch.as_tensor(task.action_lower, device=self.device, dtype=dtype)
        self._action_upper = torch.as_tensor(task.action_upper, device=self.device, dtype=dtype)
        sig = np.broadcast_to(np.asarray(c.noise_sigma, dtype=float), (nu,))
        self._sigma = torch.as_tensor(sig.copy(), device=self.device, dtype=dtype)
        self._noise_map = _noise_map(c.horizon, c.noise_beta, self.device, dtype)
        self._generator = torch.Generator(device=self.device)
        self._warm: torch.Tensor | None = None  # (T, nu) shifted previous plan
        self._counter = FallbackCounter()
        self._use_graph = c.cuda_graph and self.device.type == "cuda"
        if c.cuda_graph and not self._use_graph:
            logger.warning("MPPI: cuda_graph needs a CUDA device; running eagerly on %s", device)
        self._observer: DisturbanceObserver | None = None
        if self.config.disturbance_gain > 0:
            self._observer = DisturbanceObserver(
                self.config.disturbance_gain,
                task.state_dim,
                model.dt,
                self.config.disturbance_index,
                self.device,
                dtype,
            )
        self._trust = trusted_bounds(model)  # declared once per model
        self._objective = self._build_objective()
        self._plan_fn: PlanFn = self._build_plan_fn()
        self.reset()

    # ------------------------------------------------------------------ public API
    def reset(self) -> None:
        """Forget the warm start and fallback counters and reseed the noise generator."""
        self._generator.manual_seed(self.config.seed)
        self._warm = None
        self._counter.reset()
        if self._observer is not None:
            self._observer.reset()
        if self.fallback is not None:
            self.fallback.reset()
        self.last_plan = None
        self.last_actions = None
        self.last_info = {}

    def observe(self, state: np.ndarray, action: np.ndarray, t: float, history: Any = None) -> None:
        """Take a step another controller flew, state (nx,) and action (nu,) at t (s) after
        `history`, into the disturbance estimate (`DisturbanceObserver.observe`); a no-op
        without `disturbance_gain`."""
        if self._observer is not None and self.model is not None:
            self._observer.observe(self.model, np.asarray(state, np.float64), action, t, history)

    def set_model(self, model: DynamicsModel) -> None:
        """Predict with `model` from the next `act` on (the warm start is kept)."""
        self.model = model
        self._trust = trusted_bounds(model)
        self._objective = self._build_objective()
        self._plan_fn = self._build_plan_fn()

    def act(self, state: np.ndarray, t: float, history: Any = None) -> np.ndarray:
        """One MPPI control step.

        Args:
            state: (nx,) current state.
            t: current time in seconds (indexes the reference).
            history: the runner's `History` (its last `model.history_len` transitions are
                encoded once), or None for Markov models.

        Returns:
            (nu,) float64 action within the task's action bounds.
        """
        assert self.model is not None
        c = self.config
        model = self.model
        timer = _PhaseTimer(self.device) if c.profile else None
        if self._observer is not None:
            self._observer.correct(state, t)
        plan_fn = functools.partial(self._plan_eager, timer=timer) if timer else self._plan_fn
        with torch.no_grad():
            x0, x_ref, u_ref, hist_states, hist_actions, hist_valid = self._inputs(
                state, t, history
            )
            window = (hist_states, hist_actions, hist_valid)
            # warm start: the shifted previous plan, or the reference actions
            warm = self._warm
            if warm is None:
                warm = torch.clamp(u_ref[:-1], self._action_lower, self._action_upper)
            plan_u = warm
            if timer:
                timer.mark("inputs")
            # sample, roll out, weigh; a model or update that raises is a failed update
            error: str | None = None
            try:
                for _ in range(c.iterations):
                    eps = self._sample_noise()  # (K, T, nu)
                    if timer:
                        timer.mark("noise")
                    plan_u, plan_x, stats = plan_fn(x0, plan_u, eps, window, x_ref, u_ref)
                # one device-to-host transfer per control step
                nu, nx = plan_u.shape[-1], plan_x.shape[-1]
                flat = torch.cat([plan_u.reshape(-1), plan_x.reshape(-1), stats]).cpu().double()
                flat_np = flat.numpy()
                plan_u_np = flat_np[: c.horizon * nu].reshape(c.horizon, nu)
                plan_x_np = flat_np[c.horizon * nu : c.horizon * (nu + nx)].reshape(c.horizon, nx)
                n_finite, cost_min, cost_mean = int(flat_np[-3]), flat_np[-2], flat_np[-1]
            except Exception as exc:  # never raised out of act: the fallbacks take the step
                logger.warning("MPPI update raised %s: %s", type(exc).__name__, exc)
                error = f"{type(exc).__name__}: {exc}"
                n_finite, cost_min, cost_mean = 0, math.inf, math.inf
                plan_u_np = np.full((c.horizon, self.task.action_dim), np.nan)
                plan_x_np = np.full((c.horizon, self.task.state_dim), np.nan)
            # fault checks and fallbacks
            fault: FaultKind = "none"
            fallback: FallbackKind = "none"
            if error is not None:
                fault = "solver_failed"
            elif not np.all(np.isfinite(plan_u_np)):
                fault = "non_finite"
            else:
                x_now = np.asarray(state, np.float64)
                fault = check_plan(plan_x_np, self._trust, x_now, self._tolerance())
            if unrecoverable(self.task, state, self.fallback, c.supervise):
                # the model planned this state as it planned the steps that led here
                fault = "unrecoverable"
                plan_u_np, plan_x_np, fallback = self._fallback(x0, window, t, None)
            elif fault != "none":
                plan_u_np, plan_x_np, fallback = self._fallback(
                    x0, window, t, warm if self._warm is not None else None
                )
            # warm start of the next step: this plan shifted by one, tail from the reference
            if fallback in ("safe_action", "controller"):
                self._warm = None
            else:
                nxt = torch.as_tensor(plan_u_np, device=self.device, dtype=self.dtype)
                tail = torch.clamp(u_ref[-1:], self._action_lower, self._action_upper)
                self._warm = torch.cat([nxt[1:], tail], dim=0)
        self.last_plan = plan_x_np
        self.last_actions = plan_u_np
        self.last_info = {
            "cost_min": float(cost_min) if n_finite else float("inf"),
            "cost_mean": float(cost_mean) if n_finite else float("inf"),
            "finite_samples": n_finite,
        }
        if error is not None:
            self.last_info["solver_error"] = error
        self._counter.record(self.last_info, fallback, fault)
        action = np.clip(
            plan_u_np[0].astype(np.float64), self.task.action_lower, self.task.action_upper
        )
        if self._observer is not None and fallback == "none" and c.plan_rollout == "exact":
            # the plan's first state is f(x, u) + d for the action flown: no second encoding
            self._observer.expect_state(plan_x_np[0], t)
        elif self._observer is not None:
            try:
                with torch.no_grad():
                    memory = model.init_memory(hist_states, hist_actions, hist_valid > 0.5)
            except Exception:  # the observer's `expect` reports a model that raises
                memory = {}
            self._observer.expect(model, state, action, memory, t)
        if self._observer is not None:
            self.last_info["disturbance"] = self._observer.bias.cpu().double().numpy()
        empty = History(0, self.task.state_dim, self.task.action_dim)
        observe_fallback(self.fallback, state, action, t, empty)
        if timer:
            timer.mark("host")
            self.last_info["phase_ms"] = timer.milliseconds()
        return action

    # ------------------------------------------------------------------ internals
    def _inputs(self, state: np.ndarray, t: float, history: Any) -> tuple[torch.Tensor, ...]:
        """A control step's tensors on the device, in one host-to-device copy: x0 (nx,),
        x_ref (T+1, nx), u_ref (T+1, nu), the history window's states (L, nx), actions
        (L, nu) and validity (L,) (1/0)."""
        assert self.model is not None
        times = t + self.model.dt * np.arange(self.config.horizon + 1)
        x_ref_np, u_ref_np = self.task.reference(times)
        hs, ha, hv = history_window(self.model, history)
        parts = [np.asarray(state, dtype=np.float64), x_ref_np, u_ref_np, hs, ha, hv]
        flat = torch.as_tensor(np.concatenate([np.ravel(a) for a in parts]), dtype=self.dtype)
        flat = flat.to(self.device)
        return tuple(v.view(a.shape) for v, a in zip(flat.split([a.size for a in parts]), parts))

    def _build_objective(self) -> SequenceObjective:
        """The objective over action sequences for the current model; it gives samples that
        leave the model's trusted region infinite cost if `trust_samples` is set and the
        model declares a region."""
        assert self.model is not None
        bounds = self._trust if self.config.trust_samples else None
        trusted = None
        if bounds is not None:
            lo, hi = (torch.as_tensor(b, device=self.device, dtype=self.dtype) for b in bounds)
            trusted = (lo, hi)
        return SequenceObjective(self._predictor(), self.task, trusted)

    def _predictor(self) -> DynamicsModel:
        """The model the samples are rolled out with: with the disturbance observer, the
        model plus its estimated disturbance, else the model itself."""
        assert self.model is not None
        if self._observer is None:
            return self.model
        return OffsetModel(self.model, self._observer.bias)

    def _sample_noise(self) -> torch.Tensor:
        """(K, T, nu) coloured Gaussian noise of std `noise_sigma`, sample 0 zero if asked."""
        c = self.config
        nu = self.task.action_dim
        if self._noise_map is None:  # white
            eps = torch.randn(
                c.num_samples,
                c.horizon,
                nu,
                generator=self._generator,
                device=self.device,
                dtype=self.dtype,
            )
        else:  # coloured: one product of white draws with the spectrum's real linear map
            z = torch.randn(
                c.num_samples,
                nu,
                self._noise_map.shape[0],
                generator=self._generator,
                device=self.device,
                dtype=self.dtype,
            )
            eps = (z @ self._noise_map).transpose(1, 2)  # (K, T, nu)
        eps = eps * self._sigma
        if c.include_mean:
            eps[0] = 0.0
        return eps

    def _plan_eager(
        self,
        x0: torch.Tensor,
        u_mean: torch.Tensor,
        eps: torch.Tensor,
        window: Window,
        x_ref: torch.Tensor,
        u_ref: torch.Tensor,
        timer: _PhaseTimer | None = None,
    ) -> PlanOutput:
        """One MPPI update (pure function of its inputs, so it compiles and graphs).

        The history is encoded here (`model.init_memory`), so a CUDA graph or a compiled
        function covers that work too.

        Args:
            x0: (nx,) current state; u_mean: (T, nu) warm start; eps: (K, T, nu) noise;
            window: the history's states (L, nx), actions (L, nu) and validity (L,) (1/0);
            x_ref: (T+1, nx); u_ref: (T+1, nu); timer: marks the end of each phase
            (`MPPIConfig.profile`; never given to a compiled or graphed update).

        Returns:
            New plan (T, nu), its predicted states (T, nx) (see `MPPIConfig.plan_rollout`),
            and stats (3,): finite samples, min and mean of the finite sample costs.
        """
        model = self._predictor()
        memory = model.init_memory(window[0], window[1], window[2] > 0.5)
        if timer:
            timer.mark("history encoding")
        # perturbed sequences within the action bounds, scored by the objective
        lower, upper = self._action_lower, self._action_upper
        v = torch.maximum(torch.minimum(u_mean + eps, upper), lower)  # (K, T, nu)
        if timer:  # the objective's two parts, timed apart
            k = v.shape[0]
            xs = model.rollout(x0.expand(k, -1), v, expand_memory(memory, (k,)))
            timer.mark("rollout")
            costs = self._objective.score(x0, v, xs, x_ref, u_ref)
            timer.mark("costs")
        else:
            costs, xs = self._objective(x0, v, memory, x_ref, u_ref)  # (K,), (K, T, nx)
        # softmin weights over the cost gaps
        gap = costs - costs.min()  # (K,)
        if self.config.normalize_costs:
            finite = torch.isfinite(gap)
            spread = torch.where(finite, gap, torch.zeros_like(gap)).sum() / finite.sum()
            gap = gap / (spread + 1e-12)
        w = torch.softmax(-gap / self.config.temperature, dim=0)  # (K,)
        # the new plan and its prediction
        u_new = torch.einsum("k,ktu->tu", w, v)  # (T, nu)
        if timer:
            timer.mark("update")
        if self.config.plan_rollout == "exact":
            plan = model.rollout(x0[None], u_new[None], expand_memory(memory, (1,)))[0]  # (T, nx)
        else:  # no second sequential rollout: the weighted mean of the sampled trajectories
            plan = torch.einsum("k,ktx->tx", w, torch.nan_to_num(xs, nan=0.0))  # (T, nx)
            plan = torch.where(torch.isfinite(u_new).all(), plan, torch.full_like(plan, math.nan))
        # statistics of the finite sample costs
        finite = torch.isfinite(costs)
        n_fin = finite.sum().to(costs.dtype)
        c_fin = torch.where(finite, costs, torch.zeros_like(costs))
        c_min = torch.where(finite, costs, torch.full_like(costs, math.inf)).min()
        stats = torch.stack([n_fin, c_min, c_fin.sum() / n_fin.clamp_min(1.0)])  # (3,)
        if timer:
            timer.mark("plan prediction")
        return u_new, plan, stats

    def _build_plan_fn(self) -> PlanFn:
        """Resolve compile / CUDA-graph options once into the function `act` calls.

        With both, the compiled function (fused kernels) is what the graph captures. Either
        is rebuilt by `set_model`: a graph re-captures in milliseconds, `torch.compile`
        recompiles (seconds), so online adaptation pairs better with the graph alone.
        """
        fn: PlanFn = self._plan_eager
        if self.config.compile:
            fn = torch.compile(self._plan_eager, dynamic=False)  # type: ignore[assignment]
        if self._use_graph:
            return _GraphedPlan(fn)
        return fn

    def _tolerance(self) -> np.ndarray | None:
        """How far (nx,) a plan may leave the trusted region (`trust_tolerance`), or None."""
        return region_tolerance(self._trust, self.config.trust_tolerance)

    def _fallback(
        self, x0: torch.Tensor, window: Window, t: float, warm: torch.Tensor | None
    ) -> tuple[np.ndarray, np.ndarray, FallbackKind]:
        """The shifted previous plan if its prediction is sound, else the fallback
        controller's action, else the safe action (`last_resort`). A model that raises
        here is a prediction that is not sound."""
        assert self.model is not None
        if warm is not None:
            try:
                model = self._predictor()
                memory = model.init_memory(window[0], window[1], window[2] > 0.5)
                xs = model.rollout(x0[None], warm[None], expand_memory(memory, (1,)))[0]
                xs_np = xs.cpu().numpy()
                state = x0.detach().cpu().double().numpy()
                if check_plan(xs_np, self._trust, state, self._tolerance()) == "none":
                    return warm.cpu().numpy(), xs_np, "shifted_plan"
            except Exception as exc:
                logger.warning("MPPI: shifted-plan check raised %s: %s", type(exc).__name__, exc)
        state = x0.detach().cpu().double().numpy()
        u_last, kind = last_resort(self.fallback, self.task, state, t)
        plan_u = np.repeat(u_last[None], self.config.horizon, axis=0)
        return plan_u, np.full((self.config.horizon, self.task.state_dim), np.nan), kind


def _noise_map(
    horizon: int, beta: float, device: torch.device, dtype: torch.dtype
) -> torch.Tensor | None:
    """(2·(T//2+1), T) real linear map from white draws to noise of power spectrum ∝ f^-β
    with unit variance at each time; None for white noise (β = 0).

    Row 2k (2k+1) is `irfft(norm="ortho")` of a unit real (imaginary) part at frequency k
    scaled by the amplitude `s_k ∝ f_k^(-β/2)`, so `z @ map` for independent unit z is the
    coloured sequence that the FFT of a random complex spectrum would give, in one product.
    Each time sample has variance (s_0² + 4 Σ_inner s_k² + s_N²) / T (s_N only for even T)
    before the amplitudes are divided by its square root.
    """
    if beta == 0.0:
        return None
    freqs = np.fft.rfftfreq(horizon)
    freqs[0] = 1.0 / horizon  # keep a finite DC component (a constant offset of the sequence)
    s = freqs ** (-beta / 2.0)
    var = s[0] ** 2
    if horizon % 2 == 0:
        var += 4.0 * np.sum(s[1:-1] ** 2) + s[-1] ** 2
    else:
        var += 4.0 * np.sum(s[1:] ** 2)
    s = s / math.sqrt(var / horizon)
    nf = s.shape[0]
    basis = np.zeros((2 * nf, nf), dtype=complex)
    basis[0::2] = np.diag(s)
    basis[1::2] = 1j * np.diag(s)
    rows = np.fft.irfft(basis, n=horizon, axis=-1, norm="ortho")  # (2 nf, T)
    return torch.as_tensor(rows, device=device, dtype=dtype)


# the phases `MPPIConfig.profile` times, in the order of one control step
PROFILE_PHASES = (
    "inputs",
    "noise",
    "history encoding",
    "rollout",
    "costs",
    "update",
    "plan prediction",
    "host",
)


class _PhaseTimer:
    """Wall time between marks of one `act` (`MPPIConfig.profile`), in milliseconds.

    Args:
        device: the rollout device; on CUDA each mark synchronises it first, so a phase's
            time is its own work and not the queue's.
    """

    def __init__(self, device: torch.device) -> None:
        self._sync = device.type == "cuda"
        self._last = time.perf_counter()
        self._ms: dict[str, float] = {}

    def mark(self, name: str) -> None:
        """End the phase `name` now (times of a repeated name add up)."""
        if self._sync:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self._ms[name] = self._ms.get(name, 0.0) + 1e3 * (now - self._last)
        self._last = now

    def milliseconds(self) -> dict[str, float]:
        """The phases in the order they first ended, ms each."""
        return dict(self._ms)


class _GraphedPlan:
    """The MPPI update captured in a CUDA graph; inputs are copied into static buffers.

    A graph is (re)captured whenever the input shapes change; the model (history encoding
    included) is part of the captured work, so `MPPI.set_model` builds a new instance.
    """

    def __init__(self, fn: PlanFn) -> None:
        self._fn = fn
        self._graph: torch.cuda.CUDAGraph | None = None
        self._key: tuple[Any, ...] | None = None
        self._inputs: list[torch.Tensor] = []
        self._outputs: PlanOutput | None = None
        self._failed = False

    def __call__(self, *inputs: Any) -> PlanOutput:
        """Replay the graph on `inputs`, the arguments of `PlanFn`: (x0, u_mean, eps, window,
        x_ref, u_ref); the first call (and a call with new shapes) captures it."""
        x0, u_mean, eps, window, x_ref, u_ref = inputs
        args = [x0, u_mean, eps, *window, x_ref, u_ref]
        key = tuple((tuple(a.shape), a.dtype) for a in args)
        if self._failed:
            return self._fn(*inputs)
        if key != self._key:
            try:
                self._capture(args)
            except RuntimeError as exc:  # e.g. a cost that copies host tensors while captured
                logger.warning("MPPI: CUDA graph capture failed (%s); running eagerly", exc)
                self._failed = True
                torch.cuda.synchronize()
                return self._fn(*inputs)
            self._key = key
        for buf, a in zip(self._inputs, args):
            buf.copy_(a)
        assert self._graph is not None and self._outputs is not None
        self._graph.replay()
        return tuple(o.clone() for o in self._outputs)  # type: ignore[return-value]

    def _run(self) -> PlanOutput:
        x0, u_mean, eps, hs, ha, hv, x_ref, u_ref = self._inputs
        return self._fn(x0, u_mean, eps, (hs, ha, hv), x_ref, u_ref)

    def _capture(self, args: list[torch.Tensor]) -> None:
        self._inputs = [a.clone() for a in args]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up outside the graph (allocator, lazy init)
                self._run()
        torch.cuda.current_stream().wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._outputs = self._run()
