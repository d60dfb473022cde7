"""``PPOConfig``: PPO's settings, set by builder methods shaped like RLlib's.

As in RLlib, each method sets its fields on the config it is called on and returns that config,
so chained and unchained calls mean the same::

    config = PPOConfig().environment("CartPole-v1").training(lr=3e-4)
    config = PPOConfig()
    config.environment("CartPole-v1")   # takes effect: no need to reassign
    config.training(lr=3e-4)

``copy()`` gives an independent config; ``freeze()`` makes one read-only (an algorithm's own
``algo.config`` is a frozen copy, so changing the config after ``build()`` changes nothing
behind the algorithm's back).

Ember's own names (``env_runners``, ``learners``, ``minibatch_size``, ``num_epochs``, the new
RLlib API stack's) and Ray 2.5's (``rollouts``, ``resources``, ``sgd_minibatch_size``,
``num_sgd_iter``, ``model={"fcnet_hiddens": ...}``, ``evaluation``, ``reporting``) set the same
fields. A 2.5 option that ember does not implement is accepted where its value changes nothing
(``batch_mode="truncate_episodes"``), and is otherwise refused with the alternative named.
"""

from __future__ import annotations

import copy as copy_module
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ember.rl._algorithm import AlgorithmConfig
from ember.rl._shares import check_weights

if TYPE_CHECKING:
    from ember.rl._ppo import PPO

EnvSpec = str | Callable[..., Any]

# Ray 2.5 options ember does not implement, but whose values listed here change nothing (the
# behaviour ember has): any other value is refused with the reason.
_ONLY_VALUES: dict[str, tuple[tuple[Any, ...], str]] = {
    # rollouts()
    "batch_mode": (("truncate_episodes",), "env runners always cut episodes at fragment "
                   "boundaries and bootstrap from the value function"),
    "sample_async": ((False,), "env runners sample synchronously"),
    "remote_worker_envs": ((False,), "sub-envs step inside their env runner"),
    "observation_filter": (("NoFilter",), "observations reach the model unfiltered; normalise "
                           "them in a gymnasium wrapper (gymnasium.wrappers.NormalizeObservation)"),
    # resources()
    "num_gpus_per_worker": ((0,), "env runners act on the CPU; give learners GPUs with "
                            "num_gpus_per_learner_worker= (or .learners(num_gpus_per_learner=))"),
    "custom_resources_per_worker": (({}, None), "env runners ask for CPUs only"),
    "local_gpu_idx": ((0,), "each learner uses the GPU its actor was given"),
    "_fake_gpus": ((False,), "ask for real GPUs"),
    # training()
    "use_critic": ((True,), "the value function is always trained"),
    "use_gae": ((True,), "advantages are always GAE(lambda_); lambda_=1.0 gives Monte Carlo "
                "returns"),
    "shuffle_sequences": ((True,), "each epoch reshuffles the batch"),
    "grad_clip_by": (("global_norm",), "grad_clip bounds the global norm"),
    "optimizer": (({}, None), "learners use Adam with lr="),
    "lr_schedule": ((None,), "lr is constant"),
    "entropy_coeff_schedule": ((None,), "entropy_coeff is constant"),
    "vf_share_layers": ((False,), "the policy and value MLPs are separate"),
    # reporting()
    "min_time_s_per_iteration": ((None, 0), "each train() call runs one iteration"),
    "min_sample_timesteps_per_iteration": ((None, 0), "each train() call samples "
                                           "train_batch_size steps"),
    "min_train_timesteps_per_iteration": ((None, 0), "each train() call trains on one batch"),
    # debugging()
    "fake_sampler": ((False,), "env runners step real envs"),
    "worker_cls": ((None,), "env runners are ember.rl's"),
    # evaluation()
    "evaluation_parallel_to_training": ((False,), "algo.evaluate() runs between iterations"),
    "custom_evaluation_function": ((None,), "call your function on algo after algo.evaluate()"),
    "enable_async_evaluation": ((False,), "algo.evaluate() runs between iterations"),
    "off_policy_estimation_methods": (({}, None), "evaluation steps envs with the policy"),
}
# Ray 2.5 options that only tune what ember does not have (TF sessions, connectors, logging
# back ends, timeouts of features ember lacks): accepted and ignored, whatever their value.
_IGNORED = frozenset({
    "create_env_on_local_worker", "enable_connectors", "sample_collector",
    "remote_env_batch_wait_ms", "validate_workers_after_construction", "preprocessor_pref",
    "synchronize_filter", "compress_observations", "enable_tf1_exec_eagerly",
    "sampler_perf_stats_ema_coef", "num_cpus_for_local_worker", "placement_strategy",
    "eager_tracing", "eager_max_retraces", "tf_session_args", "local_tf_session_args",
    "max_requests_in_flight_per_sampler_worker",
    "keep_per_episode_custom_metrics", "metrics_episode_collection_timeout_s",
    "logger_creator", "logger_config", "log_sys_usage", "evaluation_sample_timeout_s",
    "always_attach_evaluation_results", "ope_split_batch_by_episode",
})
# RLlib model-config keys ember reads (``fcnet_hiddens``, ``fcnet_activation``) and the other
# keys it accepts at RLlib's default value (the behaviour ember has).
_MODEL_DEFAULTS: dict[str, Any] = {
    "fcnet_activation": "tanh", "vf_share_layers": False, "free_log_std": False,
    "no_final_linear": False, "use_lstm": False, "use_attention": False,
    "framestack": True, "dim": 84, "grayscale": False, "zero_mean": True,
    "conv_filters": None, "conv_activation": "relu", "post_fcnet_hiddens": [],
    "max_seq_len": 20,
}


def _check_extra(method: str, options: Mapping[str, Any]) -> None:
    """Accept what ``_IGNORED`` and ``_ONLY_VALUES`` allow; refuse the rest, naming why."""
    for name, value in options.items():
        if name in _IGNORED:
            continue
        if name not in _ONLY_VALUES:
            raise TypeError(f"PPOConfig.{method}() got an unexpected keyword argument {name!r}")
        allowed, why = _ONLY_VALUES[name]
        if not any(value == a for a in allowed):
            shown = " or ".join(repr(a) for a in allowed)
            raise ValueError(f"{method}({name}={value!r}) is not supported by ember.rl: only "
                             f"{shown} ({why})")


@dataclass
class PPOConfig(AlgorithmConfig):
    """Settings for PPO; defaults follow RLlib's PPO except where noted."""

    env: EnvSpec | None = None
    env_config: dict[str, Any] = field(default_factory=dict)
    # env runners
    num_env_runners: int = 2
    num_envs_per_env_runner: int = 1
    rollout_fragment_length: int | str = "auto"
    num_cpus_per_env_runner: float = 0  # RLlib: 1; ember's runners share the learners' cores
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
    vf_clip_param: float | None = None  # RLlib: 10.0; None: the value loss is not clipped
    vf_loss_coeff: float = 1.0
    entropy_coeff: float = 0.0
    kl_coeff: float = 0.0  # RLlib: 0.2; 0: no KL penalty (the clipped objective alone)
    kl_target: float = 0.01
    train_batch_size: int = 4000
    minibatch_size: int = 128
    num_epochs: int = 30
    grad_clip: float | None = None
    normalize_advantages: bool = True
    # model
    hiddens: tuple[int, ...] = (64, 64)
    # evaluation
    evaluation_interval: int | None = None
    evaluation_duration: int = 10
    evaluation_duration_unit: str = "episodes"
    evaluation_num_env_runners: int = 0
    evaluation_explore: bool = True
    # reporting and debugging
    metrics_num_episodes_for_smoothing: int = 100
    seed: int | None = None
    log_level: str | None = None  # None: leave the "ember.rl" logger's level alone
    _frozen: bool = field(default=False, init=False, repr=False, compare=False)

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("_frozen"):
            raise dataclasses.FrozenInstanceError(
                f"cannot set {name!r}: this PPOConfig is frozen (an algorithm's config, or "
                "freeze() was called); change a copy: config.copy(copy_frozen=False)"
            )
        super().__setattr__(name, value)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A config pickled by an older ember (in a checkpoint) lacks the newer fields.
        defaults = {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING
                    else f.default for f in dataclasses.fields(self)}
        self.__dict__.update({**defaults, **state})

    # -- ember's builder methods (RLlib's new API stack) ------------------------------------------
    def environment(self, env: EnvSpec | None = None, *,
                    env_config: dict[str, Any] | None = None, **options: Any) -> PPOConfig:
        """A gymnasium id (``"CartPole-v1"``, ``"ALE/Breakout-v5"``) or a function that returns
        an env (called with ``**env_config`` in each env runner); ``env_config`` updates the
        current one."""
        if env is not None and not (isinstance(env, str) or callable(env)):
            raise ValueError(
                f"env={env!r} must be a gymnasium id such as 'CartPole-v1' or a function that "
                "returns a gymnasium.Env"
            )
        _check_environment_options(options)
        self._set(env=env)
        if env_config is not None:
            self._set(env_config={**self.env_config, **env_config})
        return self

    def env_runners(self, num_env_runners: int | None = None, *,
                    num_envs_per_env_runner: int | None = None,
                    rollout_fragment_length: int | str | None = None,
                    num_cpus_per_env_runner: float | None = None) -> PPOConfig:
        """How experience is sampled: ``num_env_runners`` actors (each holding
        ``num_cpus_per_env_runner`` CPUs), each stepping ``num_envs_per_env_runner`` sub-envs,
        ``rollout_fragment_length`` steps per sub-env per round (``"auto"``: one train batch
        spread evenly).

        >>> config = PPOConfig().environment("CartPole-v1").env_runners(
        ...     4, num_envs_per_env_runner=8)
        >>> config.num_env_runners, config.fragment_length()
        (4, 125)
        """
        return self._set(num_env_runners=num_env_runners,
                         num_envs_per_env_runner=num_envs_per_env_runner,
                         rollout_fragment_length=rollout_fragment_length,
                         num_cpus_per_env_runner=num_cpus_per_env_runner)

    def learners(self, num_learners: int | None = None, *,
                 num_gpus_per_learner: float | None = None,
                 num_cpus_per_learner: float | None = None,
                 learner_weights: Sequence[float] | None = None) -> PPOConfig:
        """``learner_weights``: one relative speed per learner (``(1, 3)``: the second takes
        three quarters of each batch). ``None`` splits evenly."""
        weights = None if learner_weights is None else tuple(check_weights(learner_weights))
        return self._set(num_learners=num_learners, num_gpus_per_learner=num_gpus_per_learner,
                         num_cpus_per_learner=num_cpus_per_learner, learner_weights=weights)

    def training(self, *, lr: float | None = None, gamma: float | None = None,
                 lambda_: float | None = None, clip_param: float | None = None,
                 vf_clip_param: float | None = None,
                 vf_loss_coeff: float | None = None, entropy_coeff: float | None = None,
                 kl_coeff: float | None = None, kl_target: float | None = None,
                 train_batch_size: int | None = None, minibatch_size: int | None = None,
                 num_epochs: int | None = None, grad_clip: float | None = None,
                 normalize_advantages: bool | None = None,
                 hiddens: Sequence[int] | None = None,
                 sgd_minibatch_size: int | None = None, num_sgd_iter: int | None = None,
                 model: Mapping[str, Any] | None = None, **options: Any) -> PPOConfig:
        """PPO's settings: ``lr``, ``gamma``, ``lambda_`` (GAE), ``clip_param``,
        ``vf_clip_param`` (bounds each sample's squared value error), ``vf_loss_coeff``,
        ``entropy_coeff``, ``kl_coeff`` (the initial weight of a KL penalty, adapted after each
        iteration towards ``kl_target`` as RLlib's; 0: none), ``train_batch_size`` (env steps per iteration), ``minibatch_size``,
        ``num_epochs``, ``grad_clip``, ``normalize_advantages`` and the MLP's ``hiddens``; a
        setting left ``None`` keeps its value. Ray 2.5's names: ``sgd_minibatch_size`` is
        ``minibatch_size``, ``num_sgd_iter`` is ``num_epochs``, ``model={"fcnet_hiddens": [..],
        "fcnet_activation": "tanh"}`` sets ``hiddens``.

        >>> PPOConfig().training(lr=3e-4, train_batch_size=2000, minibatch_size=250).lr
        0.0003
        """
        _check_extra("training", options)
        minibatch_size = _same("minibatch_size", minibatch_size, "sgd_minibatch_size",
                               sgd_minibatch_size)
        num_epochs = _same("num_epochs", num_epochs, "num_sgd_iter", num_sgd_iter)
        if model is not None:
            hiddens = _same("hiddens", hiddens, 'model["fcnet_hiddens"]', _model_hiddens(model))
        return self._set(
            lr=lr, gamma=gamma, lambda_=lambda_, clip_param=clip_param,
            vf_clip_param=vf_clip_param, vf_loss_coeff=vf_loss_coeff,
            entropy_coeff=entropy_coeff, kl_coeff=kl_coeff, kl_target=kl_target,
            train_batch_size=train_batch_size,
            minibatch_size=minibatch_size, num_epochs=num_epochs, grad_clip=grad_clip,
            normalize_advantages=normalize_advantages,
            hiddens=None if hiddens is None else tuple(hiddens),
        )

    def evaluation(self, *, evaluation_interval: int | None = None,
                   evaluation_duration: int | None = None,
                   evaluation_duration_unit: str | None = None,
                   evaluation_num_env_runners: int | None = None,
                   evaluation_num_workers: int | None = None,
                   evaluation_config: Mapping[str, Any] | None = None,
                   **options: Any) -> PPOConfig:
        """How ``algo.evaluate()`` runs, and how often ``train()`` calls it:
        ``evaluation_interval`` (every that many iterations; ``None``: only when called),
        ``evaluation_duration`` episodes (or env steps, with ``evaluation_duration_unit=
        "timesteps"``), on ``evaluation_num_env_runners`` actors (Ray 2.5:
        ``evaluation_num_workers``; 0: in this process). ``evaluation_config={"explore":
        False}`` acts greedily (the default samples, as in training)."""
        _check_extra("evaluation", options)
        runners = _same("evaluation_num_env_runners", evaluation_num_env_runners,
                        "evaluation_num_workers", evaluation_num_workers)
        explore = None
        if evaluation_config is not None:
            unknown = sorted(set(evaluation_config) - {"explore"})
            if unknown:
                raise ValueError(f"evaluation_config keys {unknown} are not supported by "
                                 "ember.rl: it reads only 'explore' (evaluation uses the "
                                 "training settings otherwise)")
            explore = evaluation_config.get("explore")
        return self._set(evaluation_interval=evaluation_interval,
                         evaluation_duration=evaluation_duration,
                         evaluation_duration_unit=evaluation_duration_unit,
                         evaluation_num_env_runners=runners, evaluation_explore=explore)

    def reporting(self, *, metrics_num_episodes_for_smoothing: int | None = None,
                  **options: Any) -> PPOConfig:
        """``metrics_num_episodes_for_smoothing``: how many recent episodes
        ``episode_return_mean`` (``episode_reward_mean``) averages."""
        _check_extra("reporting", options)
        return self._set(metrics_num_episodes_for_smoothing=metrics_num_episodes_for_smoothing)

    def debugging(self, *, seed: int | None = None, log_level: str | None = None,
                  **options: Any) -> PPOConfig:
        """``seed`` seeds the envs, the policy and the minibatch order, so runs repeat;
        ``log_level`` (``"DEBUG"``, ``"INFO"``, ``"WARN"``, ``"ERROR"``) is set on the
        ``ember.rl`` logger when the algorithm is built."""
        _check_extra("debugging", options)
        if log_level is not None:
            _log_level_number(log_level)
        return self._set(seed=seed, log_level=log_level)

    # -- Ray 2.5's builder methods ----------------------------------------------------------------
    def rollouts(self, *, num_rollout_workers: int | None = None,
                 num_envs_per_worker: int | None = None,
                 rollout_fragment_length: int | str | None = None,
                 **options: Any) -> PPOConfig:
        """Ray 2.5's name for ``env_runners``: ``num_rollout_workers`` env runner actors (0, the
        driver sampling in 2.5, runs one actor), ``num_envs_per_worker`` sub-envs each,
        ``rollout_fragment_length``; ``batch_mode="truncate_episodes"`` is what ember does."""
        _check_extra("rollouts", options)
        if num_rollout_workers is not None:
            _check_count("num_rollout_workers", num_rollout_workers, minimum=0)
            num_rollout_workers = max(1, num_rollout_workers)
        return self.env_runners(num_rollout_workers, num_envs_per_env_runner=num_envs_per_worker,
                                rollout_fragment_length=rollout_fragment_length)

    def resources(self, *, num_gpus: float | None = None,
                  num_cpus_per_worker: float | None = None,
                  num_learner_workers: int | None = None,
                  num_gpus_per_learner_worker: float | None = None,
                  num_cpus_per_learner_worker: float | None = None,
                  **options: Any) -> PPOConfig:
        """Ray 2.5's resource settings on ember's learners and env runners:
        ``num_learner_workers`` is ``num_learners`` (0, the driver learning in 2.5, runs one
        learner actor), ``num_gpus_per_learner_worker`` / ``num_cpus_per_learner_worker`` are
        per learner, ``num_cpus_per_worker`` is per env runner. ``num_gpus`` (2.5: the GPUs the
        driver learns on) gives the learner that many GPUs: ``num_gpus=2`` makes two learners
        of one GPU each."""
        _check_extra("resources", options)
        if num_gpus is not None and num_learner_workers is None \
                and num_gpus_per_learner_worker is None:
            if num_gpus > 1:
                if num_gpus != int(num_gpus):
                    raise ValueError(f"num_gpus={num_gpus!r}: more than one GPU must be a whole "
                                     "number (one learner per GPU)")
                self._set(num_learners=int(num_gpus))
                num_gpus = 1
            self._set(num_gpus_per_learner=num_gpus)
        if num_learner_workers is not None:
            _check_count("num_learner_workers", num_learner_workers, minimum=0)
            num_learner_workers = max(1, num_learner_workers)
        return self._set(num_learners=num_learner_workers,
                         num_gpus_per_learner=num_gpus_per_learner_worker,
                         num_cpus_per_learner=num_cpus_per_learner_worker,
                         num_cpus_per_env_runner=num_cpus_per_worker)

    def framework(self, framework: str | None = None, **options: Any) -> PPOConfig:
        """Only ``"torch"``: ember.rl's models are PyTorch modules."""
        _check_extra("framework", options)
        if framework is not None and framework != "torch":
            raise ValueError(f"framework={framework!r} is not supported: ember.rl runs PyTorch "
                             "models only; use framework('torch') or leave it out")
        return self

    # -- copies, freezing, dicts ------------------------------------------------------------------
    def copy(self, copy_frozen: bool | None = None) -> PPOConfig:
        """A deep copy; ``copy_frozen`` makes it frozen (``True``), not frozen (``False``), or
        as this one is (``None``)."""
        duplicate = copy_module.deepcopy(self)
        if copy_frozen is not None:
            duplicate.__dict__["_frozen"] = bool(copy_frozen)
        return duplicate

    def freeze(self) -> None:
        """Make this config read-only: setting a field or calling a builder method raises."""
        self.__dict__["_frozen"] = True

    @property
    def is_frozen(self) -> bool:
        """Whether ``freeze()`` was called (an algorithm's ``config`` always is)."""
        return bool(self.__dict__.get("_frozen"))

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict, in Ray 2.5's legacy names where it has one
        (``"lambda"``, ``"num_workers"``, ``"sgd_minibatch_size"``, ``"num_sgd_iter"``,
        ``"model"``...); ``from_dict`` reads it back."""
        settings = {f.name: copy_module.deepcopy(getattr(self, f.name))
                    for f in dataclasses.fields(self) if f.init}
        for ember_name, legacy in _LEGACY_NAMES.items():
            settings[legacy] = settings.pop(ember_name)
        del settings["hiddens"]
        settings["model"] = self.model
        settings["framework"] = "torch"
        settings["evaluation_config"] = {"explore": settings.pop("evaluation_explore")}
        return settings

    @classmethod
    def from_dict(cls, config_dict: Mapping[str, Any]) -> PPOConfig:
        """A new config from a dict of settings: ``to_dict()``'s, or a Ray 2.5 legacy config
        dict (its names as ``to_dict`` writes them, or ember's field names)."""
        config = cls()
        given: dict[str, str] = {}
        for key, value in config_dict.items():
            name = _FROM_LEGACY.get(key, key)
            if name in given:
                raise ValueError(f"from_dict: {given[name]!r} and {key!r} both set {name!r}; "
                                 "give one of them")
            given[name] = key
            if name == "model":
                config.training(model=value)
            elif name == "framework":
                config.framework(value)
            elif name == "evaluation_config":
                config.evaluation(evaluation_config=value)
            elif name == "env":
                config.environment(value)
            elif name == "learner_weights":
                config.learners(learner_weights=value)
            elif name in _FIELD_NAMES:
                config._set(**{name: tuple(value) if name == "hiddens" else value})
            elif name in _IGNORED or name in _ONLY_VALUES:
                _check_extra("from_dict", {name: value})
            else:
                raise ValueError(f"from_dict: unknown setting {key!r} (PPOConfig's fields: "
                                 f"{sorted(_FIELD_NAMES)})")
        return config

    # -- Ray 2.5's attribute names (read-only) ------------------------------------------------
    @property
    def num_rollout_workers(self) -> int:
        """Ray 2.5's name for ``num_env_runners``."""
        return self.num_env_runners

    @property
    def num_envs_per_worker(self) -> int:
        """Ray 2.5's name for ``num_envs_per_env_runner``."""
        return self.num_envs_per_env_runner

    @property
    def sgd_minibatch_size(self) -> int:
        """Ray 2.5's name for ``minibatch_size``."""
        return self.minibatch_size

    @property
    def num_sgd_iter(self) -> int:
        """Ray 2.5's name for ``num_epochs``."""
        return self.num_epochs

    @property
    def num_learner_workers(self) -> int:
        """Ray 2.5's name for ``num_learners``."""
        return self.num_learners

    @property
    def framework_str(self) -> str:
        """Always ``"torch"``."""
        return "torch"

    @property
    def model(self) -> dict[str, Any]:
        """The MLP as Ray 2.5's model config: ``fcnet_hiddens``, ``fcnet_activation``,
        ``vf_share_layers``."""
        return {"fcnet_hiddens": list(self.hiddens), "fcnet_activation": "tanh",
                "vf_share_layers": False}

    @property
    def algo_class(self) -> type[PPO]:
        """``PPO``."""
        from ember.rl._ppo import PPO

        return PPO

    def build(self, env: EnvSpec | None = None) -> PPO:
        """Start the env runners and the learner group (needs a running ember runtime, or
        starts one with defaults). ``env`` (Ray 2.5's ``build(env=...)``) sets the environment
        first. The algorithm keeps a frozen copy of this config."""
        if env is not None:
            self.environment(env)
        return self.algo_class(self)

    # -- checks ---------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad setting and how to fix it."""
        if self.env is None:
            raise ValueError("no environment: call .environment('CartPole-v1') (or a callable)")
        for name in ("num_env_runners", "num_envs_per_env_runner", "num_learners",
                     "train_batch_size", "minibatch_size", "num_epochs", "evaluation_duration",
                     "metrics_num_episodes_for_smoothing"):
            _check_count(name, getattr(self, name), minimum=1)
        _check_count("evaluation_num_env_runners", self.evaluation_num_env_runners, minimum=0)
        if self.evaluation_interval is not None:
            _check_count("evaluation_interval", self.evaluation_interval, minimum=1)
        if self.evaluation_duration_unit not in ("episodes", "timesteps"):
            raise ValueError(f"evaluation_duration_unit={self.evaluation_duration_unit!r} must "
                             "be 'episodes' or 'timesteps'")
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
        if not self.kl_coeff >= 0:
            raise ValueError(f"kl_coeff={self.kl_coeff!r} must be >= 0 (0: no KL penalty)")
        for name in ("lr", "clip_param", "kl_target"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be > 0")
        for name in ("gamma", "lambda_"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must be in [0, 1]")
        for name in ("grad_clip", "vf_clip_param"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name}={value!r} must be > 0 or None (no clipping)")
        if self.num_cpus_per_env_runner < 0:
            raise ValueError(f"num_cpus_per_env_runner={self.num_cpus_per_env_runner!r} must "
                             "be >= 0")

    def fragment_length(self) -> int:
        """Steps per sub-env per sampling round: ``"auto"`` spreads one train batch evenly."""
        if self.rollout_fragment_length != "auto":
            return int(self.rollout_fragment_length)
        envs = self.num_env_runners * self.num_envs_per_env_runner
        return max(1, -(-self.train_batch_size // envs))

    def weights(self) -> tuple[float, ...]:
        """The learners' relative speeds: ``learner_weights``, or ``1.0`` each."""
        return self.learner_weights or (1.0,) * self.num_learners

    def _set(self, **changes: Any) -> PPOConfig:
        """Set the fields given (a ``None`` keeps the field's value) and return ``self``."""
        for name, value in changes.items():
            if value is not None:
                setattr(self, name, value)
        return self


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(PPOConfig) if f.init)
# ember's field -> the key Ray 2.5's to_dict() wrote for it
_LEGACY_NAMES = {
    "lambda_": "lambda", "num_env_runners": "num_workers",
    "num_envs_per_env_runner": "num_envs_per_worker", "minibatch_size": "sgd_minibatch_size",
    "num_epochs": "num_sgd_iter", "num_learners": "num_learner_workers",
    "num_gpus_per_learner": "num_gpus_per_learner_worker",
    "num_cpus_per_learner": "num_cpus_per_learner_worker",
    "num_cpus_per_env_runner": "num_cpus_per_worker",
    "evaluation_num_env_runners": "evaluation_num_workers",
}
# ("model" is read by training(model=...), which sets hiddens)
_FROM_LEGACY = {legacy: name for name, legacy in _LEGACY_NAMES.items()}
_FROM_LEGACY["num_rollout_workers"] = "num_env_runners"


def _same(name: str, value: Any, alias: str, alias_value: Any) -> Any:
    """One setting given by two names: they must agree."""
    if alias_value is None:
        return value
    if value is not None and value != alias_value:
        raise ValueError(f"{name}={value!r} and {alias}={alias_value!r} set the same thing; "
                         "give one of them")
    return alias_value


def _model_hiddens(model: Mapping[str, Any]) -> tuple[int, ...] | None:
    for key, value in model.items():
        if key == "fcnet_hiddens":
            continue
        if key not in _MODEL_DEFAULTS:
            raise ValueError(f"model[{key!r}] is not supported by ember.rl: its MLP reads "
                             "'fcnet_hiddens' and 'fcnet_activation' ('tanh'); image "
                             "observations get the Nature CNN")
        if value != _MODEL_DEFAULTS[key]:
            raise ValueError(f"model[{key!r}]={value!r} is not supported by ember.rl: only "
                             f"{_MODEL_DEFAULTS[key]!r} (RLlib's default, what ember does)")
    hiddens = model.get("fcnet_hiddens")
    if hiddens is None:
        return None
    if not hiddens or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0
                              for h in hiddens):
        raise ValueError(f"model['fcnet_hiddens']={hiddens!r} must be a list of layer sizes "
                         "(integers > 0), e.g. [64, 64]")
    return tuple(hiddens)


def _check_count(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")


_ENVIRONMENT_ONLY_VALUES: dict[str, tuple[Any, str]] = {
    "clip_rewards": (None, "wrap the env: gymnasium.wrappers.TransformReward"),
    "render_env": (False, "render in your own env wrapper"),
    "env_task_fn": (None, "ember.rl has no curriculum hook"),
    "observation_space": (None, "the spaces are read from the env"),
    "action_space": (None, "the spaces are read from the env"),
    "is_atari": (None, "'ALE/...' ids get the Atari preprocessing"),
}


def _check_environment_options(options: Mapping[str, Any]) -> None:
    for name, value in options.items():
        if name in ("normalize_actions", "clip_actions", "disable_env_checking",
                    "auto_wrap_old_gym_envs"):
            continue  # discrete actions only: nothing to normalise or clip; no env checker
        if name not in _ENVIRONMENT_ONLY_VALUES:
            raise TypeError(f"PPOConfig.environment() got an unexpected keyword argument "
                            f"{name!r}")
        allowed, why = _ENVIRONMENT_ONLY_VALUES[name]
        if value != allowed:
            raise ValueError(f"environment({name}={value!r}) is not supported by ember.rl: only "
                             f"{allowed!r} ({why})")


def _log_level_number(level: str) -> int:
    import logging

    number = logging.getLevelName(str(level).upper())
    if not isinstance(number, int):
        raise ValueError(f"log_level={level!r} must be one of 'DEBUG', 'INFO', 'WARN', "
                         "'ERROR'")
    return number
