"""Settings of `metasym-control demo` (a room of their own: the demo, the figure-8 flights and
the experiment all read them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from metasym_control.dynamics import AdaptBudget
from metasym_control.usage import at_least, positive, require


@dataclass(frozen=True)
class FlightOptions:
    """Online adaptation and RTI options of the quadrotor's figure-8 flights, shared by
    `metasym-control demo` and `metasym-control experiment` (flags of the same names).

    Attributes:
        online: re-adapt MetaSym in the loop on a sliding window of what it has just seen.
        online_support: every online adaptation also fits the support flight (see
            `OnlineAdaptConfig.prior`).
        online_anchor: "current" or "start": what each online adaptation starts from (see
            `OnlineAdaptConfig.anchor`).
        rti_trust_bounds: RTI: impose the learned model's trusted region as hard bounds in
            the QP (`NMPCConfig.trusted_constraints`). Off: plans are judged against the
            region after the solve, and the fallback (`rti_fallback`) flies the refused steps
            (docs/controllers.md: on light held-out vehicles in strong wind the bounded QPs
            turned infeasible step after step and tracked three times worse).
        rti_trust_repair: RTI without `rti_trust_bounds`: a plan that leaves the learned
            model's trusted region is solved once more with the region as hard QP bounds and
            flown if that plan stays inside (`NMPCConfig.trust_repair`); only then does
            `rti_fallback` fly the step. Off: on the development draw the bounded plans were
            nearly always refused, and flying them tracked worse (docs/controllers.md).
        rti_fallback: RTI: the controller that flies a step whose plan is refused: "pd"
            (the cascaded PD on the nominal physics) or "nominal_rti" (RTI on the nominal
            physics, itself falling back to the PD; docs/controllers.md). MPPI: see
            `mppi_fallback`.
        mppi_fallback: MPPI: the controller that flies a step on which no plan can be
            trusted, "nominal_rti" or "pd" as `rti_fallback` (the PD alone crashes half
            the stress set; docs/controllers.md "A fallback that can fly a heavy vehicle").
        rti_step_fractions: RTI with a learned model: a line search on the model's own
            rollout (`NMPCConfig.step_fractions`); empty: the classic full step
            (docs/controllers.md: the learned models' RTI tracked better on 7 of 8
            development vehicles with it). RTI on the analytic physics always takes the
            full step.
        online_holdout: the last this many steps of each online window judge the update
            instead of entering its fit; it is flown only if it predicts them better (see
            `OnlineAdaptConfig.holdout`; 0: every update is flown).
        disturbance_gain: offset-free MPC for every MPC-flown model, MPPI and RTI alike
            (`MPPIConfig.disturbance_gain`, `NMPCConfig.disturbance_gain`): each model
            predicts with an additive disturbance estimated online from its own one-step
            errors, with this gain per step; 0 (default): off, each model predicts alone
            (docs/controllers.md, "Offset-free MPC").
        adapt_steps: Adam steps on the learned models' fast weights per adaptation (the
            support flight's and every online one).
        adapt_lr: their learning rate.
        adapt_horizon: rollout length of the adaptation loss, control steps.
        adapt_free_offset: with `disturbance_gain` > 0 (ignored without it): the learned
            models' adaptations fit a free constant offset beside the fast weights and drop
            it (`AdaptBudget.free_offset`), leaving the constant to the observer; it tracked
            better on a development draw and on the experiment's vehicles
            (docs/controllers.md, "Adaptation against the observer").
        supervise: every MPC hands a step on which the vehicle could no longer brake
            before the floor or a wall (`QuadrotorTask.recoverable`) to its fallback
            (`MPPIConfig.supervise`, `NMPCConfig.supervise`); MPPI on the nominal physics
            flew 13 heavy vehicles of the stress set into the floor without it
            (docs/controllers.md, "A supervisor at the floor").
    """

    online: bool = True
    online_support: bool = False
    online_anchor: Literal["current", "start"] = "current"
    online_holdout: int = 0
    rti_trust_bounds: bool = False
    rti_trust_repair: bool = False  # measured worse (docs/controllers.md)
    rti_fallback: Literal["pd", "nominal_rti"] = "nominal_rti"
    mppi_fallback: Literal["pd", "nominal_rti"] = "nominal_rti"
    rti_step_fractions: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.1)
    disturbance_gain: float = 0.0
    adapt_steps: int = 30
    adapt_lr: float = 3e-3
    adapt_horizon: int = 4
    adapt_free_offset: bool = True
    supervise: bool = True


@dataclass(frozen=True)
class DemoConfig(FlightOptions):
    """Settings of `metasym-control demo` (shipped defaults reproduce the README's table).

    Attributes:
        env: the system: "quadrotor" (the figure-8 flight below) or any other registered
            system with a shipped checkpoint ("spring_mesh", "quantum"): a held-out system
            under zero action and MPPI with the nominal, adapted-MetaSym and oracle models
            (`metasym_control.experiment.run_trial`). None: the checkpoint's system, else
            the quadrotor; an `env` that disagrees with `checkpoint` is refused.
        steps: closed-loop control steps of the non-quadrotor demos (None: the system's
            `trial_steps`).
        controller: MPC flavour flying the learned and analytic models: "mppi" (sampling,
            torch) or "rti" (real-time-iteration SQP on CasADi, learned models linearised by
            torch Jacobians).
        seconds: length of each figure-8 flight, s (one lap at ω = 1 rad/s is 6.3 s).
        support_seconds: flight of the exploration policy on the unseen quadrotor whose data
            MetaSym adapts to before the MPC flight, s.
        seed: seed of the unseen system, the support flight and the controllers.
        omega: figure-8 rate, rad/s.
        horizon: MPC horizon, control steps of 0.02 s.
        samples: MPPI samples K.
        online, online_support, online_anchor, online_holdout, rti_trust_bounds,
            rti_trust_repair, rti_fallback, mppi_fallback, rti_step_fractions,
            disturbance_gain, adapt_steps, adapt_lr, adapt_horizon, adapt_free_offset,
            supervise: the
            figure-8 flights' options (`FlightOptions`, shared with
            `metasym-control experiment`).
        checkpoint: MetaSym checkpoint stem (None: the shipped default weights).
        out: folder for the plot, the video, the table and the JSON summary.
        video: render a video of the MetaSym flight (software EGL rendering: ~0.03 s/frame).
        video_every: keep every n-th control step in the video.
        include_oracle: also fly MPC with the true parameters (the best any model can do).
        include_mlp: quadrotor: also fly MPC with the shipped MLP baseline, adapted and
            re-adapted online exactly like MetaSym (the learned model MetaSym must beat).
        include_identified: quadrotor: also fly MPC with the nominal physics whose mass,
            inertia, drag and wind are identified by least squares on the support flight and
            re-identified online (the near-oracle reference).
        include_unadapted: quadrotor: also fly MPC with the meta-trained MetaSym as shipped
            (no adaptation, offline or online).
        export_csv: also write every flown run as a CSV log (docs/user_data.md), the format
            `adapt --data` reads.
        task: the task of the non-quadrotor demos (None: the system's default; e.g. the
            mesh's "hold_edge").
    """

    env: str | None = None
    steps: int | None = None
    controller: Literal["mppi", "rti"] = "mppi"
    seconds: float = 8.0
    support_seconds: float = 3.0
    seed: int = 0
    omega: float = 1.0
    horizon: int = 20
    samples: int = 256
    checkpoint: Path | None = None
    out: Path = Path("outputs/demo")
    video: bool = True
    video_every: int = 2
    include_oracle: bool = True
    include_mlp: bool = True
    include_identified: bool = False
    include_unadapted: bool = False
    export_csv: bool = False
    task: str | None = None

    def validate(self) -> None:
        """Check every option up front (`UsageError` naming the flag and its range)."""
        from metasym_control.systems import known_systems

        if self.env is not None:
            require(self.env in known_systems(), "--env", f"one of {known_systems()}", self.env)
        if self.task is not None:
            from metasym_control.systems import get_system

            tasks = get_system(self.env or "quadrotor").tasks
            ok = self.env not in (None, "quadrotor") and self.task in tasks
            require(ok, "--task", f"one of {list(tasks)} with a non-quadrotor --env", self.task)
        at_least("--steps", self.steps, 1, optional=True)
        require(
            self.online_anchor in ("current", "start"),
            "--online-anchor",
            "current or start",
            self.online_anchor,
        )
        require(
            self.online_holdout == 0 or 10 <= self.online_holdout < 100,
            "--online-holdout",
            "0, or 10 to 99 steps (within the 100-step window, at least the 10-step check)",
            self.online_holdout,
        )
        for flag, value in (("--rti-fallback", self.rti_fallback),
                            ("--mppi-fallback", self.mppi_fallback)):  # fmt: skip
            require(value in ("pd", "nominal_rti"), flag, "pd or nominal_rti", value)
        require(
            all(0.0 < f <= 1.0 for f in self.rti_step_fractions),
            "--rti-step-fractions",
            "fractions in (0, 1]",
            self.rti_step_fractions,
        )
        require(
            0.0 <= self.disturbance_gain <= 1.0,
            "--disturbance-gain",
            "a gain in [0, 1] (0: off)",
            self.disturbance_gain,
        )
        require(self.controller in ("mppi", "rti"), "--controller", "mppi or rti", self.controller)
        positive("--seconds", self.seconds)
        positive("--support-seconds", self.support_seconds)
        positive("--omega", self.omega)
        at_least("--horizon", self.horizon, 1)
        at_least("--samples", self.samples, 1)
        at_least("--video-every", self.video_every, 1)
        at_least("--adapt-steps", self.adapt_steps, 0)
        positive("--adapt-lr", self.adapt_lr)
        at_least("--adapt-horizon", self.adapt_horizon, 1)
        if self.checkpoint is not None:
            from metasym_control.checkpoint import checkpoint_paths

            require(
                checkpoint_paths(self.checkpoint)[1].exists(),
                "--checkpoint",
                "an existing checkpoint (stem.json and stem.safetensors)",
                str(self.checkpoint),
            )

    @property
    def adapt_budget(self) -> AdaptBudget:
        """The budget of the few-shot and the online adaptations (Adam on the fast weights)."""
        return AdaptBudget(
            inner_steps=self.adapt_steps,
            lr=self.adapt_lr,
            optimizer="adam",
            horizon=self.adapt_horizon,
            seed=self.seed,
            # without an observer nothing would supply the offset left out
            free_offset=self.adapt_free_offset and self.disturbance_gain > 0,
        )
