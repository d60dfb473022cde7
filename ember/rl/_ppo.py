"""``PPO``: env runner actors sample, a learner group trains in data-parallel, weights go back.

Each ``train()`` call: every runner samples until the train batch is full (a runner whose process
dies is replaced by a new one with the current weights, and sampling goes on), the driver joins the
pieces, normalises advantages over the whole batch, shuffles it and splits it among learners by
``learner_weights``; the learners update (all-reducing gradients) and rank 0's new weights are put
once in the object store and handed to every runner.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

import numpy as np

import ember
from ember.errors import ActorDiedError, WorkerCrashedError
from ember.rl import _learner
from ember.rl._algorithm import Algorithm
from ember.rl._env_runner import EnvRunner, make_env
from ember.rl._math import adapt_kl_coeff, explained_variance, normalize_advantages
from ember.rl._observe import IterationView
from ember.rl._policy import Policy
from ember.rl._ppo_config import PPOConfig, _log_level_number
from ember.rl._shares import offsets, split_by_weights
from ember.util import WorkerGroup

DEFAULT_POLICY_ID = "default_policy"  # RLlib's name for a single-agent algorithm's policy
# Evaluation runners' seeds start past any training runner's (their seed is derived from it).
EVALUATION_RUNNER_INDEX = 1_000_000
# A runner that dies is replaced; one that keeps dying (an env that crashes its process) is a bug
# to report rather than to loop on.
MAX_RUNNER_DEATHS_PER_ITERATION = 10

logger = logging.getLogger(__name__)


class PPO(Algorithm):
    """A running PPO algorithm; build it with ``PPOConfig(...).build()`` and ``stop()`` it (or
    use it as a context manager) to end its actors. ``algo.config`` is a frozen copy of the
    config it was built from."""

    config: PPOConfig

    def __init__(self, config: PPOConfig) -> None:
        config = config.copy(copy_frozen=True)
        config.validate()
        if config.log_level is not None:
            logging.getLogger("ember.rl").setLevel(_log_level_number(config.log_level))
        self.config = config
        self.iteration = 0
        self.env_steps_lifetime = 0
        self.time_total_s = 0.0
        self.kl_coeff = config.kl_coeff  # adapted after each iteration (RLlib's cur_kl_coeff)
        self._episodes = 0
        window = config.metrics_num_episodes_for_smoothing
        self._returns: collections.deque[float] = collections.deque(maxlen=window)
        self._lengths: collections.deque[int] = collections.deque(maxlen=window)
        self._rng = np.random.default_rng(config.seed)
        self.runners: list[Any] = []
        self.evaluation_runners: list[Any] = []
        self._local_evaluation_runner: EnvRunner | None = None
        self.runner_restarts = 0
        self._runner_class = ember.remote(EnvRunner).options(
            num_cpus=config.num_cpus_per_env_runner)
        self._view = IterationView("PPO", config.env, config.num_env_runners,
                                   config.num_learners)  # observe: the dashboard's view
        self.learner_group = WorkerGroup(config.num_learners,
                                         num_cpus_per_worker=config.num_cpus_per_learner,
                                         num_gpus_per_worker=config.num_gpus_per_learner)
        try:
            # Start-up is mostly imports: the learners load torch while this process does.
            self.learner_group.start()
            warming = self.learner_group.execute_async(_learner.warm_up)
            probe = make_env(config.env, config.env_config)
            try:
                self.observation_space = probe.observation_space
                self.action_space = probe.action_space
            finally:
                probe.close()
            import torch

            from ember.rl._models import build_model, get_weights

            if config.seed is not None:
                torch.manual_seed(config.seed)
            self.model = build_model(self.observation_space, self.action_space, config.hiddens)
            weights_ref = ember.put(get_weights(self.model))
            self.runners = [self._runner_class.remote(config, i, weights_ref)
                            for i in range(config.num_env_runners)]
            ember.get(warming)
            self.learner_group.setup_torch_distributed()
            self.learner_group.execute(_learner.setup_learner, config, self.observation_space,
                                       self.action_space, weights_ref)
        except BaseException:
            self.stop()
            raise

    # -- lifetime -----------------------------------------------------------------------------
    def __enter__(self) -> PPO:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """End the env runners and the learner group. Safe to call twice."""
        runners, self.runners = self.runners, []
        if runners:
            self._view.stopped()
        runners += self.evaluation_runners
        self.evaluation_runners = []
        if self._local_evaluation_runner is not None:
            self._local_evaluation_runner.close()
            self._local_evaluation_runner = None
        for runner in runners:
            try:
                ember.kill(runner)
            except Exception:  # already dead or the runtime is gone: nothing left to stop
                pass
        self.learner_group.shutdown()

    # -- training -----------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """One iteration: sample a train batch, update the learners, sync the runners."""
        if not self.runners:
            raise RuntimeError("this PPO has been stopped; build a new one")
        cfg = self.config
        start = time.perf_counter()
        episodes_before = self._episodes
        batch, num_steps = self._sample()
        sampled = time.perf_counter()
        vf_explained_var = explained_variance(batch["value_targets"], batch["values"])
        if cfg.normalize_advantages:
            batch["advantages"] = normalize_advantages(batch["advantages"])
        kl_coeff = self.kl_coeff
        shares, learner_metrics = self._update_learners(batch)
        self._sync_weights()
        done = time.perf_counter()
        self.iteration += 1
        self.env_steps_lifetime += num_steps
        self.time_total_s += done - start
        result: dict[str, Any] = {
            "training_iteration": self.iteration,
            "episode_return_mean": float(np.mean(self._returns)) if self._returns else float("nan"),
            "episode_return_max": max(self._returns, default=float("nan")),
            "episode_return_min": min(self._returns, default=float("nan")),
            "episode_len_mean": float(np.mean(self._lengths)) if self._lengths else float("nan"),
            "num_episodes_lifetime": self._episodes,
            "num_env_runner_restarts": self.runner_restarts,
            "num_env_steps_sampled": num_steps,
            "num_env_steps_sampled_lifetime": self.env_steps_lifetime,
            "learner_shares": shares,
            "sample_time_s": sampled - start,
            "learn_time_s": done - sampled,
            "time_this_iter_s": done - start,
            "num_env_steps_sampled_per_s": num_steps / max(done - start, 1e-9),
        }
        for key in ("total_loss", "policy_loss", "vf_loss", "entropy", "approx_kl",
                    "clip_fraction"):
            weighted = [(m[key], m["num_samples"]) for m in learner_metrics if key in m]
            total = sum(n for _, n in weighted)
            result[key] = sum(v * n for v, n in weighted) / total if total else float("nan")
        self.kl_coeff = adapt_kl_coeff(kl_coeff, result["approx_kl"], cfg.kl_target)
        self._view.iteration(result)  # the dashboard plots ember's keys, not 2.5's copies
        self._add_ray_2_5_keys(result, self._episodes - episodes_before, vf_explained_var,
                               kl_coeff)
        if cfg.evaluation_interval and self.iteration % cfg.evaluation_interval == 0:
            result["evaluation"] = self.evaluate()["evaluation"]
        return result

    def _add_ray_2_5_keys(self, result: dict[str, Any], episodes_this_iter: int,
                          vf_explained_var: float, kl_coeff: float) -> None:
        """The keys a Ray 2.5 user reads, beside ember's own (same numbers, 2.5's names)."""
        episodes = {
            "episode_reward_mean": result["episode_return_mean"],
            "episode_reward_max": result["episode_return_max"],
            "episode_reward_min": result["episode_return_min"],
            "episode_len_mean": result["episode_len_mean"],
            "episodes_this_iter": episodes_this_iter,
        }
        learner_stats = {
            "total_loss": result["total_loss"], "policy_loss": result["policy_loss"],
            "vf_loss": result["vf_loss"], "entropy": result["entropy"],
            "kl": result["approx_kl"], "clip_fraction": result["clip_fraction"],
            "vf_explained_var": vf_explained_var, "cur_lr": self.config.lr,
            "cur_kl_coeff": kl_coeff,
        }
        result.update(episodes)
        result.update({
            "episodes_total": self._episodes,
            "timesteps_total": self.env_steps_lifetime,
            "timesteps_this_iter": result["num_env_steps_sampled"],
            "time_total_s": self.time_total_s,
            "sampler_results": dict(episodes),
            "info": {
                "learner": {DEFAULT_POLICY_ID: {"learner_stats": learner_stats}},
                "num_env_steps_sampled": self.env_steps_lifetime,
                "num_env_steps_trained": self.env_steps_lifetime,
            },
        })

    def _update_learners(self, batch: dict[str, np.ndarray]
                         ) -> tuple[list[int], list[dict[str, float]]]:
        """Shuffle the batch, split it by ``learner_weights`` and run one update on every
        learner; returns the shares and each learner's metrics."""
        num_steps = len(batch["actions"])
        order = self._rng.permutation(num_steps)
        batch = {k: v[order] for k, v in batch.items()}
        shares = split_by_weights(num_steps, self.config.weights())
        seed = int(self._rng.integers(2**31))
        refs = [self.learner_group.execute_single_async(
                    rank, _learner.learner_update, {k: v[lo:hi] for k, v in batch.items()},
                    shares, seed, self.kl_coeff)
                for rank, (lo, hi) in enumerate(offsets(shares))]
        return shares, ember.get(refs)

    def _sample(self) -> tuple[dict[str, np.ndarray], int]:
        cfg = self.config
        fragment = cfg.fragment_length()
        pieces: list[dict[str, Any]] = []
        collected = 0
        deaths_this_iteration = 0
        while collected < cfg.train_batch_size:
            refs = [r.sample.remote(fragment) for r in self.runners]
            for index, ref in enumerate(refs):
                try:
                    piece = ember.get(ref)
                except (ActorDiedError, WorkerCrashedError) as exc:
                    # Its fragment is lost; the others' pieces still count, and the next round
                    # samples from a fresh runner with the current weights.
                    deaths_this_iteration += 1
                    if deaths_this_iteration > MAX_RUNNER_DEATHS_PER_ITERATION:
                        raise RuntimeError(
                            f"env runners died {deaths_this_iteration} times in iteration "
                            f"{self.iteration + 1} (last: {exc}); the env or the machine keeps "
                            "killing them, so ember.rl stops replacing them"
                        ) from exc
                    self._replace_runner(index, exc)
                    continue
                pieces.append(piece)
                collected += len(piece["actions"])
                self._returns.extend(piece["episode_returns"])
                self._lengths.extend(piece["episode_lengths"])
                self._episodes += len(piece["episode_returns"])
        keys = ("obs", "actions", "logp", "values", "advantages", "value_targets")
        return {k: np.concatenate([p[k] for p in pieces]) for k in keys}, collected

    def _replace_runner(self, index: int, cause: Exception) -> None:
        """Start a new env runner in slot ``index`` with the current weights (the old one is
        dead). Its seed differs from the dead one's so it does not replay the same episodes."""
        logger.warning("env runner %d died (%s); starting a replacement", index, cause)
        try:
            ember.kill(self.runners[index])
        except Exception:  # it is dead already; killing is only to be sure it holds nothing
            pass
        self.runner_restarts += 1
        seed_index = index + self.config.num_env_runners * self.runner_restarts
        self.runners[index] = self._runner_class.remote(self.config, seed_index,
                                                        ember.put(self.get_weights()))

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(self) -> dict[str, Any]:
        """Play ``evaluation_duration`` episodes (or env steps) with the current policy, on
        ``evaluation_num_env_runners`` actors (0: in this process), greedily if
        ``evaluation_config={"explore": False}``; returns ``{"evaluation": {...}}`` with
        ``episode_reward_mean`` (``episode_return_mean``), ``_max``, ``_min``,
        ``episode_len_mean`` and ``episodes_this_iter``."""
        if not self.runners:
            raise RuntimeError("this PPO has been stopped; build a new one")
        cfg = self.config
        weights = self.get_weights()
        shares = split_by_weights(cfg.evaluation_duration,
                                  [1.0] * max(1, cfg.evaluation_num_env_runners))
        if cfg.evaluation_num_env_runners == 0:
            runner = self._local_evaluation_runner
            if runner is None:
                runner = self._local_evaluation_runner = EnvRunner(
                    self._evaluation_config(), EVALUATION_RUNNER_INDEX, weights)
            runner.set_weights(weights)
            pieces = [runner.evaluate(shares[0], cfg.evaluation_duration_unit,
                                      cfg.evaluation_explore)]
        else:
            if not self.evaluation_runners:
                self.evaluation_runners = [
                    self._runner_class.remote(self._evaluation_config(),
                                              EVALUATION_RUNNER_INDEX + i, ember.put(weights))
                    for i in range(cfg.evaluation_num_env_runners)]
            ref = ember.put(weights)
            ember.get([r.set_weights.remote(ref) for r in self.evaluation_runners])
            pieces = ember.get([
                r.evaluate.remote(share, cfg.evaluation_duration_unit, cfg.evaluation_explore)
                for r, share in zip(self.evaluation_runners, shares, strict=True) if share])
        returns = [x for p in pieces for x in p["episode_returns"]]
        lengths = [x for p in pieces for x in p["episode_lengths"]]
        nan = float("nan")
        mean_return = float(np.mean(returns)) if returns else nan
        metrics = {
            "episode_reward_mean": mean_return, "episode_return_mean": mean_return,
            "episode_reward_max": max(returns, default=nan),
            "episode_reward_min": min(returns, default=nan),
            "episode_len_mean": float(np.mean(lengths)) if lengths else nan,
            "episodes_this_iter": len(returns),
            "timesteps_this_iter": sum(p["num_env_steps"] for p in pieces),
            "hist_stats": {"episode_reward": returns, "episode_lengths": lengths},
        }
        return {"evaluation": metrics}

    def _evaluation_config(self) -> PPOConfig:
        """The config evaluation runners get: one sub-env each."""
        config = self.config.copy(copy_frozen=False).env_runners(num_envs_per_env_runner=1)
        config.freeze()
        return config

    def _sync_weights(self) -> None:
        from ember.rl._models import set_weights

        weights = ember.get(self.learner_group.execute_single_async(0, _learner.learner_weights))
        set_weights(self.model, weights)
        ref = ember.put(weights)
        refs = [runner.set_weights.remote(ref) for runner in self.runners]
        for index, done in enumerate(refs):
            try:
                ember.get(done)
            except (ActorDiedError, WorkerCrashedError) as exc:
                self._replace_runner(index, exc)  # the replacement starts with these weights

    def get_weights(self) -> dict[str, np.ndarray]:
        """The current policy's weights (as numpy arrays, by ``state_dict`` key)."""
        from ember.rl._models import get_weights

        return get_weights(self.model)

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Load ``weights`` (as ``get_weights`` returns them) into every learner (their
        optimizer state stays), this process's model and every env runner."""
        self.learner_group.execute(_learner.learner_set_state, weights, None)
        self._sync_weights()

    def get_policy(self, policy_id: str = DEFAULT_POLICY_ID) -> Policy:
        """The policy (RLlib's ``"default_policy"``, the only one): ``compute_single_action``,
        ``get_weights``, ``set_weights``."""
        if policy_id != DEFAULT_POLICY_ID:
            raise KeyError(f"no policy {policy_id!r}: ember.rl trains one policy, "
                           f"{DEFAULT_POLICY_ID!r}")
        return Policy(self)

    # -- inference ----------------------------------------------------------------------------
    def compute_single_action(self, observation: Any, *, explore: bool = False,
                              policy_id: str = DEFAULT_POLICY_ID) -> int:
        """The action for one observation: the most likely one, or a sample with
        ``explore=True``. (Ray 2.5 sampled unless told ``explore=False``; ember acts greedily
        unless told ``explore=True``.)"""
        self.get_policy(policy_id)  # checks the id
        return self._act(observation, explore)[0]

    def _act(self, obs: Any, explore: bool) -> tuple[int, np.ndarray, float]:
        """The action for ``obs``, with the logits and the state value it came from."""
        import torch

        with torch.no_grad():
            logits, value = self.model(torch.tensor(np.asarray(obs))[None])
            if explore:
                action = int(torch.distributions.Categorical(logits=logits).sample().item())
            else:
                action = int(logits.argmax(-1).item())
        return action, logits[0].numpy(), float(value[0])

    # -- checkpoints (save, restore and from_checkpoint are Algorithm's) ----------------------
    def _get_state(self) -> dict[str, Any]:
        optimizer_state = ember.get(self.learner_group.execute_single_async(
            0, _learner.learner_optimizer_state))
        return {"weights": self.get_weights(), "optimizer": optimizer_state,
                "iteration": self.iteration, "env_steps_lifetime": self.env_steps_lifetime,
                "episodes": self._episodes, "returns": list(self._returns),
                "lengths": list(self._lengths), "time_total_s": self.time_total_s,
                "kl_coeff": self.kl_coeff}

    def _set_state(self, state: dict[str, Any]) -> None:
        if not self.runners:
            raise RuntimeError("this PPO has been stopped; build a new one")
        self.learner_group.execute(_learner.learner_set_state, state["weights"],
                                   state["optimizer"])
        self._sync_weights()
        self.iteration = state["iteration"]
        self.env_steps_lifetime = state["env_steps_lifetime"]
        # older checkpoints lack these two
        self.time_total_s = state.get("time_total_s", 0.0)
        self.kl_coeff = state.get("kl_coeff", self.config.kl_coeff)
        self._episodes = state["episodes"]
        self._returns.clear()
        self._returns.extend(state["returns"])
        self._lengths.clear()
        self._lengths.extend(state["lengths"])
