"""How a batch is split among learners of different speeds: pure, no torch.

A learner with weight ``w`` gets ``w / sum(weights)`` of each batch, rounded to whole samples by
the largest-remainder rule, so the shares always add up to the batch and each one is within one
sample of its exact quota::

    split_by_weights(10, [1, 3])  # [3, 7]  (quotas 2.5 and 7.5: the tie goes to the first)
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def check_weights(weights: Sequence[float]) -> list[float]:
    """The weights as floats, or a ``ValueError`` that names the bad one."""
    if not weights:
        raise ValueError("learner_weights is empty; give one positive weight per learner")
    checked = []
    for index, weight in enumerate(weights):
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
                or not math.isfinite(weight) or weight <= 0:
            raise ValueError(
                f"learner_weights[{index}]={weight!r} must be a finite number > 0 "
                "(a learner's relative speed, e.g. (1, 3) for a GPU three times as fast)"
            )
        checked.append(float(weight))
    return checked


def split_by_weights(total: int, weights: Sequence[float]) -> list[int]:
    """Whole-sample shares of ``total`` in proportion to ``weights``; they sum to ``total``.

    Largest remainder: every share gets the floor of its quota, then the samples left over go
    one each to the largest fractional parts (ties to the lower index).
    """
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise ValueError(f"total={total!r} must be an integer >= 0")
    checked = check_weights(weights)
    weight_sum = math.fsum(checked)
    quotas = [total * w / weight_sum for w in checked]
    shares = [math.floor(q) for q in quotas]
    left = total - sum(shares)
    by_remainder = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - shares[i]), i))
    for i in by_remainder[:left]:
        shares[i] += 1
    return shares


def offsets(shares: Sequence[int]) -> list[tuple[int, int]]:
    """The ``[start, stop)`` slice of the batch each share covers, in order."""
    bounds = []
    start = 0
    for share in shares:
        bounds.append((start, start + share))
        start += share
    return bounds


def gradient_scales(local_sizes: Sequence[int]) -> list[float]:
    """What each learner multiplies its mean-loss gradient by before a SUM all-reduce.

    A learner whose loss is the mean over its ``n_i`` samples has gradient
    ``g_i = (1/n_i) sum_j grad l_j``; the gradient of the mean over all ``N = sum n_i`` samples is
    ``sum_i (n_i / N) g_i``. So the scale is ``n_i / N`` (zero for a learner with no samples).
    """
    if any(n < 0 for n in local_sizes):
        raise ValueError(f"local sizes {list(local_sizes)} must all be >= 0")
    total = sum(local_sizes)
    if total == 0:
        raise ValueError("every learner got zero samples; the minibatch is empty")
    return [n / total for n in local_sizes]


def deal(sizes: Sequence[int], num_parts: int) -> list[list[int]]:
    """How many samples of each learner's shard go into each of ``num_parts`` minibatches.

    ``counts[r][j]``: learner ``r`` puts ``sizes[r] // num_parts`` samples into every minibatch,
    and its remaining ``sizes[r] % num_parts`` one each into consecutive minibatches, starting
    where the previous learner's left off (wrapping around). So each learner's counts add up to
    its shard and are within one of its even quota, and the minibatches' sizes are within one of
    each other (none is empty while the batch has at least ``num_parts`` samples)::

        deal([3, 7, 11], 4)  # [[1, 1, 1, 0], [2, 2, 1, 2], [3, 2, 3, 3]]: minibatches 6, 5, 5, 5
    """
    if isinstance(num_parts, bool) or not isinstance(num_parts, int) or num_parts < 1:
        raise ValueError(f"num_parts={num_parts!r} must be an integer >= 1")
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in sizes):
        raise ValueError(f"sizes {list(sizes)} must all be integers >= 0")
    counts = []
    start = 0
    for size in sizes:
        base, extra = divmod(size, num_parts)
        row = [base] * num_parts
        for i in range(extra):
            row[(start + i) % num_parts] += 1
        start = (start + extra) % num_parts
        counts.append(row)
    return counts
