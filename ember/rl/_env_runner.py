"""The env runner actor: steps its sub-envs with the current policy and returns batches with
advantages already computed (GAE runs where the values are).

The sub-envs are stepped in a plain loop rather than through ``gymnasium.vector.SyncVectorEnv``
(same semantics as its ``SAME_STEP`` autoreset: an env that ends an episode is reset within the
step, and the final observation of a truncated episode is kept to bootstrap from); for cheap envs
such as CartPole the vector wrapper's bookkeeping costs more than the env. MLP policies run in
numpy (``_numpy_policy``), so a runner for vector observations never imports torch; image
policies (the Nature CNN) run in torch on one thread.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ember.rl._math import compute_gae, next_values
from ember.rl._numpy_policy import NumpyMLPPolicy, is_mlp_weights
from ember.rl._ppo_config import PPOConfig


def make_env(spec: Any, env_config: dict[str, Any]) -> Any:
    """One env from a gymnasium id (Atari ids get the standard preprocessing) or a callable."""
    if callable(spec):
        return spec(**env_config)
    import gymnasium as gym

    if spec.startswith("ALE/"):
        from ember.rl._atari import make_atari_env

        return make_atari_env(spec, **env_config)
    return gym.make(spec, **env_config)


class _TorchPolicy:
    """The torch model (the Nature CNN) on CPU, sampling with a seeded torch generator."""

    def __init__(self, observation_space: Any, action_space: Any, config: PPOConfig,
                 weights: dict[str, np.ndarray], seed: int | None) -> None:
        import torch

        from ember.rl._models import build_model, set_weights

        torch.set_num_threads(1)  # runners share the machine's cores with the learners
        self.model = build_model(observation_space, action_space, config.hiddens)
        set_weights(self.model, weights)
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()  # fresh entropy: unseeded runs differ
        else:
            self.generator.manual_seed(seed)

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        from ember.rl._models import set_weights

        set_weights(self.model, weights)

    def get_weights(self) -> dict[str, np.ndarray]:
        from ember.rl._models import get_weights

        return get_weights(self.model)

    def act(self, obs: np.ndarray, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import torch

        with torch.inference_mode():
            logits, values = self.model(torch.as_tensor(obs))
            log_probs = torch.log_softmax(logits, dim=-1)
            actions = torch.multinomial(log_probs.exp(), 1, generator=self.generator)
            logp = log_probs.gather(-1, actions).squeeze(-1)
            return actions.squeeze(-1).numpy(), logp.numpy(), values.numpy()

    def values(self, obs: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            values: np.ndarray = self.model(torch.as_tensor(obs))[1].numpy()
        return values

    def greedy(self, obs: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            actions: np.ndarray = self.model(torch.as_tensor(obs))[0].argmax(-1).numpy()
        return actions


class EnvRunner:
    """Holds ``num_envs_per_env_runner`` sub-envs whose episodes continue across ``sample``
    calls; completed episodes' returns and lengths are reported with each batch."""

    def __init__(self, config: PPOConfig, index: int, weights: dict[str, np.ndarray]) -> None:
        self.config = config
        n = config.num_envs_per_env_runner
        self.envs = [make_env(config.env, config.env_config) for _ in range(n)]
        observation_space = self.envs[0].observation_space
        seed = None if config.seed is None else config.seed + 1000 * (index + 1)
        self.rng = np.random.default_rng(seed)  # fresh entropy when unseeded: runs differ
        self.policy: NumpyMLPPolicy | _TorchPolicy
        if len(observation_space.shape or ()) != 3 and is_mlp_weights(weights):
            self.policy = NumpyMLPPolicy(weights)
        else:
            self.policy = _TorchPolicy(observation_space, self.envs[0].action_space, config,
                                       weights, seed)
        # as gymnasium's vector envs seed them: sub-env i with seed + i
        first = [env.reset(seed=None if seed is None else seed + i)[0]
                 for i, env in enumerate(self.envs)]
        self.obs = np.stack([np.asarray(o) for o in first])
        self.episode_returns = np.zeros(n)
        self.episode_lengths = np.zeros(n, dtype=np.int64)

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.policy.set_weights(weights)

    def get_weights(self) -> dict[str, np.ndarray]:
        return self.policy.get_weights()

    def pid(self) -> int:
        """The runner's process id (to watch it, or to kill it when testing recovery)."""
        return os.getpid()

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
            actions[t], logps[t], values[t] = self.policy.act(self.obs, self.rng)
            truncated_at: list[int] = []
            final_obs: list[Any] = []
            for i, env in enumerate(self.envs):
                obs, reward, terminated, truncated, _ = env.step(int(actions[t, i]))
                rewards[t, i] = reward
                self.episode_returns[i] += reward
                self.episode_lengths[i] += 1
                if terminated or truncated:
                    terminateds[t, i], truncateds[t, i] = terminated, truncated
                    finished_returns.append(float(self.episode_returns[i]))
                    finished_lengths.append(int(self.episode_lengths[i]))
                    self.episode_returns[i] = 0.0
                    self.episode_lengths[i] = 0
                    if truncated:  # bootstrap from the final observation of the episode
                        truncated_at.append(i)
                        final_obs.append(np.asarray(obs))
                    obs, _ = env.reset()
                self.obs[i] = obs
            if truncated_at:
                final_values[t, truncated_at] = self.policy.values(np.stack(final_obs))
        nxt = next_values(values, self.policy.values(self.obs), truncateds, final_values)
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

    def evaluate(self, duration: int, unit: str, explore: bool) -> dict[str, Any]:
        """Play the first sub-env from a fresh reset for ``duration`` episodes (``unit=
        "episodes"``) or env steps (``"timesteps"``), sampling actions (``explore``) or taking
        the most likely ones; the completed episodes' returns and lengths, and the steps."""
        env = self.envs[0]
        obs, _ = env.reset()
        returns: list[float] = []
        lengths: list[int] = []
        episode_return, episode_length, steps = 0.0, 0, 0
        while (len(returns) if unit == "episodes" else steps) < duration:
            batch = np.asarray(obs)[None]
            if explore:
                action = int(self.policy.act(batch, self.rng)[0][0])
            else:
                action = int(self.policy.greedy(batch)[0])
            obs, reward, terminated, truncated, _ = env.step(action)
            episode_return += float(reward)
            episode_length += 1
            steps += 1
            if terminated or truncated:
                returns.append(episode_return)
                lengths.append(episode_length)
                episode_return, episode_length = 0.0, 0
                obs, _ = env.reset()
        return {"episode_returns": returns, "episode_lengths": lengths, "num_env_steps": steps}

    def close(self) -> None:
        for env in self.envs:
            env.close()
