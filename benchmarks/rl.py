"""RL benchmark: ember.rl's PPO beside RLlib's on CartPole-v1, with matched hyperparameters.

Run it from the repository root (``make bench`` does this)::

    .venv/bin/python benchmarks/rl.py              # full run: 3-4 min on 2 busy CPUs (~20 if
                                                   # both frameworks run into the 5-min cap)
    .venv/bin/python benchmarks/rl.py --quick      # smoke run: return 150, 2-min cap
    .venv/bin/python benchmarks/rl.py --json benchmarks/rl.json   # also write the rows

Two workloads, each framework in its own child process, one after the other (so that on a small
machine they never compete for cores); Ray gets ``ray.init(num_cpus=2, include_dashboard=False)``,
ember ``ember.init(num_cpus=2)``:

- time to a mean return of 450: wall-clock seconds from spawning the child process
  (interpreter start-up, imports, ``init``, building the algorithm and every iteration's
  sampling and learning included) until, after a ``train()`` call, the last 100 episodes to end
  have a mean return of 450 or more; capped at ``--cap`` seconds, past which the row says "not
  reached" with the return it got to. The env steps it took are reported beside it. The mean is
  the benchmark's own, the same for both: the env (CartPole-v1 in a wrapper) logs each episode's
  return, because the frameworks' reported means are different statistics (ember's is over the
  last 100 episodes; RLlib 2.60's ``episode_return_mean``, although configured for 100 episodes,
  swings from iteration to iteration like a mean over far fewer). Both are printed below the
  table.
- sampling throughput: env steps per second of the sampling phase of a training iteration (every
  runner steps its envs with the current policy until one train batch is collected and the
  pieces are back in the driver), with 1 and 2 env runners, median of several batches after a
  warm-up one.

- learner update: milliseconds for the learner(s) to update on one train batch (``num_epochs``
  passes in minibatches), as the driver sees it, median of several batches.

The limit column (issue 20) is the same work with no framework, best of several rounds, in a
process of its own (``limits``): for sampling, one process stepping the same sub-envs (as a
gymnasium ``SyncVectorEnv``, and in a plain loop: the faster of the two) with the same numpy
policy (ember's ``NumpyMLPPolicy``, no runtime) and the same GAE until one runner's share of a
train batch is in (2 runners: twice that rate, one per core); for the learner update, the same PPO update of one train batch in a bare torch loop (the
same MLPs, ``torch.optim.Adam``, one thread). Targets: ember's sampling per runner at least 0.8x
the limit's, its learner update at most 1.1x the bare loop's time.

Matched settings (``SETTINGS`` below): the same separate policy and value MLPs (64, 64, tanh), lr,
gamma, lambda, clip, value-loss coefficient, entropy coefficient, gradient clipping by global norm,
train batch, minibatch, epochs, number of env runners and sub-envs per runner, whole-batch
advantage normalisation. RLlib runs its default new API stack (EnvRunners, a LearnerGroup and
RLModules) with its KL penalty switched off and value-loss clipping disabled, since ember's PPO has
neither. The learner: ember has one learner actor (it always trains in a learner group); RLlib
gets ``num_learners=0``, its default, which trains in the driver process itself with no extra
actor: its fastest set-up on one machine; it gets one torch thread, like ember's 1-CPU learner
(with torch's default of a thread per core, its idle threads spin while the env runners need the
cores: several times the CPU per iteration on a busy machine). RLlib's env runners take their
default 1 CPU each, so 2 runners fill ``num_cpus=2``; ember's runners hold no CPU and its
learner holds one.

One seed per framework (seed 0; the two frameworks' random streams differ anyway): time to 450
varies from seed to seed, so read a single run's ratio as a rough one.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import importlib.util
import itertools
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from typing import Any

import _procs

RESULT_MARKER = "BENCH-RESULT "
TARGET_RETURN = 450.0
QUICK_TARGET_RETURN = 150.0
CAP_S = 300.0
QUICK_CAP_S = 120.0
THROUGHPUT_BATCHES = 5
QUICK_THROUGHPUT_BATCHES = 2
SPEEDUP_TARGET = 2.0  # ember reaches the return in at most half of RLlib's time

# One set of hyperparameters for both frameworks.
SETTINGS: dict[str, Any] = {
    "env": "CartPole-v1",
    "num_env_runners": 2,
    "num_envs_per_env_runner": 4,
    "hiddens": [64, 64],  # separate policy and value MLPs, tanh
    "lr": 3e-4,
    "gamma": 0.99,
    "lambda_": 0.95,
    "clip_param": 0.2,
    "vf_loss_coeff": 0.5,
    "entropy_coeff": 0.0,
    "grad_clip": 0.5,  # by global norm
    "train_batch_size": 2000,
    "minibatch_size": 250,
    "num_epochs": 10,
    "seed": 0,
}


# --------------------------------------------------------------------------------------------
# Inside a child process: one framework, one workload.


def make_logged_cartpole(log_dir: str) -> Any:
    """CartPole-v1 that appends ``time return`` to a file in ``log_dir`` at each episode's end.

    Both frameworks train on it, so "mean return of the last 100 episodes" is computed the same
    way for both, from the episodes themselves (``ReturnWindow``): their own reported means are
    not the same statistic (RLlib 2.60's ``episode_return_mean`` moves far more from iteration
    to iteration than a 100-episode mean can).
    """
    import gymnasium as gym

    class EpisodeLog(gym.Wrapper):  # type: ignore[type-arg]
        def __init__(self, env: Any) -> None:
            super().__init__(env)
            self.log = open(os.path.join(log_dir, f"{os.getpid()}-{id(self)}.log"), "a",  # noqa: SIM115
                            buffering=1)
            self.episode_return = 0.0

        def reset(self, **kwargs: Any) -> Any:
            self.episode_return = 0.0
            return self.env.reset(**kwargs)

        def step(self, action: Any) -> Any:
            obs, reward, terminated, truncated, info = self.env.step(action)
            self.episode_return += float(reward)
            if terminated or truncated:
                self.log.write(f"{time.time()!r} {self.episode_return!r}\n")
            return obs, reward, terminated, truncated, info

        def close(self) -> None:
            self.log.close()
            super().close()

    return EpisodeLog(gym.make(SETTINGS["env"]))


class ReturnWindow:
    """The mean return of the last ``size`` episodes to end, read from the env logs."""

    def __init__(self, log_dir: str, size: int = 100) -> None:
        self.log_dir = log_dir
        self.offsets: dict[str, int] = {}
        self.returns: collections.deque[float] = collections.deque(maxlen=size)

    def update(self) -> None:
        new: list[tuple[float, float]] = []
        for name in sorted(os.listdir(self.log_dir)):
            path = os.path.join(self.log_dir, name)
            with open(path) as f:
                f.seek(self.offsets.get(name, 0))
                text = f.read()
            complete = text[:text.rfind("\n") + 1]  # a line being written waits for next time
            self.offsets[name] = self.offsets.get(name, 0) + len(complete)
            new += [(float(t), float(r)) for t, r in
                    (line.split() for line in complete.splitlines())]
        self.returns.extend(r for _, r in sorted(new))

    def full(self) -> bool:
        return len(self.returns) == self.returns.maxlen

    def mean(self) -> float:
        return sum(self.returns) / len(self.returns) if self.returns else float("nan")


class Ember:
    name = "ember"

    def __init__(self) -> None:
        import ember

        self.ember = ember
        ember.init(num_cpus=2)

    def build(self, num_env_runners: int, log_dir: str | None = None) -> Any:
        from ember.rl import PPOConfig

        s = SETTINGS
        env: Any = s["env"]
        env_config = {}
        if log_dir is not None:
            env, env_config = make_logged_cartpole, {"log_dir": log_dir}
        config = (PPOConfig().environment(env, env_config=env_config)
                  .env_runners(num_env_runners,
                               num_envs_per_env_runner=s["num_envs_per_env_runner"])
                  .learners(1)
                  .training(lr=s["lr"], gamma=s["gamma"], lambda_=s["lambda_"],
                            clip_param=s["clip_param"], vf_loss_coeff=s["vf_loss_coeff"],
                            entropy_coeff=s["entropy_coeff"], grad_clip=s["grad_clip"],
                            train_batch_size=s["train_batch_size"],
                            minibatch_size=s["minibatch_size"], num_epochs=s["num_epochs"],
                            hiddens=s["hiddens"], normalize_advantages=True)
                  .debugging(seed=s["seed"]))
        return config.build()

    def train(self, algo: Any) -> tuple[float, int]:
        result = algo.train()
        return result["episode_return_mean"], result["num_env_steps_sampled_lifetime"]

    def sample(self, algo: Any) -> int:
        _, steps = algo._sample()  # exactly train()'s sampling phase
        return int(steps)

    def update_s(self, algo: Any) -> float:
        """Seconds of train()'s learner phase on one freshly sampled batch."""
        from ember.rl._math import normalize_advantages

        batch, _ = algo._sample()
        batch["advantages"] = normalize_advantages(batch["advantages"])
        start = time.perf_counter()
        algo._update_learners(batch)
        return time.perf_counter() - start

    def stop(self, algo: Any) -> None:
        algo.stop()

    def shutdown(self) -> None:
        self.ember.shutdown()


class RLlib:
    name = "rllib"

    def __init__(self) -> None:
        import ray

        self.ray = ray
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)

    def config(self, num_env_runners: int, log_dir: str | None) -> Any:
        from ray.rllib.algorithms.ppo import PPOConfig
        from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
        from ray.tune.registry import register_env

        s = SETTINGS
        env, env_config = s["env"], {}
        if log_dir is not None:
            register_env("LoggedCartPole", lambda cfg: make_logged_cartpole(cfg["log_dir"]))
            env, env_config = "LoggedCartPole", {"log_dir": log_dir}
        return (PPOConfig().environment(env, env_config=env_config)
                .env_runners(num_env_runners=num_env_runners,
                             num_envs_per_env_runner=s["num_envs_per_env_runner"])
                .learners(num_learners=0)
                .training(lr=s["lr"], gamma=s["gamma"], lambda_=s["lambda_"],
                          clip_param=s["clip_param"], vf_loss_coeff=s["vf_loss_coeff"],
                          entropy_coeff=s["entropy_coeff"], grad_clip=s["grad_clip"],
                          grad_clip_by="global_norm",
                          train_batch_size_per_learner=s["train_batch_size"],
                          minibatch_size=s["minibatch_size"], num_epochs=s["num_epochs"],
                          use_kl_loss=False, kl_coeff=0.0, vf_clip_param=float("inf"))
                .rl_module(model_config=DefaultModelConfig(
                    fcnet_hiddens=list(s["hiddens"]), fcnet_activation="tanh",
                    vf_share_layers=False))
                .reporting(metrics_num_episodes_for_smoothing=100)
                .debugging(seed=s["seed"]))

    def build(self, num_env_runners: int, log_dir: str | None = None) -> Any:
        import torch

        # The learner runs in this process (num_learners=0): one torch thread, as ember's
        # learner (1 CPU) has. With torch's default (one per core) its idle threads spin while
        # the env runners need the cores: 3-6 s of CPU per iteration instead of 0.3 s here.
        torch.set_num_threads(1)
        return self.config(num_env_runners, log_dir).build_algo()

    def train(self, algo: Any) -> tuple[float, int]:
        result = algo.train()
        runners = result.get("env_runners", {})
        steps = result.get("num_env_steps_sampled_lifetime",
                           runners.get("num_env_steps_sampled_lifetime", 0))
        return float(runners.get("episode_return_mean", float("nan"))), int(steps)

    def sample(self, algo: Any) -> int:
        from ray.rllib.execution.rollout_ops import synchronous_parallel_sample

        # what PPO.training_step does to collect one train batch
        episodes = synchronous_parallel_sample(
            worker_set=algo.env_runner_group, max_env_steps=algo.config.total_train_batch_size,
            sample_timeout_s=algo.config.sample_timeout_s, _uses_new_env_runners=True)
        return sum(len(e) for e in episodes)

    def update_s(self, algo: Any) -> float:
        """Seconds of PPO.training_step's learner update on one freshly sampled batch."""
        from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
        from ray.rllib.utils.metrics import (
            NUM_ENV_STEPS_SAMPLED_LIFETIME,
            NUM_MODULE_STEPS_TRAINED_LIFETIME,
        )

        cfg = algo.config
        episodes: Any = synchronous_parallel_sample(
            worker_set=algo.env_runner_group, max_env_steps=cfg.total_train_batch_size,
            sample_timeout_s=cfg.sample_timeout_s, _uses_new_env_runners=True)
        steps = sum(len(e) for e in episodes)
        start = time.perf_counter()
        algo.learner_group.update(
            episodes=episodes,
            timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: steps,
                       NUM_MODULE_STEPS_TRAINED_LIFETIME: 0},
            num_epochs=cfg.num_epochs, minibatch_size=cfg.minibatch_size,
            shuffle_batch_per_epoch=cfg.shuffle_batch_per_epoch)
        return time.perf_counter() - start

    def stop(self, algo: Any) -> None:
        algo.stop()

    def shutdown(self) -> None:
        self.ray.shutdown()


FRAMEWORKS = {"ember": Ember, "rllib": RLlib}
REQUIRES = {"ember": ("ember.rl",), "rllib": ("ray.rllib", "tree")}


def solve(framework: str, spawned: float, target: float, cap_s: float) -> dict[str, Any]:
    """Train until the last 100 episodes' mean return reaches ``target`` or ``cap_s`` have passed
    since spawn.

    After each iteration the result so far goes to stdout, so that a parent that has to kill
    a child stuck in a long iteration still gets a "not reached" with the return it got to."""
    log_dir = tempfile.mkdtemp(prefix=f"rl-bench-{framework}-")
    window = ReturnWindow(log_dir)
    fw = FRAMEWORKS[framework]()
    algo = fw.build(SETTINGS["num_env_runners"], log_dir)
    result: dict[str, Any] = {"reached_s": None, "startup_s": time.time() - spawned,
                              "env_steps": 0, "iterations": 0, "final_return": None,
                              "curve": [], "own_curve": []}
    try:
        while time.time() - spawned < cap_s:
            own, steps = fw.train(algo)
            window.update()
            ret = window.mean()
            result["curve"].append(round(ret, 1))
            result["own_curve"].append(round(own, 1))
            result.update(env_steps=steps, iterations=len(result["curve"]),
                          final_return=round(ret, 1))
            if window.full() and ret >= target:
                result["reached_s"] = time.time() - spawned
            print(RESULT_MARKER + json.dumps(result), flush=True)
            if result["reached_s"] is not None:
                break
    finally:
        fw.stop(algo)
        fw.shutdown()
        shutil.rmtree(log_dir, ignore_errors=True)
    return result


def throughput(framework: str, batches: int) -> dict[str, Any]:
    """Sampling-phase env steps/s with 1 and 2 env runners (median over ``batches``)."""
    fw = FRAMEWORKS[framework]()
    out: dict[str, Any] = {}
    try:
        for runners in (1, 2):
            algo = fw.build(runners)
            try:
                fw.sample(algo)  # warm-up: first calls, lazy imports, caches
                rates = []
                for _ in range(batches):
                    start = time.perf_counter()
                    steps = fw.sample(algo)
                    rates.append(steps / (time.perf_counter() - start))
                out[f"runners_{runners}"] = {"median": statistics.median(rates), "runs": rates}
                if runners == 1:
                    out["learner_update"] = learner_updates(fw, algo, batches)
            finally:
                fw.stop(algo)
    finally:
        fw.shutdown()
    return out


def learner_updates(fw: Any, algo: Any, batches: int) -> dict[str, Any]:
    """The learner phase's seconds on ``batches`` fresh batches (median), after a warm-up."""
    try:
        fw.update_s(algo)
        updates = [fw.update_s(algo) for _ in range(batches)]
    except Exception as exc:  # the sampling numbers still count: report this row as failed
        return {"error": repr(exc)[-600:]}
    return {"median": statistics.median(updates), "runs": updates}


# --------------------------------------------------------------------------------------------
# The limits: the same work in one process with no framework.

LIMIT_ROUNDS = 5


def _random_mlp_weights(obs_dim: int, num_actions: int, rng: Any) -> dict[str, Any]:
    """Weights in ``MLPModel``'s state-dict layout (``pi|vf.<i>.weight|bias``); values do not
    change the arithmetic."""
    import numpy as np

    weights = {}
    for head, out in (("pi", num_actions), ("vf", 1)):
        sizes = [obs_dim, *SETTINGS["hiddens"], out]
        for layer, (a, b) in enumerate(itertools.pairwise(sizes)):
            weights[f"{head}.{2 * layer}.weight"] = rng.normal(0, 0.1, (b, a)).astype(np.float32)
            weights[f"{head}.{2 * layer}.bias"] = np.zeros(b, np.float32)
    return weights


class _VectorEnvs:
    """The sub-envs as a gymnasium ``SyncVectorEnv`` (same-step autoreset, as ember's runner)."""

    def __init__(self, n: int, seed: int) -> None:
        import gymnasium as gym

        self.envs: Any = gym.make_vec(
            SETTINGS["env"], num_envs=n, vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
        self.obs = self.envs.reset(seed=seed)[0]

    def step(self, actions: Any) -> tuple[Any, ...]:
        """(next observations, rewards, terminateds, truncateds, {i: final obs if truncated})"""
        import numpy as np

        obs, rewards, terminateds, truncateds, info = self.envs.step(actions)
        finals = {i: info["final_obs"][i] for i in np.flatnonzero(truncateds)}
        return obs, rewards, terminateds, truncateds, finals


class _LoopEnvs:
    """The same sub-envs stepped one by one in a plain loop, reset within the step."""

    def __init__(self, n: int, seed: int) -> None:
        import gymnasium as gym
        import numpy as np

        self.envs = [gym.make(SETTINGS["env"]) for _ in range(n)]
        self.obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(self.envs)])

    def step(self, actions: Any) -> tuple[Any, ...]:
        import numpy as np

        n = len(self.envs)
        obs = np.empty_like(self.obs)
        rewards = np.zeros(n, np.float32)
        terminateds, truncateds = np.zeros(n, bool), np.zeros(n, bool)
        finals = {}
        for i, env in enumerate(self.envs):
            o, rewards[i], terminateds[i], truncateds[i], _ = env.step(int(actions[i]))
            if terminateds[i] or truncateds[i]:
                if truncateds[i]:
                    finals[i] = o
                o, _ = env.reset()
            obs[i] = o
        return obs, rewards, terminateds, truncateds, finals


def sampling_limit(rounds: int) -> dict[str, Any]:
    """Env steps/s of one process sampling one runner's share of a train batch with the same
    numpy policy and the same GAE, no framework: the sub-envs as a gymnasium SyncVectorEnv and
    in a plain loop (cheaper for CartPole: the vector wrapper's bookkeeping costs more than the
    env); the best round of either is the limit."""
    import numpy as np

    from ember.rl._math import compute_gae, next_values
    from ember.rl._numpy_policy import NumpyMLPPolicy

    n = SETTINGS["num_envs_per_env_runner"]
    steps = -(-SETTINGS["train_batch_size"] // n)  # one runner's fragment: the whole batch
    rng = np.random.default_rng(SETTINGS["seed"])
    out: dict[str, Any] = {}
    for name, kind in (("vector", _VectorEnvs), ("loop", _LoopEnvs)):
        envs = kind(n, SETTINGS["seed"])
        policy = NumpyMLPPolicy(_random_mlp_weights(int(np.prod(envs.obs.shape[1:])), 2, rng))

        def sample(envs: Any = envs, policy: Any = policy) -> int:
            obs = envs.obs
            obs_buf = np.zeros((steps, n, *obs.shape[1:]), dtype=obs.dtype)
            actions = np.zeros((steps, n), dtype=np.int64)
            logps = np.zeros((steps, n), dtype=np.float32)
            values = np.zeros((steps, n), dtype=np.float32)
            rewards = np.zeros((steps, n), dtype=np.float32)
            terminateds = np.zeros((steps, n), dtype=bool)
            truncateds = np.zeros((steps, n), dtype=bool)
            final_values = np.zeros((steps, n), dtype=np.float32)
            for t in range(steps):
                obs_buf[t] = obs
                actions[t], logps[t], values[t] = policy.act(obs, rng)
                obs, rewards[t], terminateds[t], truncateds[t], finals = envs.step(actions[t])
                if finals:  # bootstrap from the final observations of truncated episodes
                    ended = list(finals)
                    final_values[t, ended] = policy.values(np.stack([finals[i] for i in ended]))
            envs.obs = obs
            nxt = next_values(values, policy.values(obs), truncateds, final_values)
            compute_gae(rewards, values, nxt, terminateds, truncateds, gamma=SETTINGS["gamma"],
                        lambda_=SETTINGS["lambda_"])
            return steps * n

        sample()  # warm-up
        rates = []
        for _ in range(rounds):
            start = time.perf_counter()
            done = sample()
            rates.append(done / (time.perf_counter() - start))
        out[name] = {"best": max(rates), "rounds": rates}
    return {"best": max(part["best"] for part in out.values()), **out}


def learner_update_limit(rounds: int) -> dict[str, Any]:
    """Seconds of PPO's update on one train batch in a bare torch loop, one thread: the same
    MLPs, clipped loss, global-norm clipping and Adam; best of ``rounds``."""
    import torch
    from torch import nn

    torch.set_num_threads(1)  # as ember's 1-CPU learner
    torch.manual_seed(SETTINGS["seed"])
    s = SETTINGS
    obs_dim, num_actions, size = 4, 2, s["train_batch_size"]  # CartPole-v1

    def mlp(out: int) -> nn.Sequential:
        sizes = [obs_dim, *s["hiddens"]]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            layers += [nn.Linear(a, b), nn.Tanh()]
        return nn.Sequential(*layers, nn.Linear(sizes[-1], out))

    pi, vf = mlp(num_actions), mlp(1)
    params = [*pi.parameters(), *vf.parameters()]
    optimizer = torch.optim.Adam(params, lr=s["lr"], eps=1e-5, foreach=True)
    obs = torch.randn(size, obs_dim)
    actions = torch.randint(0, num_actions, (size,))
    old_logp = torch.full((size,), -0.69)
    advantages = torch.randn(size)
    targets = torch.randn(size)

    def update() -> None:
        for _ in range(s["num_epochs"]):
            for index in torch.randperm(size).split(s["minibatch_size"]):
                log_probs = torch.log_softmax(pi(obs[index]), dim=-1)
                logp = log_probs.gather(-1, actions[index].unsqueeze(-1)).squeeze(-1)
                ratio = torch.exp(logp - old_logp[index])
                adv = advantages[index]
                policy_loss = -torch.min(
                    ratio * adv, ratio.clamp(1 - s["clip_param"], 1 + s["clip_param"]) * adv
                ).mean()
                value_loss = (vf(obs[index]).squeeze(-1) - targets[index]).pow(2).mean()
                entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
                loss = (policy_loss + s["vf_loss_coeff"] * value_loss
                        - s["entropy_coeff"] * entropy)
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(params, s["grad_clip"])
                optimizer.step()

    update()  # warm-up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        update()
        times.append(time.perf_counter() - start)
    return {"best": min(times), "rounds": times}


def limits(rounds: int) -> dict[str, Any]:
    return {"sampling": sampling_limit(rounds), "learner_update": learner_update_limit(rounds)}


# --------------------------------------------------------------------------------------------
# The parent: runs every child, one at a time, and prints the table.

BUSY: list[str] = []


def _run_child(args: list[str], what: str, timeout_s: float) -> tuple[Any, str]:
    """Run ``rl.py --child ARGS`` and return (its last reported value or None, its stderr)."""
    _procs.wait_for_quiet_cpus(what, BUSY, threshold_pct=25)
    print(f"[benchmark] {what} ...", file=sys.stderr, flush=True)
    spawned = time.time()
    stdout, stderr, code = _procs.run_child(
        [__file__, "--child", *args, "--spawned", repr(spawned)], timeout_s)
    killed = code in (-signal.SIGKILL, -signal.SIGTERM)
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            value = json.loads(line[len(RESULT_MARKER):])
            if killed and isinstance(value, dict):
                value["killed_after_s"] = timeout_s  # its last report before it was stopped
            return value, stderr
    return None, f"exit code {code}\n{stdout[-2000:]}\n{stderr[-4000:]}"


def available(framework: str) -> bool:
    for name in REQUIRES[framework]:
        try:
            if importlib.util.find_spec(name) is None:
                return False
        except ImportError:
            return False
    return True


def _version(module: str) -> str:
    try:
        return str(importlib.import_module(module).__version__)
    except Exception:
        return "not installed"


def build_rows(results: dict[str, dict[str, Any]], target: float, cap_s: float
               ) -> list[dict[str, Any]]:
    def get(name: str, *path: str) -> Any:
        node: Any = results.get(name)
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    rows: list[dict[str, Any]] = []
    ember_s, ray_s = get("ember", "solve", "reached_s"), get("rllib", "solve", "reached_s")
    notes = []
    for name in ("ember", "rllib"):
        solved = get(name, "solve")
        if solved is None:
            notes.append(f"{name} failed")
        elif solved["reached_s"] is None:
            killed = (f"; killed {solved['killed_after_s']:.0f} s after spawn, mid-iteration"
                      if "killed_after_s" in solved else "")
            notes.append(f"{name} did not reach {target:.0f} within {cap_s:.0f} s (return "
                         f"{solved['final_return']} after {solved['env_steps']} env steps, "
                         f"{solved['iterations']} iterations{killed})")
    speedup = ray_s / ember_s if ember_s and ray_s else None
    if ember_s and ray_s is None and get("rllib", "solve") is not None:
        speedup_note = f"RLlib not reached: ember wins by > {cap_s / ember_s:.1f}x"
        notes.append(speedup_note)
    met = None
    if ember_s is None and get("ember", "solve") is not None:
        met = False
    elif speedup is not None:
        met = speedup >= SPEEDUP_TARGET
    elif ember_s and get("rllib", "solve") is not None:  # RLlib hit the cap
        met = cap_s / ember_s >= SPEEDUP_TARGET
    rows.append({"workload": f"CartPole-v1 to mean return {target:.0f}, wall-clock incl. "
                             "start-up", "unit": "s", "ember": ember_s, "ray": ray_s,
                 "better": "lower", "speedup": speedup,
                 "target": f"<= 1/{SPEEDUP_TARGET:.0f} of RLlib's time", "met": met,
                 "note": "; ".join(notes)})
    ember_steps, ray_steps = get("ember", "solve", "env_steps"), get("rllib", "solve",
                                                                     "env_steps")
    rows.append({"workload": f"env steps to mean return {target:.0f}", "unit": "steps",
                 "ember": ember_steps if ember_s else None,
                 "ray": ray_steps if ray_s else None, "better": "lower",
                 "speedup": ray_steps / ember_steps if ember_s and ray_s else None,
                 "target": None, "met": None,
                 "note": "matched hyperparameters: sample efficiency should be alike"})
    rows.append({"workload": "start-up: spawn to algorithm built", "unit": "s",
                 "ember": get("ember", "solve", "startup_s"),
                 "ray": get("rllib", "solve", "startup_s"), "better": "lower",
                 "speedup": None, "target": None, "met": None,
                 "note": "part of the first row"})
    su = rows[-1]
    if su["ember"] and su["ray"]:
        su["speedup"] = su["ray"] / su["ember"]
    sampling_limit = get("limit", "throughput", "sampling", "best")
    ways = [f"{way} {rate:,.0f}/s" for way in ("vector", "loop")
            if (rate := get("limit", "throughput", "sampling", way, "best")) is not None]
    how = ("limit: one process, the best of the sub-envs as a gymnasium SyncVectorEnv and in a "
           f"plain loop ({', '.join(ways)})") if ways else ""
    for runners in (1, 2):
        e = get("ember", "throughput", f"runners_{runners}", "median")
        r = get("rllib", "throughput", f"runners_{runners}", "median")
        rows.append({"workload": f"sampling, {runners} env runner{'s' if runners > 1 else ''} "
                                 f"x {SETTINGS['num_envs_per_env_runner']} envs",
                     "unit": "env steps/s", "ember": e, "ray": r, "better": "higher",
                     "speedup": e / r if e and r else None, "target": None, "met": None,
                     "note": how if runners == 1 else "limit: twice one process's rate (one "
                             "per core): the ratio is per runner",
                     "limit": None if sampling_limit is None else runners * sampling_limit,
                     "min_vs_limit": 0.8})
    e = get("ember", "throughput", "learner_update", "median")
    r = get("rllib", "throughput", "learner_update", "median")
    update_limit = get("limit", "throughput", "learner_update", "best")
    failed = [f"{name}: {error}" for name in ("ember", "rllib")
              if (error := get(name, "throughput", "learner_update", "error"))]
    rows.append({"workload": f"learner update, one train batch ({SETTINGS['train_batch_size']} "
                             f"samples x {SETTINGS['num_epochs']} epochs)",
                 "unit": "ms", "ember": None if e is None else 1e3 * e,
                 "ray": None if r is None else 1e3 * r, "better": "lower",
                 "speedup": r / e if e and r else None, "target": None, "met": None,
                 "note": "; ".join(["as the driver sees it, from the batch handed over to the "
                                    "learner's results back; limit: a bare torch loop", *failed]),
                 "limit": None if update_limit is None else 1e3 * update_limit,
                 "max_vs_limit": 1.1})
    return rows


def fmt(value: Any, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "s":
        return f"{value:.1f} s"
    if unit == "ms":
        return f"{value:.0f} ms"
    if unit == "steps":
        return f"{value:,.0f}"
    return f"{value:,.0f} /s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: return {QUICK_TARGET_RETURN:.0f}, "
                             f"{QUICK_CAP_S:.0f} s cap")
    parser.add_argument("--json", metavar="PATH", help="also write the rows here")
    parser.add_argument("--cap", type=float, help="seconds per framework to reach the return")
    parser.add_argument("--only", choices=[*sorted(FRAMEWORKS), "limit"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--only-throughput", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # framework, workload
    parser.add_argument("--spawned", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    target = QUICK_TARGET_RETURN if args.quick else TARGET_RETURN
    cap_s = args.cap or (QUICK_CAP_S if args.quick else CAP_S)
    batches = QUICK_THROUGHPUT_BATCHES if args.quick else THROUGHPUT_BATCHES

    if args.child:
        framework, workload = args.child
        if framework == "limit":
            value = limits(QUICK_THROUGHPUT_BATCHES if args.quick else LIMIT_ROUNDS)
        elif workload == "solve":
            value = solve(framework, args.spawned or time.time(), target, cap_s)
        else:
            value = throughput(framework, batches)
        print(RESULT_MARKER + json.dumps(value), flush=True)
        return 0

    names = [n for n in FRAMEWORKS if available(n) and (args.only in (None, n))]
    workloads = ("throughput",) if args.only_throughput else ("solve", "throughput")
    skipped = [n for n in FRAMEWORKS if n not in names]
    started = datetime.datetime.now().astimezone()
    results: dict[str, dict[str, Any]] = {name: {} for name in names}
    errors: list[str] = []
    # the cap is checked between iterations: allow start-up, one long iteration and shutdown
    for workload, timeout in (("solve", cap_s + 240), ("throughput", 600)):
        if workload not in workloads:
            continue
        for name in names:
            child = [name, workload, "--cap", repr(cap_s)] + (["--quick"] if args.quick else [])
            value, stderr = _run_child(child, f"{name} {workload}", timeout)
            if value is None:
                errors.append(f"{name} {workload} failed: {stderr}")
                print(f"[benchmark] {errors[-1]}", file=sys.stderr)
            else:
                results[name][workload] = value
    if args.only in (None, "limit"):
        value, stderr = _run_child(["limit", "throughput"] + (["--quick"] if args.quick else []),
                                   "limit (no framework)", 600)
        if value is None:
            errors.append(f"limit failed: {stderr}")
            print(f"[benchmark] {errors[-1]}", file=sys.stderr)
        else:
            results["limit"] = {"throughput": value}

    rows = build_rows(results, target, cap_s)
    machine = (f"{os.cpu_count()} CPUs, {platform.machine()}, Python "
               f"{platform.python_version()}, ray {_version('ray')}, "
               f"torch {_version('torch')}, gymnasium {_version('gymnasium')}")
    print(f"ember.rl vs RLlib PPO, {started:%Y-%m-%d %H:%M %Z}, {machine}"
          + (" (quick)" if args.quick else ""))
    if skipped:
        print(f"(skipped, not installed: {', '.join(skipped)})")
    print()
    from report import limit_verdict, merge_verdicts  # the report's own check of limit targets

    print("| workload | ember | RLlib | limit | ember speedup | ember / limit | target | met? "
          "| note |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        speedup = f"{row['speedup']:.2f}x" if row["speedup"] is not None else "—"
        ratio, limit_target, limit_met = limit_verdict(
            row["ember"], row.get("limit"), row.get("max_vs_limit"), row.get("min_vs_limit"))
        row_target, row_met = merge_verdicts(row["target"], row["met"], limit_target, limit_met)
        met = {None: "—", True: "yes", False: "**no**"}[row_met]
        print(f"| {row['workload']} | {fmt(row['ember'], row['unit'])} "
              f"| {fmt(row['ray'], row['unit'])} | {fmt(row.get('limit'), row['unit'])} "
              f"| {speedup} | {'—' if ratio is None else f'{ratio:.2f}x'} "
              f"| {row_target or '—'} | {met} | {row['note']} |")
    notes = [
        "settings (both): " + ", ".join(f"{k}={v}" for k, v in SETTINGS.items()),
        "ember: 1 learner actor, runners hold no CPU; RLlib: new API stack, num_learners=0 "
        "(learner in the driver, torch.set_num_threads(1) like ember's 1-CPU learner), "
        "1 CPU per env runner, use_kl_loss=False, vf_clip_param=inf; both with num_cpus=2",
        "mean return: of the last 100 episodes to end (over all env runners, logged by the env "
        "itself, the same for both); time from spawning the child process; "
        f"cap {cap_s:.0f} s; one seed each",
    ]
    for name in names:
        solved = results[name].get("solve")
        if solved:
            notes.append(f"{name}, mean return of the last 100 episodes / its own "
                         "episode_return_mean, at iterations 1, 6, 11, ... and the last: "
                         + ", ".join(f"{i + 1}: {a:.0f}/{b:.0f}" for i, (a, b) in
                                     enumerate(zip(solved["curve"], solved["own_curve"],
                                                   strict=True))
                                     if i % 5 == 0 or i == len(solved["curve"]) - 1))
    if BUSY:
        notes.append("warning: other processes kept the CPUs busy before: " + ", ".join(BUSY)
                     + "; those numbers may be noisy")
    notes += errors and [e.splitlines()[0] for e in errors]
    print()
    for note in notes:
        print(f"- {note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "rl", "date": started.isoformat(), "machine": machine,
                       "quick": args.quick, "rows": rows, "notes": notes,
                       "raw": results}, f, indent=2)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
