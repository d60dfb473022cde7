"""The MLP policy's forward pass in numpy, for env runners: no torch in the runner process.

An env runner evaluates the policy on a handful of observations per step; for the small MLPs of
vector-observation tasks, torch's per-operator overhead (and its import, seconds per process)
costs more than the arithmetic. ``NumpyMLPPolicy`` reads the ``state_dict`` of
``_models.MLPModel`` (``pi.<i>.weight``/``bias`` and ``vf.<i>.weight``/``bias``, tanh between
layers) and computes the same logits and values in float32.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

_KEY = re.compile(r"^(pi|vf)\.(\d+)\.(weight|bias)$")


def is_mlp_weights(weights: dict[str, Any]) -> bool:
    """Whether ``weights`` is an ``MLPModel`` state dict (every key ``pi|vf.<i>.weight|bias``)."""
    return bool(weights) and all(_KEY.match(key) for key in weights)


def _layers(weights: dict[str, Any], head: str) -> list[tuple[np.ndarray, np.ndarray]]:
    indices = sorted({int(m.group(2)) for key in weights
                      if (m := _KEY.match(key)) and m.group(1) == head})
    if not indices:
        raise ValueError(f"weights have no '{head}.<i>.weight' layers; they are not an MLPModel's "
                         f"state dict (keys: {sorted(weights)[:6]})")
    # transposed once here so that the forward pass is x @ w + b
    return [(np.ascontiguousarray(np.asarray(weights[f"{head}.{i}.weight"], np.float32).T),
             np.asarray(weights[f"{head}.{i}.bias"], np.float32)) for i in indices]


def _forward(layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
    for w, b in layers[:-1]:
        x = np.tanh(x @ w + b)
    w, b = layers[-1]
    out: np.ndarray = x @ w + b
    return out


class NumpyMLPPolicy:
    """``MLPModel``'s policy and value heads over numpy arrays, with categorical sampling."""

    def __init__(self, weights: dict[str, Any]) -> None:
        self.set_weights(weights)

    def set_weights(self, weights: dict[str, Any]) -> None:
        self.pi = _layers(weights, "pi")
        self.vf = _layers(weights, "vf")
        self._weights = {k: np.array(v, copy=True) for k, v in weights.items()}

    def get_weights(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self._weights.items()}

    def _flat(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs)
        return obs.reshape(obs.shape[0], -1).astype(np.float32, copy=False)

    def values(self, obs: np.ndarray) -> np.ndarray:
        return _forward(self.vf, self._flat(obs))[:, 0]

    def logits_and_values(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = self._flat(obs)
        return _forward(self.pi, x), _forward(self.vf, x)[:, 0]

    def greedy(self, obs: np.ndarray) -> np.ndarray:
        """The most likely action for each row."""
        actions: np.ndarray = _forward(self.pi, self._flat(obs)).argmax(axis=1)
        return actions.astype(np.int64)

    def act(self, obs: np.ndarray, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sampled actions, their log-probabilities and the state values, one per row."""
        logits, values = self.logits_and_values(obs)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        cdf = np.cumsum(np.exp(log_probs), axis=1)
        draws = rng.random((len(cdf), 1), dtype=np.float32) * cdf[:, -1:]
        actions = np.minimum((cdf <= draws).sum(axis=1), cdf.shape[1] - 1)
        logp = log_probs[np.arange(len(actions)), actions]
        return actions.astype(np.int64), logp.astype(np.float32), values.astype(np.float32)
