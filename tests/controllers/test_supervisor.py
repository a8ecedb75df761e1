"""The MPCs' supervisor: a state the vehicle can no longer brake from is flown by the fallback."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import metasym_control  # noqa: F401  (registers the ids)
from metasym_control.closed_loop import run_closed_loop
from metasym_control.controller import History
from metasym_control.controllers.mppi import MPPI, MPPIConfig
from metasym_control.controllers.nmpc import NMPC, NMPCConfig
from metasym_control.demo_config import DemoConfig
from metasym_control.envs.quadrotor import QuadrotorParams
from metasym_control.envs.quadrotor.tasks import HoverTask
from metasym_control.figure8 import make_quadrotor_mpc
from metasym_control.models.quadrotor_analytic import QuadrotorModel


def _state(p: tuple[float, float, float], v: tuple[float, float, float]) -> np.ndarray:
    x = np.zeros(13)
    x[0:3], x[3], x[7:10] = p, 1.0, v
    return x


@pytest.mark.parametrize(
    ("p", "v", "expected"),
    [
        ((0.0, 0.0, 1.5), (0.0, 0.0, 0.0), True),  # hover
        ((0.0, 0.0, 0.5), (0.0, 0.0, -2.0), False),  # needs 0.82 m to stop, has 0.45
        ((0.0, 0.0, 0.5), (0.0, 0.0, 2.0), True),  # climbing away from the floor
        ((0.0, 0.0, 0.12), (0.0, 0.0, -0.1), False),  # inside the margin, barely sinking
        ((0.0, 0.0, 4.5), (0.0, 0.0, 2.5), False),  # towards the ceiling
        ((3.5, 0.0, 1.5), (2.0, 0.0, 0.0), False),  # towards a wall
        ((3.5, 0.0, 1.5), (-2.0, 0.0, 0.0), True),  # away from it
    ],
)
def test_the_quadrotor_task_calls_a_state_recoverable_only_if_it_can_stop_in_the_volume(
    p: tuple[float, float, float], v: tuple[float, float, float], expected: bool
) -> None:
    assert HoverTask().recoverable(_state(p, v)) is expected


class FullThrust:
    """A fallback that records its calls and always answers full thrust."""

    model = None
    last_plan = None

    def __init__(self) -> None:
        self.calls = 0
        self.last_info: dict[str, Any] = {}

    def reset(self) -> None:
        self.calls = 0

    def act(self, state: np.ndarray, t: float, history: History) -> np.ndarray:
        self.calls += 1
        return np.ones(4)

    def set_model(self, model: Any) -> None:
        pass


@pytest.mark.parametrize("kind", ["mppi", "rti"])
@pytest.mark.parametrize(
    ("supervise", "with_fallback"), [(True, True), (False, True), (True, False)]
)
def test_an_unrecoverable_state_is_flown_by_the_fallback_when_supervised(
    kind: str, supervise: bool, with_fallback: bool
) -> None:
    task = HoverTask()
    model = QuadrotorModel(QuadrotorParams())
    fallback = FullThrust() if with_fallback else None
    ctrl: MPPI | NMPC
    if kind == "mppi":
        ctrl = MPPI(model, task, MPPIConfig(horizon=8, num_samples=32, supervise=supervise),
                    fallback=fallback)  # fmt: skip
    else:
        ctrl = NMPC(model, task, NMPCConfig(horizon=8, supervise=supervise), fallback=fallback)
    falling = _state((0.0, 0.0, 0.4), (0.0, 0.0, -2.0))
    u = ctrl.act(falling, 0.0, History(0, 13, 4))
    handed = supervise and with_fallback
    assert ctrl.last_info["fault"] == ("unrecoverable" if handed else "none")
    assert ctrl.last_info["fallback"] == ("controller" if handed else "none")
    assert (fallback is not None and fallback.calls == 1) is handed
    if handed:
        np.testing.assert_allclose(u, np.ones(4))
    # a recoverable state is planned as usual
    ctrl.act(_state((0.0, 0.0, 1.5), (0.0, 0.0, 0.0)), 0.02, History(0, 13, 4))
    assert ctrl.last_info["fault"] == "none"


def test_mppi_on_the_nominal_physics_keeps_a_heavy_vehicle_off_the_floor() -> None:
    # a stress-set vehicle (70% heavier than the nominal X2, larger inertia, wind): MPPI on
    # the nominal physics follows the figure-8's first descent into the floor unsupervised
    nominal = QuadrotorParams()
    heavy = nominal.replace(
        mass=2.26, inertia=tuple(1.6 * i for i in nominal.inertia), wind=(2.76, 0.52, 0.0)
    )
    steps = 160

    def fly(supervise: bool) -> tuple[bool, list[str], float]:
        cfg = DemoConfig(controller="mppi", supervise=supervise)
        env = gym.make("MetaSymQuadrotor-v0", task="figure8", params=heavy, init_noise=0.0,
                       max_episode_steps=steps)  # fmt: skip
        task = env.unwrapped.task
        ctrl = make_quadrotor_mpc("mppi", QuadrotorModel(nominal, substeps=1), task, cfg)
        r = run_closed_loop(env, ctrl, steps, seed=0)
        env.close()
        return r.terminated, [i["fault"] for i in r.infos], float(r.states[:, 2].min())

    crashed, faults, _ = fly(False)
    assert crashed and "unrecoverable" not in faults
    crashed, faults, lowest = fly(True)
    assert not crashed and len(faults) == steps
    assert 0 < faults.count("unrecoverable") < steps // 4  # the MPC flies most steps
    assert lowest > 0.1
