"""The last fallback is a controller that stabilises the real vehicle, not the nominal hover."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import metasym_control  # noqa: F401  (registers the ids)
from metasym_control.closed_loop import run_closed_loop
from metasym_control.controllers.cascaded_pd import CascadedPD
from metasym_control.controllers.mppi import MPPI, MPPIConfig
from metasym_control.controllers.nmpc import NMPC, NMPCConfig
from metasym_control.envs.quadrotor import QuadrotorParams
from metasym_control.models.quadrotor_analytic import QuadrotorModel


class DistrustfulModel(QuadrotorModel):
    """The nominal physics with a trusted region no plan can stay in: empty in the yaw rate,
    so that, widened to the measured state (`check_plan`), it holds the current yaw rate
    only; every plan changes it, every plan is refused, and the controller flies its last
    fallback on every step."""

    trusted_lower = np.full(13, -np.inf)
    trusted_upper = np.full(13, np.inf)

    def __init__(self, params: QuadrotorParams) -> None:
        super().__init__(params)
        self.trusted_lower = self.trusted_lower.copy()
        self.trusted_upper = self.trusted_upper.copy()
        self.trusted_lower[12], self.trusted_upper[12] = np.inf, -np.inf


@pytest.mark.parametrize("kind", ["mppi", "rti"])
def test_a_plan_outside_the_trusted_region_keeps_flying_on_the_pd_fallback(kind: str) -> None:
    heavy = QuadrotorParams(mass=1.9, wind=(1.5, 0.0, 0.0))  # 43% heavier than the nominal X2
    nominal = QuadrotorParams()
    model = DistrustfulModel(nominal)
    steps = 150

    def fly(with_pd: bool) -> tuple[float, bool, list[str]]:
        env = gym.make("MetaSymQuadrotor-v0", task="hover", params=heavy, max_episode_steps=steps)
        task = env.unwrapped.task
        pd = CascadedPD(nominal, task, dt=env.unwrapped.dt) if with_pd else None
        if kind == "mppi":
            ctrl = MPPI(model, task, MPPIConfig(horizon=8, num_samples=32), fallback=pd)
        else:
            # the region out of the QP, so that the plan can leave it
            cfg = NMPCConfig(horizon=8, mode="rti", trusted_constraints=False)
            ctrl = NMPC(model, task, cfg, fallback=pd)
        r = run_closed_loop(env, ctrl, steps, seed=0)
        err = float(np.linalg.norm(r.states[-1, :3] - r.x_ref[-1, :3]))
        return err, r.terminated, [i["fallback"] for i in r.infos]

    err_pd, crashed_pd, kinds_pd = fly(True)
    assert set(kinds_pd) == {"controller"}  # every step on the fallback, each one reported
    assert not crashed_pd and err_pd < 0.5  # the PD holds the heavy vehicle near hover
    err_hover, crashed_hover, kinds_hover = fly(False)
    assert set(kinds_hover) == {"safe_action"}
    # the nominal hover command sinks the heavier vehicle
    assert crashed_hover or err_hover > 3 * err_pd
