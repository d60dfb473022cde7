"""Policy/value networks: an MLP for vector observations, the Nature CNN for image stacks.

Each module maps a batch of observations to ``(action logits, state values)``; actions are
discrete (a categorical distribution over the logits).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

Weights = dict[str, np.ndarray]


def _mlp(sizes: Sequence[int], out: int, out_gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [_orthogonal(nn.Linear(a, b), np.sqrt(2)), nn.Tanh()]
    layers.append(_orthogonal(nn.Linear(sizes[-1], out), out_gain))
    return nn.Sequential(*layers)


def _orthogonal(layer: Any, gain: float) -> Any:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class MLPModel(nn.Module):
    """Separate policy and value MLPs (tanh), like RLlib's default ``vf_share_layers=False``."""

    def __init__(self, obs_dim: int, num_actions: int, hiddens: Sequence[int] = (64, 64)):
        super().__init__()
        self.pi = _mlp([obs_dim, *hiddens], num_actions, 0.01)
        self.vf = _mlp([obs_dim, *hiddens], 1, 1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        obs = obs.reshape(obs.shape[0], -1).float()
        return self.pi(obs), self.vf(obs).squeeze(-1)


class NatureCNN(nn.Module):
    """Mnih et al. (2015): 32x8x8/4, 64x4x4/2, 64x3x3/1, dense 512, over ``[C, 84, 84]`` uint8
    frame stacks scaled to [0, 1]; shared trunk, policy and value heads."""

    def __init__(self, in_channels: int, num_actions: int, height: int = 84, width: int = 84):
        super().__init__()
        self.trunk = nn.Sequential(
            _orthogonal(nn.Conv2d(in_channels, 32, 8, stride=4), np.sqrt(2)), nn.ReLU(),
            _orthogonal(nn.Conv2d(32, 64, 4, stride=2), np.sqrt(2)), nn.ReLU(),
            _orthogonal(nn.Conv2d(64, 64, 3, stride=1), np.sqrt(2)), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.trunk(torch.zeros(1, in_channels, height, width)).shape[1]
        self.dense = nn.Sequential(_orthogonal(nn.Linear(flat, 512), np.sqrt(2)), nn.ReLU())
        self.pi = _orthogonal(nn.Linear(512, num_actions), 0.01)
        self.vf = _orthogonal(nn.Linear(512, 1), 1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.dense(self.trunk(obs.float() / 255.0))
        return self.pi(features), self.vf(features).squeeze(-1)


def build_model(observation_space: Any, action_space: Any,
                hiddens: Sequence[int] = (64, 64)) -> nn.Module:
    """The Nature CNN for ``[C, H, W]`` image observations, an MLP for anything flat."""
    import gymnasium as gym

    if not isinstance(action_space, gym.spaces.Discrete):
        raise ValueError(f"action space {action_space} is not supported: ember.rl's PPO handles "
                         "gymnasium.spaces.Discrete actions")
    shape = observation_space.shape
    if shape is None:
        raise ValueError(f"observation space {observation_space} has no shape; use a Box")
    num_actions = int(action_space.n)
    if len(shape) == 3:
        return NatureCNN(shape[0], num_actions, shape[1], shape[2])
    return MLPModel(int(np.prod(shape)), num_actions, hiddens)


def get_weights(model: nn.Module) -> Weights:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def set_weights(model: nn.Module, weights: Weights) -> None:
    # torch.tensor copies: arrays from the object store are read-only (zero-copy)
    model.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
