"""PPO's math: GAE, advantage normalisation and the clipped loss. Pure functions, no processes.

Arrays are time-major ``[T, N]`` (``T`` steps of ``N`` vector sub-environments). Gymnasium's
vector envs run with ``autoreset_mode=SAME_STEP``, so step ``t`` of an env that ended its episode
is the episode's last step and step ``t + 1`` starts the next one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def next_values(values: np.ndarray, last_values: np.ndarray, truncateds: np.ndarray,
                final_values: np.ndarray) -> np.ndarray:
    """``V`` of the observation that follows each step within its own episode.

    That is ``values[t + 1]`` (``last_values`` after the last step), except where the episode was
    truncated at step ``t``: then the next observation of the vector env already belongs to a new
    episode and the bootstrap is the value of the episode's final observation, ``final_values[t]``.
    (Where an episode terminated the next value does not matter: the return ends there.)
    """
    following = np.concatenate([values[1:], last_values[None]], axis=0)
    return np.where(truncateds, final_values, following)


def compute_gae(rewards: np.ndarray, values: np.ndarray, next_vals: np.ndarray,
                terminateds: np.ndarray, truncateds: np.ndarray, *, gamma: float,
                lambda_: float) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimates and value targets, both ``[T, N]`` float32.

    ``delta_t = r_t + gamma * (1 - terminated_t) * next_vals_t - V_t`` and
    ``A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}``, where ``done`` is terminated or
    truncated: a truncated episode bootstraps from ``next_vals`` but its advantage does not leak
    into the next episode. The value target is ``A_t + V_t``.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    next_vals = np.asarray(next_vals, dtype=np.float64)
    terminated = np.asarray(terminateds, dtype=bool)
    done = terminated | np.asarray(truncateds, dtype=bool)
    if not (rewards.shape == values.shape == next_vals.shape == terminated.shape == done.shape):
        raise ValueError(
            f"GAE inputs must share one [T, N] shape; got rewards {rewards.shape}, values "
            f"{values.shape}, next values {next_vals.shape}, terminateds {terminated.shape}"
        )
    deltas = rewards + gamma * np.where(terminated, 0.0, next_vals) - values
    advantages = np.zeros_like(deltas)
    running = np.zeros(deltas.shape[1:], dtype=np.float64)
    for t in range(deltas.shape[0] - 1, -1, -1):
        running = deltas[t] + gamma * lambda_ * np.where(done[t], 0.0, running)
        advantages[t] = running
    return advantages.astype(np.float32), (advantages + values).astype(np.float32)


def normalize_advantages(advantages: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Zero mean and unit standard deviation over the whole batch (before it is split among
    learners, so that every learner normalises with the same statistics)."""
    advantages = np.asarray(advantages, dtype=np.float64)
    if advantages.size == 0:
        return advantages.astype(np.float32)
    centred = advantages - advantages.mean()
    normalized: np.ndarray = (centred / (advantages.std() + eps)).astype(np.float32)
    return normalized


@dataclass(frozen=True)
class LossTerms:
    """The pieces of PPO's loss; ``total`` is what is differentiated."""

    total: torch.Tensor
    policy: torch.Tensor
    value: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    clip_fraction: torch.Tensor


def explained_variance(targets: np.ndarray, predictions: np.ndarray) -> float:
    """``1 - Var(targets - predictions) / Var(targets)``: 1 for a perfect value function, 0 for
    one no better than the mean, negative for worse (RLlib's ``vf_explained_var``); ``nan`` when
    the targets do not vary."""
    targets = np.asarray(targets, dtype=np.float64)
    variance = targets.var()
    if targets.size == 0 or variance == 0:
        return float("nan")
    return float(1.0 - (targets - np.asarray(predictions, dtype=np.float64)).var() / variance)


def ppo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
             values: torch.Tensor, value_targets: torch.Tensor, entropy: torch.Tensor, *,
             clip_param: float, vf_loss_coeff: float, entropy_coeff: float,
             vf_clip_param: float | None = None, kl_coeff: float = 0.0) -> LossTerms:
    """The clipped surrogate objective plus value loss minus entropy bonus, each a sample mean.

    ``policy = -mean(min(r A, clip(r, 1 - eps, 1 + eps) A))`` with ``r = exp(logp - old_logp)``,
    ``value = mean(min((V - target)^2, vf_clip_param))`` (RLlib's clipping of each sample's
    squared error; no clipping when ``vf_clip_param`` is ``None``), ``total = policy +
    vf_loss_coeff * value - entropy_coeff * mean(entropy) + kl_coeff * kl``.

    ``kl`` estimates ``KL(old || new)`` from the sampled actions' log-probabilities,
    ``mean((r - 1) - log r)`` (Schulman's low-variance estimator, unbiased in value and gradient
    for actions drawn from the old policy); RLlib computes it from the full distributions.
    """
    import torch

    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1.0 - clip_param, 1.0 + clip_param)
    surrogate = torch.minimum(ratio * advantages, clipped * advantages)
    policy = -surrogate.mean()
    squared_error = (values - value_targets) ** 2
    if vf_clip_param is not None:
        squared_error = torch.clamp(squared_error, max=vf_clip_param)
    value = squared_error.mean()
    mean_entropy = entropy.mean()
    kl = ((ratio - 1) - (logp - old_logp)).mean()
    total = policy + vf_loss_coeff * value - entropy_coeff * mean_entropy
    if kl_coeff:
        total = total + kl_coeff * kl
    with torch.no_grad():
        clip_fraction = ((ratio - 1).abs() > clip_param).float().mean()
    return LossTerms(total=total, policy=policy, value=value, entropy=mean_entropy,
                     approx_kl=kl.detach(), clip_fraction=clip_fraction)


def adapt_kl_coeff(kl_coeff: float, kl: float, kl_target: float) -> float:
    """RLlib's adaptive KL weight, after each iteration: half as heavy when the measured KL was
    under half the target, 1.5 times when it was over twice the target, else unchanged (and
    unchanged when the KL could not be measured)."""
    if not math.isfinite(kl):
        return kl_coeff
    if kl > 2.0 * kl_target:
        return kl_coeff * 1.5
    if kl < 0.5 * kl_target:
        return kl_coeff * 0.5
    return kl_coeff
