"""The closed-loop runner: environment, controller and online adaptation wired together."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from metasym_control.controller import Controller, History
from metasym_control.dynamics import AdaptBudget, DynamicsModel
from metasym_control.params import SystemParams
from metasym_control.system_env import SystemEnv
from metasym_control.trajectory import Trajectory

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnlineAdaptConfig:
    """Online adaptation in the closed loop.

    Every `every` control steps (from step `window` on) a model's `adapt` is re-run on the
    last `window` transitions (plus `prior`, when given); its result is swapped into the
    controller `latency` steps later, a simulated computation time, so seeded runs reproduce
    exactly.

    Attributes:
        window: transitions of the flight itself per adaptation.
        every: control steps between adaptations.
        latency: control steps between starting an adaptation and using its result.
        budget: the adaptation budget passed to `adapt`.
        prior: data from before the flight (e.g. the support flight) that every adaptation
            fits together with the window, so a window of closed-loop data (narrow
            excitation: the vehicle tracks one path) cannot make the model forget what the
            richer support data showed. None: the window alone.
        anchor: the model each adaptation starts from: "current" (the model flying now,
            so adaptations compound) or "start" (the model the loop began with, so
            every adaptation is that model plus one budget on prior + window, and errors
            of earlier adaptations cannot accumulate).
        holdout: the last `holdout` transitions of the window are kept out of the fit and
            judge it: the adapted model replaces the flying one only if its
            `check_horizon`-step open-loop error on them (`holdout_error`) is no larger
            (0: no check, every adaptation is swapped in). An update fitted to a narrow
            window of closed-loop data can predict worse than the model it replaces; a
            controller should not fly it.
        check_horizon: rollout length of that check, control steps.
    """

    window: int = 100
    every: int = 50
    latency: int = 5
    budget: AdaptBudget = field(default_factory=AdaptBudget)
    prior: Trajectory | None = None
    anchor: Literal["current", "start"] = "current"
    holdout: int = 0
    check_horizon: int = 10

    def __post_init__(self) -> None:
        if self.window < 1 or self.every < 1 or self.latency < 0:
            raise ValueError("OnlineAdaptConfig: window, every >= 1 and latency >= 0 required")
        if self.holdout and not self.check_horizon <= self.holdout < self.window:
            raise ValueError(
                "OnlineAdaptConfig: 0 < holdout needs check_horizon <= holdout < window, got "
                f"holdout={self.holdout}, check_horizon={self.check_horizon}, "
                f"window={self.window}"
            )
        if self.anchor not in ("current", "start"):
            raise ValueError(f"OnlineAdaptConfig.anchor: 'current' or 'start', not {self.anchor!r}")


@dataclass
class ClosedLoopResult:
    """What a closed-loop run recorded.

    Attributes:
        states: (T+1, nx) states; actions: (T, nu) applied (clipped) actions.
        times: (T+1,) seconds; x_ref (T+1, nx), u_ref (T, nu) the task's reference.
        rewards: (T,); terminated: whether the episode ended by termination.
        act_seconds: (T,) wall-clock time of each `act` call.
        infos: controller `last_info` of every step.
        adaptations: control steps at which an adapted model was swapped in.
        frames: rendered RGB frames when requested.
        params: the system's parameters.
        adapt_seconds: wall time of each online adaptation, s (the loop itself waits
            `OnlineAdaptConfig.latency` steps for it, whatever it took).
        rejected: control steps at which an online adaptation was dropped by the holdout
            check (`OnlineAdaptConfig.holdout`).
        holdout_errors: per checked adaptation, (flying model's, adapted model's) holdout
            error (`holdout_error`).
    """

    states: np.ndarray
    actions: np.ndarray
    times: np.ndarray
    x_ref: np.ndarray
    u_ref: np.ndarray
    rewards: np.ndarray
    terminated: bool
    act_seconds: np.ndarray
    infos: list[dict[str, Any]]
    adaptations: list[int]
    frames: list[np.ndarray]
    params: dict[str, Any]
    adapt_seconds: list[float] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    holdout_errors: list[tuple[float, float]] = field(default_factory=list)

    def tracking_rmse(self, env: Any) -> float:
        """Root-mean-square of the task's tracking error over the run (task units).

        Args:
            env: the MetaSym environment, wrapped (e.g. by `gymnasium.make`) or not.
        """
        base: SystemEnv = getattr(env, "unwrapped", env)
        err = base.task.tracking_error(self.states, self.x_ref)
        return float(np.sqrt(np.mean(err**2)))

    def to_trajectory(self, env_id: str, dt: float) -> Trajectory:
        """The run as a one-trajectory `Trajectory`."""
        t = len(self.actions)
        return Trajectory(
            states=self.states[None],
            actions=self.actions[None],
            lengths=np.array([t]),
            terminated=np.array([self.terminated]),
            params=[self.params],
            dt=dt,
            env_id=env_id,
        )


def holdout_error(model: DynamicsModel, data: Trajectory, horizon: int, skip: int = 0) -> float:
    """RMS `horizon`-step open-loop error of `model` on the windows of `data` anchored at
    step `skip` or later (earlier steps serve as history), each state component divided by
    its std over `data` (one scale for every model judged on the same data; dimensionless).

    Args:
        model: any `DynamicsModel`.
        data: one trajectory (N = 1) of T transitions.
        horizon: H, rollout length.
        skip: first anchor step; the windows anchored at skip..T-H are scored.

    Returns:
        The RMS error (inf where the prediction is not finite, nan where no window fits).
    """
    import torch

    from metasym_control.windows import make_windows, to_batch

    windows = make_windows(data, int(getattr(model, "history_len", 0)), horizon)
    keep = np.arange(len(windows["x0"])) >= skip
    if not keep.any():
        return float("nan")
    params = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
    dtype = params[0].dtype if params else torch.float64
    device = params[0].device if params else torch.device("cpu")
    b = to_batch({k: v[keep] for k, v in windows.items()}, None, device, dtype)
    with torch.no_grad():
        memory = model.init_memory(b["hs"], b["ha"], b["hv"])
        pred = model.rollout(b["x0"], b["ua"], memory).double().cpu().numpy()
    valid = data.states[0, : int(data.lengths[0]) + 1]
    scale = np.maximum(valid.std(axis=0), 1e-6)
    err = (pred - windows["y"][keep]) / scale
    if not np.all(np.isfinite(err)):
        return float("inf")
    return float(np.sqrt(np.mean(err**2)))


def run_closed_loop(
    env: Any,
    controller: Controller,
    steps: int,
    *,
    seed: int | None = None,
    params: SystemParams | None = None,
    history_len: int = 0,
    online: OnlineAdaptConfig | None = None,
    render_every: int = 0,
    progress: Callable[[int], None] | None = None,
) -> ClosedLoopResult:
    """Fly `controller` on `env` for up to `steps` control steps.

    Args:
        env: a MetaSym environment (wrapped or not); its `unwrapped` gives state and task.
        controller: any `Controller`.
        steps: control steps (the episode may end earlier by termination).
        seed: reset seed.
        params: system parameters for the reset; None draws from the env's split.
        history_len: L of the history window passed to the controller.
        online: online adaptation settings, or None for none.
        render_every: keep every n-th rendered frame (0: none).
        progress: called with the step index after every step (e.g. a tqdm update).

    Returns:
        The recorded `ClosedLoopResult`.
    """
    base: SystemEnv = env.unwrapped
    options = {"params": params} if params is not None else None
    env.reset(seed=seed, options=options)
    controller.reset()
    start_model = controller.model
    nx, nu = base.task.state_dim, base.task.action_dim
    # adaptation needs a longer record than the controller's window
    keep = max(history_len, online.window if online else 0)
    hist = History(history_len, nx, nu)
    states = [base.get_state().copy()]
    actions: list[np.ndarray] = []
    rewards: list[float] = []
    infos: list[dict[str, Any]] = []
    act_s: list[float] = []
    frames: list[np.ndarray] = []
    adaptations: list[int] = []
    adapt_s: list[float] = []
    rejected: list[int] = []
    checks: list[tuple[float, float]] = []
    pending: tuple[int, DynamicsModel] | None = None
    terminated = False
    for k in range(steps):
        t = k * base.dt
        # swap in an adaptation whose simulated latency has passed
        if pending is not None and k >= pending[0]:
            controller.set_model(pending[1])
            adaptations.append(k)
            pending = None
        # start an adaptation on the latest window
        if (
            online is not None
            and controller.model is not None
            and pending is None
            and k >= online.window
            and (k - online.window) % online.every == 0
        ):
            lo = max(0, k - keep)
            hold = online.holdout
            fit_end = k - hold  # the holdout's transitions stay out of the fit
            support = _segment(states, actions, lo, fit_end, base)
            if online.prior is not None:
                support = Trajectory.concatenate([online.prior, support])
            source = controller.model
            if online.anchor == "start" and start_model is not None:
                source = start_model
            t_adapt = time.perf_counter()
            adapted = source.adapt(support, online.budget)
            accept = True
            if hold:
                # history before the holdout; windows scored from its first step on
                h0 = max(0, fit_end - int(getattr(adapted, "history_len", 0)))
                check = _segment(states, actions, h0, k, base)
                now = holdout_error(controller.model, check, online.check_horizon, fit_end - h0)
                new = holdout_error(adapted, check, online.check_horizon, fit_end - h0)
                checks.append((now, new))
                accept = bool(new <= now)
            adapt_s.append(time.perf_counter() - t_adapt)
            if accept:
                pending = (k + online.latency, adapted)
            else:
                rejected.append(k)
        x = states[-1]
        t0 = time.perf_counter()
        a = np.asarray(controller.act(x, t, hist), dtype=np.float64)
        act_s.append(time.perf_counter() - t0)
        infos.append(dict(controller.last_info))
        _, r, term, trunc, _info = env.step(a.astype(np.float32))
        applied, _ = base.check_action(a)
        hist.push(x, applied)
        actions.append(applied)
        states.append(base.get_state().copy())
        rewards.append(float(r))
        if render_every and k % render_every == 0:
            frame = env.render()
            if frame is not None:
                frames.append(np.asarray(frame))
        if progress is not None:
            progress(k)
        if term or trunc:
            terminated = bool(term)
            break
    n = len(actions)
    times = np.arange(n + 1) * base.dt
    x_ref, u_ref = base.task.reference(times)
    return ClosedLoopResult(
        states=np.asarray(states),
        actions=np.asarray(actions).reshape(n, nu),
        times=times,
        x_ref=x_ref,
        u_ref=u_ref[:n],
        rewards=np.asarray(rewards),
        terminated=terminated,
        act_seconds=np.asarray(act_s),
        infos=infos,
        adaptations=adaptations,
        frames=frames,
        params=base.params.to_dict(),
        adapt_seconds=adapt_s,
        rejected=rejected,
        holdout_errors=checks,
    )


def _segment(
    states: list[np.ndarray], actions: list[np.ndarray], lo: int, hi: int, base: SystemEnv
) -> Trajectory:
    """Transitions lo..hi-1 of the run so far as a one-trajectory `Trajectory`."""
    return Trajectory(
        states=np.asarray(states[lo : hi + 1])[None],
        actions=np.asarray(actions[lo:hi])[None],
        lengths=np.array([hi - lo]),
        terminated=np.array([False]),
        params=[base.params.to_dict()],
        dt=base.dt,
        env_id=base.env_id,
    )
