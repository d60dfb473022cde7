from __future__ import annotations

import pytest

from ember.serve._autoscaling import AutoscalingConfig, AutoscalingPolicy


def policy(**kw: object) -> AutoscalingPolicy:
    base: dict[str, object] = {"min_replicas": 1, "max_replicas": 5,
                               "target_ongoing_requests": 2, "upscale_delay_s": 10,
                               "downscale_delay_s": 30}
    base.update(kw)
    return AutoscalingPolicy(AutoscalingConfig(**base))  # type: ignore[arg-type]


def test_raw_desired_follows_load_within_bounds() -> None:
    p = policy()
    assert p.raw_desired(0) == 1
    assert p.raw_desired(2) == 1
    assert p.raw_desired(3) == 2
    assert p.raw_desired(8) == 4
    assert p.raw_desired(100) == 5


def test_scale_up_waits_for_the_delay() -> None:
    p = policy()
    assert p.decide(1, 8, now=0) == 1
    assert p.decide(1, 8, now=9.9) == 1
    assert p.decide(1, 8, now=10) == 4


def test_a_dip_restarts_the_up_delay() -> None:
    p = policy()
    p.decide(1, 8, now=0)
    assert p.decide(1, 1, now=5) == 1  # content again
    assert p.decide(1, 8, now=6) == 1
    assert p.decide(1, 8, now=15.9) == 1
    assert p.decide(1, 8, now=16) == 4


def test_scale_down_waits_longer() -> None:
    p = policy()
    assert p.decide(4, 0, now=0) == 4
    assert p.decide(4, 0, now=29) == 4
    assert p.decide(4, 0, now=30) == 1


def test_direction_change_resets_the_timer() -> None:
    p = policy()
    p.decide(3, 0, now=0)  # wants down
    assert p.decide(3, 100, now=25) == 3  # now wants up: new timer
    assert p.decide(3, 100, now=34) == 3
    assert p.decide(3, 100, now=35) == 5


def test_zero_delays_act_at_once() -> None:
    p = policy(upscale_delay_s=0, downscale_delay_s=0)
    assert p.decide(1, 10, now=0) == 5
    assert p.decide(5, 0, now=0) == 1


def test_out_of_bounds_count_is_fixed_at_once() -> None:
    p = policy(min_replicas=2)
    assert p.decide(0, 0, now=0) == 2
    assert p.decide(9, 0, now=0) == 5


def test_min_zero_allows_scaling_to_zero() -> None:
    p = policy(min_replicas=0, downscale_delay_s=0)
    assert p.decide(2, 0, now=0) == 0


def test_config_accepts_ray_names_and_rejects_unknown() -> None:
    c = AutoscalingConfig.from_any(
        {"min_replicas": 1, "max_replicas": 3, "target_num_ongoing_requests_per_replica": 4,
         "smoothing_factor": 1.0}
    )
    assert c.target_ongoing_requests == 4
    with pytest.raises(ValueError, match="unknown autoscaling_config option 'max_replica'"):
        AutoscalingConfig.from_any({"max_replica": 3})


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"min_replicas": -1}, "min_replicas=-1"),
        ({"min_replicas": 3, "max_replicas": 2}, "max_replicas=2"),
        ({"target_ongoing_requests": 0}, "target_ongoing_requests=0"),
        ({"initial_replicas": 9, "max_replicas": 3}, "initial_replicas=9"),
        ({"upscale_delay_s": -1}, "upscale_delay_s"),
    ],
)
def test_bad_configs_say_what_is_wrong(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AutoscalingConfig(**kw)  # type: ignore[arg-type]


def test_start_replicas() -> None:
    assert AutoscalingConfig(min_replicas=0, max_replicas=3).start_replicas == 1
    assert AutoscalingConfig(min_replicas=2, max_replicas=3).start_replicas == 2
    assert AutoscalingConfig(max_replicas=3, initial_replicas=3).start_replicas == 3
