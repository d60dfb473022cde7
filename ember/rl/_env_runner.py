"""The env runner actor: steps a gymnasium vector env with the current policy and returns
batches with advantages already computed (GAE runs where the values are)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ember.rl._config import PPOConfig
from ember.rl._math import compute_gae, next_values


def make_env(spec: Any, env_config: dict[str, Any]) -> Any:
    """One env from a gymnasium id (Atari ids get the standard preprocessing) or a callable."""
    if callable(spec):
        return spec(**env_config)
    import gymnasium as gym

    if spec.startswith("ALE/"):
        from ember.rl._atari import make_atari_env

        return make_atari_env(spec, **env_config)
    return gym.make(spec, **env_config)


class EnvRunner:
    """Holds ``num_envs_per_env_runner`` sub-envs whose episodes continue across ``sample``
    calls; completed episodes' returns and lengths are reported with each batch."""

    def __init__(self, config: PPOConfig, index: int, weights: dict[str, np.ndarray]) -> None:
        import gymnasium as gym
        import torch

        from ember.rl._models import build_model, set_weights

        torch.set_num_threads(1)  # runners share the machine's cores with the learners
        self.config = config
        self.env = gym.vector.SyncVectorEnv(
            [lambda: make_env(config.env, config.env_config)] * config.num_envs_per_env_runner,
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        )
        self.model = build_model(self.env.single_observation_space,
                                 self.env.single_action_space, config.hiddens)
        set_weights(self.model, weights)
        seed = None if config.seed is None else config.seed + 1000 * (index + 1)
        self.obs, _ = self.env.reset(seed=seed)
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()  # fresh entropy: unseeded runs differ
        else:
            self.generator.manual_seed(seed)
        self.episode_returns = np.zeros(config.num_envs_per_env_runner)
        self.episode_lengths = np.zeros(config.num_envs_per_env_runner, dtype=np.int64)

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        from ember.rl._models import set_weights

        set_weights(self.model, weights)

    def get_weights(self) -> dict[str, np.ndarray]:
        from ember.rl._models import get_weights

        return get_weights(self.model)

    def pid(self) -> int:
        """The runner's process id (to watch it, or to kill it when testing recovery)."""
        return os.getpid()

    def _policy(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import torch

        with torch.no_grad():
            logits, values = self.model(torch.as_tensor(obs))
            dist = torch.distributions.Categorical(logits=logits)
            actions = torch.multinomial(dist.probs, 1, generator=self.generator).squeeze(-1)
            return actions.numpy(), dist.log_prob(actions).numpy(), values.numpy()

    def _values(self, obs: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.model(torch.as_tensor(obs))[1].numpy()

    def sample(self, num_steps: int) -> dict[str, Any]:
        """``num_steps`` steps of every sub-env: a flat batch of ``num_steps * num_envs``."""
        cfg = self.config
        n = cfg.num_envs_per_env_runner
        obs_buf = np.zeros((num_steps, n, *self.obs.shape[1:]), dtype=self.obs.dtype)
        actions = np.zeros((num_steps, n), dtype=np.int64)
        logps = np.zeros((num_steps, n), dtype=np.float32)
        values = np.zeros((num_steps, n), dtype=np.float32)
        rewards = np.zeros((num_steps, n), dtype=np.float32)
        terminateds = np.zeros((num_steps, n), dtype=bool)
        truncateds = np.zeros((num_steps, n), dtype=bool)
        final_values = np.zeros((num_steps, n), dtype=np.float32)
        finished_returns: list[float] = []
        finished_lengths: list[int] = []
        for t in range(num_steps):
            obs_buf[t] = self.obs
            actions[t], logps[t], values[t] = self._policy(self.obs)
            self.obs, rewards[t], terminateds[t], truncateds[t], info = self.env.step(actions[t])
            if truncateds[t].any():
                # SAME_STEP autoreset: self.obs already starts the next episode; bootstrap from
                # the final observation of the truncated one.
                final_obs = np.stack([info["final_obs"][i] if truncateds[t, i]
                                      else self.obs[i] for i in range(n)])
                final_values[t] = self._values(final_obs)
            self.episode_returns += rewards[t]
            self.episode_lengths += 1
            for i in np.flatnonzero(terminateds[t] | truncateds[t]):
                finished_returns.append(float(self.episode_returns[i]))
                finished_lengths.append(int(self.episode_lengths[i]))
                self.episode_returns[i] = 0.0
                self.episode_lengths[i] = 0
        nxt = next_values(values, self._values(self.obs), truncateds, final_values)
        advantages, targets = compute_gae(rewards, values, nxt, terminateds, truncateds,
                                          gamma=cfg.gamma, lambda_=cfg.lambda_)
        flat = num_steps * n
        return {
            "obs": obs_buf.reshape(flat, *obs_buf.shape[2:]),
            "actions": actions.reshape(flat),
            "logp": logps.reshape(flat),
            "values": values.reshape(flat),
            "advantages": advantages.reshape(flat),
            "value_targets": targets.reshape(flat),
            "episode_returns": finished_returns,
            "episode_lengths": finished_lengths,
        }

    def close(self) -> None:
        self.env.close()
