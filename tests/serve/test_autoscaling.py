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


def test_factors_damp_each_step() -> None:
    p = policy(max_replicas=20, upscale_delay_s=0, downscale_delay_s=0,
               upscaling_factor=0.5, downscaling_factor=0.25)
    assert p.decide(2, 40, now=0) == 11  # raw wish 20: half of the way up from 2
    assert p.decide(11, 40, now=1) == 16
    assert p.decide(16, 0, now=2) == 13  # raw wish 1: a quarter of the way down (12.25)
    assert p.decide(2, 0, now=3) == 1  # a step is at least one replica
    assert p.decide(2, 6, now=4) == 3


def test_smoothing_factor_is_rays_older_name_for_both() -> None:
    c = AutoscalingConfig.from_any({"max_replicas": 9, "smoothing_factor": 0.5,
                                    "downscale_smoothing_factor": 0.2})
    assert (c.up_factor, c.down_factor) == (0.5, 0.2)
    with pytest.raises(ValueError, match="sets 'upscaling_factor' twice"):
        AutoscalingConfig.from_any({"upscaling_factor": 1, "upscale_smoothing_factor": 1})
    with pytest.raises(ValueError, match="upscaling_factor=0"):
        AutoscalingConfig(upscaling_factor=0)


def test_look_back_period_averages_the_load() -> None:
    p = policy(upscale_delay_s=0, downscale_delay_s=0, look_back_period_s=10)
    assert p.decide(1, 8, now=0) == 4
    # A moment of silence does not drop the count while the window still remembers the load.
    assert p.decide(4, 0, now=1) == 2  # average of 8 and 0 is 4: two replicas
    assert p.decide(2, 0, now=12) == 1  # the busy samples left the window


def test_last_step_to_zero_has_its_own_delay() -> None:
    p = policy(min_replicas=0, downscale_delay_s=5, downscale_to_zero_delay_s=60)
    assert p.decide(3, 0, now=0) == 3
    assert p.decide(3, 0, now=5) == 1  # down to one after the usual delay ...
    assert p.decide(1, 0, now=30) == 1  # ... and to zero only after its own delay
    assert p.decide(1, 0, now=89) == 1
    assert p.decide(1, 0, now=90) == 0
