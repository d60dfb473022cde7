"""``Policy``: the trained policy as ``algo.get_policy()`` returns it, shaped like RLlib's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ember.rl._ppo import PPO


class Policy:
    """An algorithm's policy (ember has one per algorithm, RLlib's ``"default_policy"``).

    It reads and writes the algorithm's own weights: ``set_weights`` changes what the learners
    train on next and what the env runners act with.
    """

    def __init__(self, algorithm: PPO) -> None:
        self._algorithm = algorithm

    @property
    def observation_space(self) -> Any:
        """The env's observation space."""
        return self._algorithm.observation_space

    @property
    def action_space(self) -> Any:
        """The env's (discrete) action space."""
        return self._algorithm.action_space

    @property
    def model(self) -> Any:
        """The torch module: observations in, ``(action logits, state values)`` out."""
        return self._algorithm.model

    @property
    def config(self) -> Any:
        """The algorithm's (frozen) config."""
        return self._algorithm.config

    def compute_single_action(self, obs: Any, state: Any = None, *, explore: bool = False,
                              ) -> tuple[int, list[Any], dict[str, Any]]:
        """``(action, [], extra)`` for one observation, as RLlib's policy returns it: ``extra``
        holds ``action_dist_inputs`` (the logits), ``action_logp``, ``action_prob`` and
        ``vf_preds``. ``explore=False`` (the default) takes the most likely action; ``True``
        samples one. ``state`` (RNN state) must be ``None`` or empty: the models have none."""
        if state:
            raise ValueError("state must be None: ember.rl's models are not recurrent")
        action, logits, value = self._algorithm._act(obs, explore)
        shifted = logits - logits.max()
        log_probs = shifted - np.log(np.exp(shifted).sum())
        extra = {"action_dist_inputs": logits, "action_logp": float(log_probs[action]),
                 "action_prob": float(np.exp(log_probs[action])), "vf_preds": value}
        return action, [], extra

    def get_weights(self) -> dict[str, np.ndarray]:
        """The weights as numpy arrays, by ``state_dict`` key."""
        return self._algorithm.get_weights()

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Load ``weights`` into the learners (their optimizer state stays), this process's
        model and every env runner."""
        self._algorithm.set_weights(weights)
