"""A MetaSym model moved away from its neutral start, for tests of its fast paths."""

from __future__ import annotations

import torch

from metasym_control.models.metasym import MetaSym


def perturb(model: MetaSym, scale: float) -> MetaSym:
    """Add `scale` x N(0, 1) to every parameter and draw every normalisation statistic, so
    that each term of a step really contributes (the untrained model is near the identity).

    Args:
        model: modified in place (seed torch first for a reproducible draw).
        scale: standard deviation of the parameter noise.

    Returns:
        The same model.
    """
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
        model.state_mean.normal_()
        model.state_std.uniform_(0.5, 2.0)
        model.action_mean.normal_()
        model.action_std.uniform_(0.5, 2.0)
        model.delta_std.uniform_(0.1, 1.0)
        model._on_normalization()
    return model
