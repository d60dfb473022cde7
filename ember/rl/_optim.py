"""Adam for the learners, written out instead of ``torch.optim.Adam``.

The update is the same as torch's (Kingma and Ba, with torch's placement of ``eps`` after the
bias-corrected square root); the reason for the copy is start-up: the first ``torch.optim``
optimizer a process builds loads ``torch._dynamo``, about as much CPU as importing torch itself,
and a learner's start-up is on the path to PPO's first iteration.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


class Adam:
    """``p -= lr * m_hat / (sqrt(v_hat) + eps)`` for every parameter with a gradient.

    One step count serves all parameters (torch keeps one per parameter): the same thing here,
    where the learner gives every parameter a gradient at every step."""

    def __init__(self, params: Iterable[torch.Tensor], *, lr: float, betas: tuple[float, float]
                 = (0.9, 0.999), eps: float = 1e-8) -> None:
        import torch

        self.params = list(params)
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.steps = 0
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def step(self) -> None:
        import torch

        self.steps += 1
        correction1 = 1 - self.beta1 ** self.steps
        correction2_sqrt = math.sqrt(1 - self.beta2 ** self.steps)
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        params = [self.params[i] for i in live]
        grads = [g for p in params if (g := p.grad) is not None]
        exp_avg = [self.exp_avg[i] for i in live]
        exp_avg_sq = [self.exp_avg_sq[i] for i in live]
        with torch.no_grad():
            # one call per formula for all parameters (torch.optim's "foreach" path): for small
            # models the per-tensor call overhead is most of the optimizer's time
            torch._foreach_lerp_(exp_avg, grads, 1 - self.beta1)
            torch._foreach_mul_(exp_avg_sq, self.beta2)
            torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - self.beta2)
            denom = torch._foreach_sqrt(exp_avg_sq)
            torch._foreach_div_(denom, correction2_sqrt)
            torch._foreach_add_(denom, self.eps)
            torch._foreach_addcdiv_(params, exp_avg, denom, value=-self.lr / correction1)

    def zero_grad(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        """Plain numpy arrays (a checkpoint needs no torch to be read)."""
        return {"steps": self.steps,
                "exp_avg": [m.detach().cpu().numpy().copy() for m in self.exp_avg],
                "exp_avg_sq": [v.detach().cpu().numpy().copy() for v in self.exp_avg_sq]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import torch

        for key in ("exp_avg", "exp_avg_sq"):
            if len(state[key]) != len(self.params):
                raise ValueError(f"optimizer state has {len(state[key])} {key} tensors but the "
                                 f"model has {len(self.params)} parameters; it belongs to "
                                 "another model")
        self.steps = int(state["steps"])
        for p, m, v, m_new, v_new in zip(self.params, self.exp_avg, self.exp_avg_sq,
                                         state["exp_avg"], state["exp_avg_sq"], strict=True):
            m.copy_(torch.as_tensor(np.asarray(m_new), device=p.device))
            v.copy_(torch.as_tensor(np.asarray(v_new), device=p.device))
