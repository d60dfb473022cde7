"""One learner: PPO updates on its share of each batch, gradients all-reduced across the group.

A learner with ``n_i`` of the minibatch's ``N`` samples scales its mean-loss gradient by
``n_i / N`` and the group SUM-reduces, so the step equals one learner's step on the whole
minibatch whatever the shares (``_shares.gradient_scales``). Gradient clipping and Adam run on the
reduced gradient, identically on every learner, so their weights stay equal.

The learner group runs these functions on the actors of an ``ember.train.WorkerGroup``; the
learner itself lives in this module's ``_LEARNER`` inside each worker process.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ember.rl._config import PPOConfig
from ember.rl._math import ppo_loss
from ember.rl._models import Weights, build_model, get_weights, set_weights
from ember.rl._shares import gradient_scales, offsets, split_by_weights

BATCH_KEYS = ("obs", "actions", "logp", "values", "advantages", "value_targets")


class Learner:
    def __init__(self, config: PPOConfig, observation_space: Any, action_space: Any,
                 weights: Weights, *, rank: int = 0, world_size: int = 1) -> None:
        self.config = config
        self.rank = rank
        self.world_size = world_size
        use_gpu = config.num_gpus_per_learner > 0 and torch.cuda.is_available()
        self.device = torch.device("cuda", 0) if use_gpu else torch.device("cpu")
        self.model = build_model(observation_space, action_space, config.hiddens)
        set_weights(self.model, weights)
        self.model.to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, eps=1e-5)

    def update(self, shard: dict[str, np.ndarray], all_sizes: list[int],
               seed: int) -> dict[str, float]:
        """``num_epochs`` passes over this learner's shard in minibatches; ``all_sizes`` are
        every learner's shard sizes (the same list on each), which fix each minibatch's split."""
        cfg = self.config
        start = time.perf_counter()
        own = all_sizes[self.rank]
        if len(shard["actions"]) != own:
            raise ValueError(f"learner {self.rank} got {len(shard['actions'])} samples but its "
                             f"share is {own}")
        # a copy: the shard arrives read-only (zero-copy from the object store)
        data = {k: torch.tensor(shard[k], device=self.device) for k in BATCH_KEYS}
        num_minibatches = max(1, sum(all_sizes) // cfg.minibatch_size)
        # minibatch j takes split[r][j] samples of learner r's shard
        split = [split_by_weights(size, [1.0] * num_minibatches) for size in all_sizes]
        rng = np.random.default_rng([seed, self.rank])
        totals: dict[str, float] = {}
        samples_seen = 0
        for _ in range(cfg.num_epochs):
            order = torch.as_tensor(rng.permutation(own), device=self.device)
            for j, (lo, hi) in enumerate(offsets(split[self.rank])):
                sizes = [split[r][j] for r in range(len(all_sizes))]
                if sum(sizes) == 0:
                    continue
                terms = self._step(data, order[lo:hi], gradient_scales(sizes)[self.rank])
                if terms is not None:
                    for key, value in terms.items():
                        totals[key] = totals.get(key, 0.0) + value * (hi - lo)
                    samples_seen += hi - lo
        metrics = {k: v / max(1, samples_seen) for k, v in totals.items()}
        metrics["num_samples"] = float(own)
        metrics["learner_time_s"] = time.perf_counter() - start
        return metrics

    def _step(self, data: dict[str, torch.Tensor], index: torch.Tensor,
              scale: float) -> dict[str, float] | None:
        cfg = self.config
        self.optimizer.zero_grad(set_to_none=False)
        terms = None
        if len(index):
            mb = {k: v[index] for k, v in data.items()}
            logits, values = self.model(mb["obs"])
            dist = torch.distributions.Categorical(logits=logits)
            loss = ppo_loss(dist.log_prob(mb["actions"]), mb["logp"], mb["advantages"], values,
                            mb["value_targets"], dist.entropy(), clip_param=cfg.clip_param,
                            vf_loss_coeff=cfg.vf_loss_coeff, entropy_coeff=cfg.entropy_coeff)
            (loss.total * scale).backward()
            terms = {"total_loss": loss.total.item(), "policy_loss": loss.policy.item(),
                     "vf_loss": loss.value.item(), "entropy": loss.entropy.item(),
                     "approx_kl": loss.approx_kl.item(), "clip_fraction": loss.clip_fraction.item()}
        params = [p for p in self.model.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:  # a learner with no samples still joins the all-reduce
                p.grad = torch.zeros_like(p)
        if self.world_size > 1:
            import torch.distributed as dist_

            flat = torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None])
            dist_.all_reduce(flat, op=dist_.ReduceOp.SUM)
            offset = 0
            for p in params:
                assert p.grad is not None
                p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
                offset += p.numel()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        self.optimizer.step()
        return terms

    def get_weights(self) -> Weights:
        return get_weights(self.model)

    def set_state(self, weights: Weights, optimizer_state: dict[str, Any] | None) -> None:
        set_weights(self.model, weights)
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)


# -- run inside the WorkerGroup's actors ------------------------------------------------------
_LEARNER: Learner | None = None


def setup_learner(config: PPOConfig, observation_space: Any, action_space: Any,
                  weights: Weights) -> None:
    import torch.distributed as dist

    global _LEARNER
    _LEARNER = Learner(config, observation_space, action_space, weights,
                       rank=dist.get_rank(), world_size=dist.get_world_size())


def _learner() -> Learner:
    if _LEARNER is None:
        raise RuntimeError("this worker has no learner; setup_learner must run first")
    return _LEARNER


def learner_update(shard: dict[str, np.ndarray], all_sizes: list[int],
                   seed: int) -> dict[str, float]:
    return _learner().update(shard, all_sizes, seed)


def learner_weights() -> Weights:
    return _learner().get_weights()


def learner_optimizer_state() -> dict[str, Any]:
    return _learner().optimizer.state_dict()


def learner_set_state(weights: Weights, optimizer_state: dict[str, Any] | None) -> None:
    _learner().set_state(weights, optimizer_state)
