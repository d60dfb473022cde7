"""Pin the public names: adding or removing one is a decision, made here on purpose."""

from __future__ import annotations

import contextlib
import io
from importlib.metadata import version

import pytest

import ember
import ember.air
import ember.core
import ember.dag
import ember.job_config
import ember.runtime_env
import ember.testing
import ember.util.multiprocessing
import ember.util.queue
from ember import actor, errors, exceptions, util
from ember.cli import main

EMBER_ALL = [
    "ActorClass",
    "ActorHandle",
    "DynamicObjectRefGenerator",
    "ObjectRef",
    "ObjectRefGenerator",
    "RemoteFunction",
    "RuntimeContext",
    "actor",
    "available_resources",
    "cancel",
    "cluster_resources",
    "errors",
    "exceptions",
    "get",
    "get_actor",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "method",
    "nodes",
    "put",
    "remote",
    "shutdown",
    "timeline",
    "wait",
]

ERRORS_ALL = [
    "ActorAlreadyExistsError",
    "ActorDiedError",
    "ActorUnavailableError",
    "BackendError",
    "CorruptCheckpointError",
    "EmberError",
    "GetTimeoutError",
    "ObjectLostError",
    "ObjectStoreFullError",
    "OutOfMemoryError",
    "ResourceError",
    "RuntimeEnvSetupError",
    "RuntimeNotInitializedError",
    "SerializationError",
    "SessionError",
    "StorageError",
    "TaskCancelledError",
    "TaskError",
    "TrainingFailedError",
    "UnsupportedPlatformError",
    "WorkerCrashedError",
]


# Ray's names (ray.exceptions, ray.actor, ray.util, ray.util.queue) that ember offers.
EXCEPTIONS_ALL = [
    "ActorAlreadyExistsError",
    "ActorDiedError",
    "ActorUnavailableError",
    "ActorUnschedulableError",
    "GetTimeoutError",
    "LocalRayletDiedError",
    "NodeDiedError",
    "ObjectFetchTimedOutError",
    "ObjectFreedError",
    "ObjectLostError",
    "ObjectReconstructionFailedError",
    "ObjectStoreFullError",
    "OutOfMemoryError",
    "OwnerDiedError",
    "RayActorError",
    "RayError",
    "RaySystemError",
    "RayTaskError",
    "RuntimeEnvSetupError",
    "TaskCancelledError",
    "TaskUnschedulableError",
    "WorkerCrashedError",
]

ACTOR_ALL = ["ActorClass", "ActorHandle", "ActorMethod", "exit_actor", "method"]

UTIL_ALL = ["ActorPool", "Gang", "PlacementGroup", "WorkerGroup", "WorkerInfo", "create_gang",
            "get_current_placement_group", "get_node_ip_address", "get_placement_group",
            "inspect_serializability", "list_named_actors", "metrics", "multiprocessing",
            "placement_group", "placement_group_table", "queue", "remove_placement_group",
            "scheduling_strategies", "state"]

QUEUE_ALL = ["Empty", "Full", "Queue"]

# ray.util.multiprocessing, ray.runtime_env and ray.job_config.
MULTIPROCESSING_ALL = ["AsyncResult", "IMapIterator", "Pool", "TimeoutError"]
RUNTIME_ENV_ALL = ["RuntimeEnv", "RuntimeEnvConfig"]
JOB_CONFIG_ALL = ["JobConfig"]

# The test kit users import (like starlette.testclient).
TESTING_ALL = ["FakeClock", "LeakCheck", "ServeTestClient", "eventually"]

# What the core shares with ember's other packages (see ember/core/__init__.py).
CORE_ALL = ["LOCAL_NODE_IP", "SEGMENT_PREFIX", "SHM_DIR", "runtime_dir", "serve_direct_enabled"]

# Ray's ray.dag names that deployment graphs use (ember runs graphs in serve only).
DAG_ALL = ["DAGNode", "InputAttributeNode", "InputNode"]
# Ray 2.5's RLlib import paths (thin aliases of ember.rl's classes).
RLLIB_PINNED = {
    "ember.rllib": [],
    "ember.rllib.algorithms": ["Algorithm", "AlgorithmConfig"],
    "ember.rllib.algorithms.algorithm": ["Algorithm"],
    "ember.rllib.algorithms.algorithm_config": ["AlgorithmConfig"],
    "ember.rllib.algorithms.ppo": ["PPO", "PPOConfig"],
    "ember.rllib.algorithms.ppo.ppo": ["PPO", "PPOConfig"],
    "ember.rllib.policy": ["Policy"],
    "ember.rllib.policy.policy": ["Policy"],
}

# Ray 2.5's AIR names (ray.air, ray.air.config, ray.air.checkpoint, ray.air.session).
AIR_ALL = ["Checkpoint", "CheckpointConfig", "DatasetConfig", "FailureConfig", "Result",
           "RunConfig", "ScalingConfig", "checkpoint", "config", "session"]
AIR_CONFIG_ALL = ["CheckpointConfig", "DatasetConfig", "FailureConfig", "RunConfig",
                  "ScalingConfig"]
AIR_CHECKPOINT_ALL = ["Checkpoint"]
AIR_SESSION_ALL = ["get_checkpoint", "get_dataset_shard", "get_experiment_name",
                   "get_local_rank", "get_local_world_size", "get_node_rank", "get_trial_dir",
                   "get_trial_id", "get_trial_name", "get_world_rank", "get_world_size",
                   "report"]

PINNED = [(ember, EMBER_ALL), (errors, ERRORS_ALL), (exceptions, EXCEPTIONS_ALL),
          (actor, ACTOR_ALL), (util, UTIL_ALL), (ember.util.queue, QUEUE_ALL),
          (ember.util.multiprocessing, MULTIPROCESSING_ALL),
          (ember.runtime_env, RUNTIME_ENV_ALL), (ember.job_config, JOB_CONFIG_ALL),
          (ember.testing, TESTING_ALL), (ember.core, CORE_ALL), (ember.dag, DAG_ALL),
          (ember.air, AIR_ALL), (ember.air.config, AIR_CONFIG_ALL),
          (ember.air.checkpoint, AIR_CHECKPOINT_ALL), (ember.air.session, AIR_SESSION_ALL)]


@pytest.mark.parametrize(("module", "names"), PINNED, ids=lambda v: getattr(v, "__name__", ""))
def test_all_is_pinned(module, names):
    assert module.__all__ == names


@pytest.mark.parametrize(("module", "name"),
                         [(module, n) for module, names in PINNED for n in names])
def test_every_exported_name_exists(module, name):
    assert getattr(module, name) is not None


def test_every_ray_exception_name_is_a_class_of_embers_tree():
    for name in EXCEPTIONS_ALL:
        cls = getattr(exceptions, name)
        assert isinstance(cls, type) and issubclass(cls, errors.EmberError), name
        assert cls.__module__ == errors.__name__, name  # an alias, never a second tree


def test_every_error_class_is_exported():
    defined = {name for name, value in vars(errors).items()
               if isinstance(value, type) and issubclass(value, BaseException)
               and value.__module__ == errors.__name__}
    assert defined == set(ERRORS_ALL)


def test_version_is_a_string():
    assert isinstance(ember.__version__, str) and ember.__version__


def test_the_version_has_one_source():
    """``ember.__version__``, ``ember --version`` and the installed distribution agree."""
    assert version("ember-scale") == ember.__version__
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--version"]) == 0
    assert out.getvalue().strip() == f"ember {ember.__version__}"


def test_unknown_attribute_raises_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="no_such_thing"):
        ember.no_such_thing  # noqa: B018


@pytest.mark.parametrize(("module_name", "names"), RLLIB_PINNED.items())
def test_rllib_alias_modules_are_pinned_and_alias_ember_rl(module_name, names):
    import importlib

    import ember.rl

    module = importlib.import_module(module_name)
    assert module.__all__ == names
    for name in names:
        assert getattr(module, name) is getattr(ember.rl, name)  # the same class, not a copy
