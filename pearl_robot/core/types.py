"""Named batches and outputs passed between the core modules (no anonymous tuples)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class RLBatch(NamedTuple):
    """Actor-critic batch, shape [tasks, batch, dim]; actions normalized to [-1, 1]."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminals: torch.Tensor


class NumpyRLBatch(NamedTuple):
    """The same batch as float32 numpy arrays, straight out of the replay buffer."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    terminals: np.ndarray

    def to_torch(self, device: torch.device) -> RLBatch:
        return RLBatch(*(torch.from_numpy(a).to(device, non_blocking=True) for a in self))


class PolicyOutput(NamedTuple):
    """What the tanh-Gaussian actor returns. ``action`` is in [-1, 1]."""

    action: torch.Tensor
    log_prob: torch.Tensor | None
    mean: torch.Tensor
    log_std: torch.Tensor


class Posterior(NamedTuple):
    """A diagonal Gaussian belief over z: mean and variance, shape [..., latent]."""

    mean: torch.Tensor
    var: torch.Tensor


class GaussianFactors(NamedTuple):
    """Per-transition encoder outputs, shape [tasks, transitions, latent]."""

    mean: torch.Tensor
    var: torch.Tensor
