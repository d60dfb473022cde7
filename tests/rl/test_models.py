"""The networks, and the Atari preprocessing on a synthetic image env (ale-py is not needed)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from ember.rl._atari import GrayResize, MaxAndSkip, wrap_image_env
from ember.rl._models import MLPModel, NatureCNN, build_model, get_weights, set_weights


def flicker_env(max_steps: int = 20) -> gym.Env:
    """RGB frames 210x160 (Atari's size); odd steps show a white square, even steps a black
    frame (like flickering sprites); reward 1 per step when action 1 is taken, -5 for action 2."""

    class Flicker(gym.Env):
        observation_space = gym.spaces.Box(0, 255, (210, 160, 3), np.uint8)
        action_space = gym.spaces.Discrete(3)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.t = 0
            return self._frame(), {}

        def _frame(self):
            frame = np.zeros((210, 160, 3), np.uint8)
            if self.t % 2:
                frame[:105, :80] = 255
            return frame

        def step(self, action):
            self.t += 1
            reward = {0: 0.0, 1: 1.0, 2: -5.0}[int(action)]
            return self._frame(), reward, False, self.t >= max_steps, {"t": self.t}

    return Flicker()


def test_mlp_gives_logits_and_values_per_observation():
    model = MLPModel(4, 2, (16, 16))
    logits, values = model(torch.zeros(5, 4))
    assert logits.shape == (5, 2) and values.shape == (5,)


def test_nature_cnn_takes_uint8_frame_stacks():
    model = NatureCNN(4, 6)
    logits, values = model(torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8))
    assert logits.shape == (3, 6) and values.shape == (3,)
    convs = [m for m in model.trunk if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == \
        [(32, (8, 8), (4, 4)), (64, (4, 4), (2, 2)), (64, (3, 3), (1, 1))]


def test_build_model_picks_the_cnn_for_images_and_the_mlp_otherwise():
    discrete = gym.spaces.Discrete(4)
    assert isinstance(build_model(gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), discrete),
                      NatureCNN)
    assert isinstance(build_model(gym.spaces.Box(-1, 1, (8,)), discrete), MLPModel)


def test_build_model_refuses_continuous_actions_saying_what_works():
    with pytest.raises(ValueError, match="Discrete"):
        build_model(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-1, 1, (2,)))


def test_weights_round_trip_through_numpy():
    a, b = MLPModel(3, 2), MLPModel(3, 2)
    set_weights(b, get_weights(a))
    obs = torch.randn(4, 3)
    torch.testing.assert_close(a(obs), b(obs))


def test_preprocessing_gives_stacked_84x84_grayscale_uint8():
    env = wrap_image_env(flicker_env())
    obs, _ = env.reset(seed=0)

    assert env.observation_space.shape == (4, 84, 84)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    next_obs, reward, *_ = env.step(1)
    assert reward == 1.0  # four skipped frames of reward 1, clipped to the sign
    np.testing.assert_array_equal(next_obs[:3], obs[1:])  # the stack shifts by one frame


def test_max_over_the_last_two_frames_removes_flicker_and_rewards_add_up():
    env = MaxAndSkip(flicker_env(), skip=4)
    env.reset(seed=0)
    obs, reward, *_ = env.step(1)

    assert reward == 4.0
    assert obs[:105, :80].min() == 255  # the square shows although the last frame was black


def test_gray_resize_keeps_luminance_and_area():
    env = GrayResize(flicker_env(), size=84)
    env.reset(seed=0)
    obs, *_ = env.step(0)  # t=1: the top-left quarter is white

    assert obs.shape == (84, 84)
    assert obs[:40, :40].min() == 255 and obs[44:, 44:].max() == 0
    assert abs(obs.mean() - 255 / 4) < 3


def test_an_episode_ends_inside_a_skip():
    env = MaxAndSkip(flicker_env(max_steps=6), skip=4)
    env.reset(seed=0)
    env.step(1)
    _, reward, _, truncated, info = env.step(1)
    assert truncated and info["t"] == 6 and reward == 2.0
