"""Learned baselines under MetaSym's protocol, data and adaptation budget.

- `MLPModel`: a residual next-state MLP; fast weights = its last layer.
- `TransformerModel`: a larger causal transformer without symplectic structure; fast weights =
  its meta-attention, as in MetaSym.
- `SymplecticOnlyModel`: the symplectic encoder alone plus a linear control input; fast
  weights = the control input matrix and a bias.
- `HNNModel`: a Hamiltonian neural network with learned damping and a linear control input,
  integrated with RK4; fast weights = control matrix, damping and the Hamiltonian's output
  layer.

(The analytic least-squares baselines are the analytic models' own `adapt`.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from metasym_control.dynamics import Memory
from metasym_control.models.coordinates import CoordinateMap
from metasym_control.models.learned import Batch, LearnedModel


@dataclass(frozen=True)
class MLPConfig:
    """Residual MLP baseline.

    Attributes:
        hidden: width of each hidden layer (the DESIGN's MPPI reference is 2 x 256).
        layers: number of hidden layers.
    """

    hidden: int = 128  # wide enough for 13-17 states; 2 x 128 keeps MPPI rollouts cheap
    layers: int = 2  # two hidden layers: the usual MBRL size


class MLPModel(LearnedModel):
    """x_{k+1} = x_k + delta_std * MLP(norm(x_k), norm(u_k)); Markov (history_len 0).

    The last layer starts at zero, so the untrained model predicts `x_{k+1} = x_k`.
    """

    config_class = MLPConfig

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        dt: float,
        config: MLPConfig | None = None,
        coords: CoordinateMap | None = None,
        env_id: str = "",
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__(state_dim, action_dim, dt, 0, coords, env_id)
        self.config = config or MLPConfig()
        width, layers = self.config.hidden, self.config.layers
        mods: list[nn.Module] = []
        d_in = state_dim + action_dim
        for _ in range(layers):
            mods += [nn.Linear(d_in, width), nn.SiLU()]
            d_in = width
        self.net = nn.Sequential(*mods)
        self.out = nn.Linear(d_in, state_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.to(device=device, dtype=dtype)

    def fast_weight_names(self) -> list[str]:
        """The last layer: `out.weight`, `out.bias`."""
        return ["out.weight", "out.bias"]

    def init_memory(
        self, states: torch.Tensor, actions: torch.Tensor, valid: torch.Tensor | None = None
    ) -> Memory:
        """Markov model: the memory is empty."""
        return {}

    def step(self, x: torch.Tensor, u: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, Memory]:
        """x (..., nx), u (..., nu) -> x_next (..., nx), memory unchanged."""
        h = self.net(torch.cat([self.norm_state(x), self.norm_action(u)], dim=-1))
        return x + self.delta_std * self.out(h), memory

    def predict_windows(self, batch: Batch) -> torch.Tensor:
        """Rollouts of a batch of windows: (B, H, nx)."""
        return self.rollout(batch["x0"], batch["ua"], {})
