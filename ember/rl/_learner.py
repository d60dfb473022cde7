"""One learner: PPO updates on its share of each batch, gradients all-reduced across the group.

A learner with ``n_i`` of the minibatch's ``N`` samples scales its mean-loss gradient by
``n_i / N`` and the group SUM-reduces, so the step equals one learner's step on the whole
minibatch whatever the shares (``_shares.gradient_scales``). Gradient clipping and Adam run on the
reduced gradient, identically on every learner, so their weights stay equal.

The learner group runs these functions on the actors of an ``ember.util.WorkerGroup``; the
learner itself lives in this module's ``_LEARNER`` inside each worker process. Torch is imported
inside the functions, so the driver can hand them to the workers before it has loaded torch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ember.rl._math import ppo_loss
from ember.rl._optim import Adam
from ember.rl._ppo_config import PPOConfig
from ember.rl._shares import deal, gradient_scales, offsets

if TYPE_CHECKING:
    import torch

Weights = dict[str, np.ndarray]

BATCH_KEYS = ("obs", "actions", "logp", "values", "advantages", "value_targets")


def minibatch_plan(all_sizes: Sequence[int], minibatch_size: int, num_epochs: int,
                   seed: int) -> list[list[list[np.ndarray]]]:
    """Which samples of each learner's shard make up each minibatch of each epoch.

    ``plan[epoch][j][rank]`` indexes learner ``rank``'s shard: its part of minibatch ``j``. The
    batch (``sum(all_sizes)`` samples) gives ``max(1, total // minibatch_size)`` minibatches per
    epoch; every learner reshuffles its shard each epoch and deals it out over them
    (``_shares.deal``), so the minibatches' sizes are within one sample of each other (about
    ``minibatch_size``), every learner contributes in proportion to its shard, and each epoch
    covers every sample once. Minibatch ``j`` as a whole is the union
    of the parts: the group's step on it equals one learner's step on that union. Every learner
    computes the same plan from the same arguments (each rank's shuffle is seeded by
    ``(seed, rank)``); minibatches that would be empty on every learner are left out.
    """
    num_minibatches = max(1, sum(all_sizes) // minibatch_size)
    rngs = [np.random.default_rng([seed, rank]) for rank in range(len(all_sizes))]
    # minibatch j takes counts[r][j] samples of learner r's shard
    counts = deal(all_sizes, num_minibatches)
    plan = []
    for _ in range(num_epochs):
        orders = [rng.permutation(size) for rng, size in zip(rngs, all_sizes, strict=True)]
        bounds = [offsets(c) for c in counts]
        epoch = [[orders[r][slice(*bounds[r][j])] for r in range(len(all_sizes))]
                 for j in range(num_minibatches)]
        plan.append([parts for parts in epoch if any(len(part) for part in parts)])
    return plan


class Learner:
    def __init__(self, config: PPOConfig, observation_space: Any, action_space: Any,
                 weights: Weights, *, rank: int = 0, world_size: int = 1) -> None:
        import torch

        from ember.rl._models import build_model, set_weights

        self.config = config
        self.rank = rank
        self.world_size = world_size
        use_gpu = config.num_gpus_per_learner > 0 and torch.cuda.is_available()
        self.device = torch.device("cuda", 0) if use_gpu else torch.device("cpu")
        self.model = build_model(observation_space, action_space, config.hiddens)
        set_weights(self.model, weights)
        self.model.to(self.device)
        self.optimizer = Adam(self.model.parameters(), lr=config.lr, eps=1e-5)
        self.kl_coeff = config.kl_coeff

    def update(self, shard: dict[str, np.ndarray], all_sizes: list[int],
               seed: int, kl_coeff: float | None = None) -> dict[str, float]:
        """``num_epochs`` passes over this learner's shard in minibatches; ``all_sizes`` are
        every learner's shard sizes (the same list on each), which fix each minibatch's split.
        ``kl_coeff``: the KL penalty's current weight (``None``: the config's)."""
        import torch

        cfg = self.config
        self.kl_coeff = cfg.kl_coeff if kl_coeff is None else kl_coeff
        start = time.perf_counter()
        own = all_sizes[self.rank]
        if len(shard["actions"]) != own:
            raise ValueError(f"learner {self.rank} got {len(shard['actions'])} samples but its "
                             f"share is {own}")
        # a copy: the shard arrives read-only (zero-copy from the object store)
        data = {k: torch.tensor(shard[k], device=self.device) for k in BATCH_KEYS}
        totals: dict[str, float] = {}
        samples_seen = 0
        for epoch in minibatch_plan(all_sizes, cfg.minibatch_size, cfg.num_epochs, seed):
            for parts in epoch:
                sizes = [len(part) for part in parts]
                index = torch.as_tensor(parts[self.rank], device=self.device)
                terms = self._step(data, index, gradient_scales(sizes)[self.rank])
                if terms is not None:
                    for key, value in terms.items():
                        totals[key] = totals.get(key, 0.0) + value * sizes[self.rank]
                    samples_seen += sizes[self.rank]
        metrics = {k: v / max(1, samples_seen) for k, v in totals.items()}
        metrics["num_samples"] = float(own)
        metrics["learner_time_s"] = time.perf_counter() - start
        return metrics

    def _step(self, data: dict[str, torch.Tensor], index: torch.Tensor,
              scale: float) -> dict[str, float] | None:
        import torch

        cfg = self.config
        self.optimizer.zero_grad()
        terms = None
        if len(index):
            mb = {k: v[index] for k, v in data.items()}
            logits, values = self.model(mb["obs"])
            # the categorical distribution's log-probabilities and entropy, without
            # torch.distributions' argument checks (a measurable share of a small model's step)
            log_probs = torch.log_softmax(logits, dim=-1)
            logp = log_probs.gather(-1, mb["actions"].unsqueeze(-1)).squeeze(-1)
            entropy = -(log_probs.exp() * log_probs).sum(-1)
            loss = ppo_loss(logp, mb["logp"], mb["advantages"], values, mb["value_targets"],
                            entropy, clip_param=cfg.clip_param,
                            vf_loss_coeff=cfg.vf_loss_coeff, entropy_coeff=cfg.entropy_coeff,
                            vf_clip_param=cfg.vf_clip_param, kl_coeff=self.kl_coeff)
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
        from ember.rl._models import get_weights

        return get_weights(self.model)

    def set_state(self, weights: Weights, optimizer_state: dict[str, Any] | None) -> None:
        from ember.rl._models import set_weights

        set_weights(self.model, weights)
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)


# -- run inside the WorkerGroup's actors ------------------------------------------------------
_LEARNER: Learner | None = None


def warm_up() -> None:
    """Load what a learner needs (torch and torch.distributed: a second or more) so that
    ``PPO`` can have it done while the driver loads torch itself."""
    import torch.distributed  # noqa: F401  (loads torch too; setup_torch_distributed uses it)


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
                   seed: int, kl_coeff: float | None = None) -> dict[str, float]:
    return _learner().update(shard, all_sizes, seed, kl_coeff)


def learner_weights() -> Weights:
    return _learner().get_weights()


def learner_optimizer_state() -> dict[str, Any]:
    return _learner().optimizer.state_dict()


def learner_set_state(weights: Weights, optimizer_state: dict[str, Any] | None) -> None:
    _learner().set_state(weights, optimizer_state)
