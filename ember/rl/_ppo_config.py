"""``PPOConfig``: a builder of frozen settings, shaped like RLlib's new API stack.

Each method returns a new config (the old one is unchanged), so configs can be shared safely::

    algo = (PPOConfig().environment("CartPole-v1")
            .env_runners(num_env_runners=2).learners(num_learners=2).training(lr=3e-4)
            .build())
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ember.rl._shares import check_weights

if TYPE_CHECKING:
    from ember.rl._ppo import PPO

EnvSpec = str | Callable[[], Any]


@dataclass(frozen=True)
class PPOConfig:
    """Settings for PPO; defaults follow RLlib's PPO except where noted."""

    env: EnvSpec | None = None
    env_config: dict[str, Any] = field(default_factory=dict)
    # env runners
    num_env_runners: int = 2
    num_envs_per_env_runner: int = 1
    rollout_fragment_length: int | str = "auto"
    # learners
    num_learners: int = 1
    num_gpus_per_learner: float = 0
    num_cpus_per_learner: float = 1
    learner_weights: tuple[float, ...] | None = None
    # training
    lr: float = 5e-5
    gamma: float = 0.99
    lambda_: float = 0.95
    clip_param: float = 0.2
    vf_loss_coeff: float = 1.0
    entropy_coeff: float = 0.0
    train_batch_size: int = 4000
    minibatch_size: int = 128
    num_epochs: int = 30
    grad_clip: float | None = None
    normalize_advantages: bool = True
    # model
    hiddens: tuple[int, ...] = (64, 64)
    seed: int | None = None

    def environment(self, env: EnvSpec, *, env_config: dict[str, Any] | None = None
                    ) -> PPOConfig:
        """A gymnasium id (``"CartPole-v1"``, ``"ALE/Breakout-v5"``) or a function that returns
        an env (called with ``**env_config`` in each env runner)."""
        if not (isinstance(env, str) or callable(env)):
            raise ValueError(
                f"env={env!r} must be a gymnasium id such as 'CartPole-v1' or a function that "
                "returns a gymnasium.Env"
            )
        return self._replace(env=env, env_config=dict(env_config or {}))

    def env_runners(self, num_env_runners: int | None = None, *,
                    num_envs_per_env_runner: int | None = None,
                    rollout_fragment_length: int | str | None = None) -> PPOConfig:
        """How experience is sampled: ``num_env_runners`` actors, each stepping
        ``num_envs_per_env_runner`` sub-envs, ``rollout_fragment_length`` steps per sub-env per
        round (``"auto"``: one train batch spread evenly).

        >>> config = PPOConfig().environment("CartPole-v1").env_runners(
        ...     4, num_envs_per_env_runner=8)
        >>> config.num_env_runners, config.fragment_length()
        (4, 125)
        """
        return self._replace(num_env_runners=num_env_runners,
                             num_envs_per_env_runner=num_envs_per_env_runner,
                             rollout_fragment_length=rollout_fragment_length)

    def learners(self, num_learners: int | None = None, *,
                 num_gpus_per_learner: float | None = None,
                 num_cpus_per_learner: float | None = None,
                 learner_weights: Sequence[float] | None = None) -> PPOConfig:
        """``learner_weights``: one relative speed per learner (``(1, 3)``: the second takes
        three quarters of each batch). ``None`` splits evenly."""
        weights = None if learner_weights is None else tuple(check_weights(learner_weights))
        return self._replace(num_learners=num_learners, num_gpus_per_learner=num_gpus_per_learner,
                             num_cpus_per_learner=num_cpus_per_learner, learner_weights=weights)

    def training(self, *, lr: float | None = None, gamma: float | None = None,
                 lambda_: float | None = None, clip_param: float | None = None,
                 vf_loss_coeff: float | None = None, entropy_coeff: float | None = None,
                 train_batch_size: int | None = None, minibatch_size: int | None = None,
                 num_epochs: int | None = None, grad_clip: float | None = None,
                 normalize_advantages: bool | None = None,
                 hiddens: Sequence[int] | None = None) -> PPOConfig:
        """PPO's settings: ``lr``, ``gamma``, ``lambda_`` (GAE), ``clip_param``, ``vf_loss_coeff``,
        ``entropy_coeff``, ``train_batch_size`` (env steps per iteration), ``minibatch_size``,
        ``num_epochs``, ``grad_clip``, ``normalize_advantages`` and the MLP's ``hiddens``; a
        setting left ``None`` keeps its value.

        >>> PPOConfig().training(lr=3e-4, train_batch_size=2000, minibatch_size=250).lr
        0.0003
        """
        return self._replace(
            lr=lr, gamma=gamma, lambda_=lambda_, clip_param=clip_param,
            vf_loss_coeff=vf_loss_coeff, entropy_coeff=entropy_coeff,
            train_batch_size=train_batch_size, minibatch_size=minibatch_size,
            num_epochs=num_epochs, grad_clip=grad_clip,
            normalize_advantages=normalize_advantages,
            hiddens=None if hiddens is None else tuple(hiddens),
        )

    def debugging(self, *, seed: int | None = None) -> PPOConfig:
        """``seed`` seeds the envs, the policy and the minibatch order, so runs repeat."""
        return self._replace(seed=seed)

    def build(self) -> PPO:
        """Start the env runners and the learner group (needs a running ember runtime, or
        starts one with defaults)."""
        from ember.rl._ppo import PPO

        return PPO(self)

    # -- checks ---------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad setting and how to fix it."""
        if self.env is None:
            raise ValueError("no environment: call .environment('CartPole-v1') (or a callable)")
        for name in ("num_env_runners", "num_envs_per_env_runner", "num_learners",
                     "train_batch_size", "minibatch_size", "num_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1")
        fragment = self.rollout_fragment_length
        if fragment != "auto" and (isinstance(fragment, bool) or not isinstance(fragment, int)
                                   or fragment < 1):
            raise ValueError(f"rollout_fragment_length={fragment!r} must be 'auto' or an "
                             "integer >= 1")
        if self.minibatch_size > self.train_batch_size:
            raise ValueError(f"minibatch_size={self.minibatch_size} must be <= "
                             f"train_batch_size={self.train_batch_size}")
        if self.learner_weights is not None and len(self.learner_weights) != self.num_learners:
            raise ValueError(
                f"learner_weights has {len(self.learner_weights)} entries but num_learners="
                f"{self.num_learners}; give one weight per learner"
            )
        for name in ("lr", "clip_param"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be > 0")
        for name in ("gamma", "lambda_"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must be in [0, 1]")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip={self.grad_clip!r} must be > 0 or None (no clipping)")

    def fragment_length(self) -> int:
        """Steps per sub-env per sampling round: ``"auto"`` spreads one train batch evenly."""
        if self.rollout_fragment_length != "auto":
            return int(self.rollout_fragment_length)
        envs = self.num_env_runners * self.num_envs_per_env_runner
        return max(1, -(-self.train_batch_size // envs))

    def weights(self) -> tuple[float, ...]:
        """The learners' relative speeds: ``learner_weights``, or ``1.0`` each."""
        return self.learner_weights or (1.0,) * self.num_learners

    def _replace(self, **changes: Any) -> PPOConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
