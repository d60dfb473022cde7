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
import os
import time
from typing import Any

import cloudpickle
import numpy as np

import ember
from ember.errors import ActorDiedError, WorkerCrashedError
from ember.rl import _learner
from ember.rl._env_runner import EnvRunner, make_env
from ember.rl._math import normalize_advantages
from ember.rl._observe import IterationView
from ember.rl._ppo_config import PPOConfig
from ember.rl._shares import offsets, split_by_weights
from ember.util import WorkerGroup

CHECKPOINT_FILE = "ppo_state.pkl"
RETURN_WINDOW = 100  # episodes averaged into episode_return_mean, as RLlib's smoothing window
# A runner that dies is replaced; one that keeps dying (an env that crashes its process) is a bug
# to report rather than to loop on.
MAX_RUNNER_DEATHS_PER_ITERATION = 10

logger = logging.getLogger(__name__)


class PPO:
    """A running PPO algorithm; build it with ``PPOConfig(...).build()`` and ``stop()`` it (or
    use it as a context manager) to end its actors."""

    def __init__(self, config: PPOConfig) -> None:
        config.validate()
        self.config = config
        self.iteration = 0
        self.env_steps_lifetime = 0
        self._episodes = 0
        self._returns: collections.deque[float] = collections.deque(maxlen=RETURN_WINDOW)
        self._lengths: collections.deque[int] = collections.deque(maxlen=RETURN_WINDOW)
        self._rng = np.random.default_rng(config.seed)
        self.runners: list[Any] = []
        self.runner_restarts = 0
        self._runner_class = ember.remote(EnvRunner)
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
        batch, num_steps = self._sample()
        sampled = time.perf_counter()
        if cfg.normalize_advantages:
            batch["advantages"] = normalize_advantages(batch["advantages"])
        shares, learner_metrics = self._update_learners(batch)
        self._sync_weights()
        done = time.perf_counter()
        self.iteration += 1
        self.env_steps_lifetime += num_steps
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
        self._view.iteration(result)
        return result

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
                    shares, seed)
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

    # -- inference ----------------------------------------------------------------------------
    def compute_single_action(self, obs: Any, *, explore: bool = False) -> int:
        """The action for one observation: the most likely one, or a sample with
        ``explore=True``."""
        import torch

        with torch.no_grad():
            logits, _ = self.model(torch.tensor(np.asarray(obs))[None])
            if explore:
                return int(torch.distributions.Categorical(logits=logits).sample().item())
            return int(logits.argmax(-1).item())

    # -- checkpoints --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> str:
        """Write config, weights, optimizer state and counters to the directory ``path``."""
        os.makedirs(path, exist_ok=True)
        optimizer_state = ember.get(self.learner_group.execute_single_async(
            0, _learner.learner_optimizer_state))
        state = {"config": self.config, "weights": self.get_weights(),
                 "optimizer": optimizer_state, "iteration": self.iteration,
                 "env_steps_lifetime": self.env_steps_lifetime, "episodes": self._episodes,
                 "returns": list(self._returns), "lengths": list(self._lengths)}
        target = os.path.join(os.fspath(path), CHECKPOINT_FILE)
        with open(target + ".tmp", "wb") as file:
            cloudpickle.dump(state, file)
        os.replace(target + ".tmp", target)  # a crash mid-write leaves the old checkpoint
        return os.fspath(path)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str]) -> PPO:
        """A new PPO (new actors) that continues from a directory written by ``save``."""
        target = os.path.join(os.fspath(path), CHECKPOINT_FILE)
        if not os.path.exists(target):
            raise FileNotFoundError(f"no PPO checkpoint at {target!r}; pass the directory given "
                                    "to algo.save(path)")
        with open(target, "rb") as file:
            state = cloudpickle.load(file)
        algo = cls(state["config"])
        try:
            algo.learner_group.execute(_learner.learner_set_state, state["weights"],
                                       state["optimizer"])
            algo._sync_weights()
        except BaseException:
            algo.stop()
            raise
        algo.iteration = state["iteration"]
        algo.env_steps_lifetime = state["env_steps_lifetime"]
        algo._episodes = state["episodes"]
        algo._returns.extend(state["returns"])
        algo._lengths.extend(state["lengths"])
        return algo
