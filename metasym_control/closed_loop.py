"""The closed-loop runner: environment, controller and online adaptation wired together."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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

    Every `every` control steps (from step `window` on) the model's `adapt` is re-run on the
    last `window` transitions; its result is swapped into the controller `latency` steps
    later, a simulated computation time, so seeded runs reproduce exactly.

    Attributes:
        window: transitions of support data per adaptation.
        every: control steps between adaptations.
        latency: control steps between starting an adaptation and using its result.
        budget: the adaptation budget passed to `adapt`.
    """

    window: int = 100
    every: int = 50
    latency: int = 5
    budget: AdaptBudget = field(default_factory=AdaptBudget)

    def __post_init__(self) -> None:
        if self.window < 1 or self.every < 1 or self.latency < 0:
            raise ValueError("OnlineAdaptConfig: window, every >= 1 and latency >= 0 required")


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
            support = Trajectory(
                states=np.asarray(states[lo : k + 1])[None],
                actions=np.asarray(actions[lo:k])[None],
                lengths=np.array([k - lo]),
                terminated=np.array([False]),
                params=[base.params.to_dict()],
                dt=base.dt,
                env_id=base.env_id,
            )
            t_adapt = time.perf_counter()
            adapted = controller.model.adapt(support, online.budget)
            adapt_s.append(time.perf_counter() - t_adapt)
            pending = (k + online.latency, adapted)
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
    )
