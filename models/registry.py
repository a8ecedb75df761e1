"""The one registry of learned model classes: rebuild one from its spec, or make a fresh one.

A checkpoint names its model class (`LearnedModel.spec()["class"]`); `build_model` looks
the name up here. `make_model` makes a fresh model of a kind that the CLI and the
experiments name.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch

from metasym_control.models.baselines import (
    HNNModel,
    MLPModel,
    SymplecticOnlyModel,
    TransformerModel,
)
from metasym_control.models.coordinates import CoordinateMap
from metasym_control.models.learned import LearnedModel
from metasym_control.models.metasym import MetaSym, MetaSymConfig

# Every checkpointable learned model class, by the name its checkpoints give.
MODEL_CLASSES: dict[str, type[LearnedModel]] = {
    cls.__name__: cls
    for cls in (MetaSym, MLPModel, TransformerModel, SymplecticOnlyModel, HNNModel)
}

ModelKind = Literal["metasym", "metasym_decoder", "mlp", "transformer", "symplectic", "hnn"]
# the baselines' kinds (MetaSym's two kinds differ in their config, see `make_model`)
_BASELINES: dict[str, type[LearnedModel]] = {
    "mlp": MLPModel,
    "transformer": TransformerModel,
    "symplectic": SymplecticOnlyModel,
    "hnn": HNNModel,
}


def build_model(spec: dict[str, Any]) -> LearnedModel:
    """Rebuild an (untrained) model from `LearnedModel.spec()`.

    Raises:
        ValueError: an unknown model class.
    """
    name = spec.get("class")
    if name not in MODEL_CLASSES:
        raise ValueError(f"unknown model class {name!r}; known: {sorted(MODEL_CLASSES)}")
    cls = MODEL_CLASSES[name]
    coords = CoordinateMap.from_dict(spec["coords"]) if spec.get("coords") else None
    config = cls.config_class(**spec["config"])
    return cls(  # type: ignore[call-arg]
        state_dim=int(spec["state_dim"]),
        action_dim=int(spec["action_dim"]),
        dt=float(spec["dt"]),
        config=config,
        coords=coords,
        env_id=str(spec.get("env_id", "")),
    )


def make_model(
    kind: ModelKind,
    env_id: str,
    state_dim: int,
    action_dim: int,
    dt: float,
    coords: CoordinateMap,
    metasym: MetaSymConfig | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LearnedModel:
    """A fresh learned model of `kind` for an environment.

    Args:
        kind: "metasym", "metasym_decoder" (MetaSym adapting its whole decoder, the
            ablation) or a baseline ("mlp", "transformer", "symplectic", "hnn").
        env_id: environment id with version (saved in the model's spec).
        state_dim, action_dim, dt: of the data.
        coords: the state's canonical coordinates (`metasym_control.systems` knows each
            project environment's).
        metasym: a `MetaSymConfig` (MetaSym only; default config if None).
        device, dtype: of the parameters.

    Raises:
        ValueError: an unknown kind.
    """
    args: dict[str, Any] = {"coords": coords, "env_id": env_id, "device": device, "dtype": dtype}
    if kind == "metasym":
        return MetaSym(state_dim, action_dim, dt, metasym, **args)
    if kind == "metasym_decoder":
        cfg = dataclasses.replace(metasym or MetaSymConfig(), fast_set="decoder")
        return MetaSym(state_dim, action_dim, dt, cfg, **args)
    if kind not in _BASELINES:
        raise ValueError(f"unknown model kind {kind!r}")
    return _BASELINES[kind](state_dim, action_dim, dt, **args)  # type: ignore[call-arg]
