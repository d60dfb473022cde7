"""``ember/core/_options.py``: option validation, with messages that name the value and the fix.

Validation happens when the decorator or ``.options(...)`` runs, before any runtime exists.
"""

from __future__ import annotations

import pytest

import ember
from ember.core import _options
from ember.util.scheduling_strategies import NodeAffinitySchedulingStrategy


def plain():
    return 1


class Plain:
    def run(self):
        return 1


# -- tasks ----------------------------------------------------------------------------------


def test_unknown_task_option_suggests_the_close_match():
    with pytest.raises(ValueError, match=r"unknown task option 'num_cpu' \(did you mean 'num_cpus'\?\)"):
        ember.remote(num_cpu=1)(plain)


def test_unknown_task_option_lists_the_known_ones():
    with pytest.raises(ValueError) as info:
        ember.remote(zzz=1)(plain)

    message = str(info.value)
    assert "did you mean" not in message
    for known in ("num_cpus", "num_gpus", "max_retries", "num_returns", "resources"):
        assert known in message


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"num_cpus": -1}, "num_cpus=-1 must be a number >= 0"),
        ({"num_cpus": "2"}, "num_cpus='2' must be a number >= 0"),
        ({"num_cpus": True}, "num_cpus=True must be a number >= 0"),
        ({"num_gpus": -0.5}, "num_gpus=-0.5 must be a number >= 0"),
        ({"memory": -1}, "memory=-1 must be a number >= 0"),
        ({"max_retries": -2}, "max_retries=-2 must be an integer >= -1"),
        ({"max_retries": 1.5}, "max_retries=1.5 must be an integer >= -1"),
        ({"num_returns": -1}, "num_returns=-1 must be an integer >= 0"),
        ({"num_returns": "many"}, "num_returns='many' must be an integer >= 0"),
        ({"retry_exceptions": "yes"}, "retry_exceptions='yes' must be True/False or a list"),
        ({"retry_exceptions": [ValueError, 3]}, "must be True/False or a list of exception types"),
        ({"resources": ["gpu"]}, "resources=['gpu'] must be a dict of name -> amount"),
        ({"resources": {"CPU": 1}}, "resources may not name 'CPU': use num_cpus / num_gpus"),
        ({"resources": {"GPU": 1}}, "resources may not name 'GPU'"),
        ({"resources": {"widget": -1}}, "resources['widget']=-1 must be a number >= 0"),
        ({"scheduling_strategy": "spread"}, "scheduling_strategy='spread' must be 'DEFAULT', "
                                            "'SPREAD', a PlacementGroupSchedulingStrategy"),
    ],
)
def test_invalid_task_option_is_refused_with_the_value_and_the_rule(options, fragment):
    with pytest.raises(ValueError) as info:
        ember.remote(**options)(plain)

    assert fragment in str(info.value)


@pytest.mark.parametrize("options", [{"name": object()}, {"namespace": 3}])
def test_a_name_or_namespace_that_is_no_string_is_a_type_error_as_in_ray(options):
    with pytest.raises(TypeError, match="must be a string"):
        ember.remote(**options)(Plain)


@pytest.mark.parametrize("where", ["task", "actor", "method"])
def test_enable_task_events_is_accepted_as_ray_accepts_it(where):
    if where == "task":
        ember.remote(enable_task_events=False)(plain)
    elif where == "actor":
        ember.remote(enable_task_events=False)(Plain)
    else:
        ember.method(enable_task_events=False)(lambda self: None)


@pytest.mark.parametrize(
    "options",
    [
        {"num_cpus": 0}, {"num_cpus": 0.5}, {"num_gpus": 1}, {"max_retries": -1},
        {"max_retries": 0}, {"num_returns": 0}, {"num_returns": 3},
        {"num_returns": "streaming"}, {"num_returns": "dynamic"}, {"retry_exceptions": True},
        {"retry_exceptions": [ValueError, KeyError]}, {"resources": {"widget": 0.5}},
        {"resources": None}, {"name": "step"}, {"memory": 1 << 30}, {"num_cpus": None},
    ],
)
def test_valid_task_options_are_accepted(options):
    remote_fn = ember.remote(**options)(plain)

    assert isinstance(remote_fn, ember.RemoteFunction)


def test_options_are_validated_on_dot_options_too():
    remote_fn = ember.remote(plain)

    with pytest.raises(ValueError, match="num_gpus=-1"):
        remote_fn.options(num_gpus=-1)
    with pytest.raises(ValueError, match="did you mean 'max_retries'"):
        remote_fn.options(max_retry=2)


def test_actor_only_option_on_a_task_is_refused():
    with pytest.raises(ValueError, match="unknown task option 'max_restarts'"):
        ember.remote(max_restarts=1)(plain)


# -- actors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"max_restart": 1}, "unknown actor option 'max_restart' (did you mean 'max_restarts'?)"),
        ({"max_retries": 1}, "unknown actor option 'max_retries'"),
        ({"max_restarts": -2}, "max_restarts=-2 must be an integer >= -1"),
        ({"max_task_retries": 0.5}, "max_task_retries=0.5 must be an integer >= -1"),
        ({"max_concurrency": 0}, "max_concurrency=0 must be an integer >= 1"),
        ({"lifetime": "forever"}, "lifetime='forever' must be None, 'detached' or 'non_detached'"),
        ({"name": ""}, "name='' must be a non-empty string"),
        ({"num_cpus": -1}, "num_cpus=-1 must be a number >= 0"),
        ({"resources": {"CPU": 2}}, "resources may not name 'CPU'"),
        ({"scheduling_strategy": "PACK"}, "scheduling_strategy='PACK' must be"),
    ],
)
def test_invalid_actor_option_is_refused_with_the_value_and_the_rule(options, fragment):
    with pytest.raises(ValueError) as info:
        ember.remote(**options)(Plain)

    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "options",
    [
        {"max_restarts": -1}, {"max_task_retries": 2}, {"max_concurrency": 8},
        {"max_concurrency": None}, {"lifetime": "detached"}, {"lifetime": None},
        {"name": "svc", "namespace": "team"}, {"get_if_exists": True}, {"num_gpus": 0.25},
        {"scheduling_strategy": "SPREAD"},
        {"scheduling_strategy": NodeAffinitySchedulingStrategy("local", soft=True)},
    ],
)
def test_valid_actor_options_are_accepted(options):
    actor_class = ember.remote(**options)(Plain)

    assert isinstance(actor_class, ember.ActorClass)


def test_actor_class_options_are_validated():
    with pytest.raises(ValueError, match="max_concurrency=0"):
        ember.remote(Plain).options(max_concurrency=0)


# -- actor methods --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"num_return": 2}, "unknown actor method option 'num_return' (did you mean 'num_returns'?)"),
        ({"num_returns": -1}, "num_returns=-1 must be an integer >= 0"),
        ({"num_cpus": 1}, "unknown actor method option 'num_cpus'"),
    ],
)
def test_invalid_method_option_is_refused(options, fragment):
    with pytest.raises(ValueError) as info:
        ember.method(**options)

    assert fragment in str(info.value)


@pytest.mark.parametrize("num_returns", [0, 1, 2, "streaming"])
def test_valid_method_options_are_accepted(num_returns):
    decorate = ember.method(num_returns=num_returns)

    def method(self):
        return None

    assert decorate(method) is method


# -- resource requests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "request_"),
    [
        ({}, {}),
        ({"num_cpus": 1, "num_gpus": 0}, {"CPU": 1.0}),
        ({"num_cpus": 0, "num_gpus": 0.5}, {"GPU": 0.5}),
        ({"num_cpus": 2, "resources": {"widget": 1, "unused": 0}}, {"CPU": 2.0, "widget": 1.0}),
        ({"num_cpus": None, "resources": None}, {}),
        ({"num_cpus": 1, "memory": 2**30}, {"CPU": 1.0, "memory": float(2**30)}),
    ],
)
def test_resource_request_flattens_and_drops_zero_amounts(options, request_):
    assert _options.resource_request(options) == request_


def test_task_and_actor_defaults_follow_ray():
    assert _options.TASK_DEFAULTS["num_cpus"] == 1
    assert _options.TASK_DEFAULTS["max_retries"] == 3
    assert _options.TASK_DEFAULTS["retry_exceptions"] is False
    assert _options.ACTOR_DEFAULTS["num_cpus"] == 0  # an actor holds no CPU unless it asks
    assert _options.ACTOR_DEFAULTS["max_restarts"] == 0
