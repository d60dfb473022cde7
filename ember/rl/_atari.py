"""Atari-style preprocessing: the DeepMind recipe (Mnih et al. 2015) as gymnasium wrappers.

``make_atari_env("ALE/Breakout-v5")`` uses ale-py and gymnasium's own ``AtariPreprocessing``
(no-op starts, frame skip 4 with max-pooling, 84x84 grayscale; it needs OpenCV) plus a 4-frame
stack and reward clipping to {-1, 0, 1}. ``PPOConfig().environment("ALE/...")`` builds its envs
with it, and ``env_config`` goes to ``gymnasium.make`` (``repeat_action_probability=0.0`` turns
off v5's sticky actions, say). ``wrap_image_env`` applies the same recipe to any env with RGB
frames, with no ale-py (and no OpenCV: the resize is torch's area interpolation), so the pipeline
is testable anywhere.
Both give ``uint8`` observations of shape ``[4, 84, 84]``, the Nature CNN's input.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


def make_atari_env(env_id: str, *, frame_stack: int = 4, clip_rewards: bool = True,
                   **kwargs: Any) -> gym.Env[Any, Any]:
    try:
        import ale_py
    except ImportError as exc:
        raise ImportError(f"{env_id!r} needs ale-py: pip install 'ale-py>=0.9' (it ships the "
                          "Atari ROMs)") from exc
    try:
        import cv2  # noqa: F401  (AtariPreprocessing resizes with OpenCV)
    except ImportError as exc:
        raise ImportError(f"{env_id!r} needs OpenCV for gymnasium's AtariPreprocessing: pip "
                          "install opencv-python-headless (or 'gymnasium[other]')") from exc
    gym.register_envs(ale_py)
    # The env steps every frame (frameskip=1) and AtariPreprocessing skips 4, max-pooling the
    # last two frames against sprite flicker: the DeepMind recipe. (frameskip=4 in the env with
    # frame_skip=1 in the wrapper also works but loses the max-pooling.)
    env = gym.make(env_id, frameskip=1, **kwargs)
    env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84,
                                          grayscale_obs=True, scale_obs=False)
    return _finish(env, frame_stack, clip_rewards)


def wrap_image_env(env: gym.Env[Any, Any], *, frame_skip: int = 4, screen_size: int = 84,
                   frame_stack: int = 4, clip_rewards: bool = True) -> gym.Env[Any, Any]:
    """The DeepMind preprocessing for any env whose observations are ``[H, W, 3]`` uint8."""
    if frame_skip > 1:
        env = MaxAndSkip(env, frame_skip)
    env = GrayResize(env, screen_size)
    return _finish(env, frame_stack, clip_rewards)


def _finish(env: gym.Env[Any, Any], frame_stack: int, clip_rewards: bool) -> gym.Env[Any, Any]:
    if clip_rewards:
        env = gym.wrappers.TransformReward(env, lambda r: float(np.sign(float(r))))
    return gym.wrappers.FrameStackObservation(env, frame_stack)


class MaxAndSkip(gym.Wrapper[Any, Any, Any, Any]):
    """Repeat each action ``skip`` times, sum the rewards and return the pixel-wise max of the
    last two frames (Atari sprites flicker between frames)."""

    def __init__(self, env: gym.Env[Any, Any], skip: int = 4) -> None:
        super().__init__(env)
        self.skip = skip

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        total = 0.0
        frames: list[np.ndarray] = []
        terminated = truncated = False
        info: dict[str, Any] = {}
        for _ in range(self.skip):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            frames = [*frames[-1:], obs]
            if terminated or truncated:
                break
        return np.max(np.stack(frames), axis=0), total, terminated, truncated, info


class GrayResize(gym.ObservationWrapper[Any, Any, Any]):
    """``[H, W, 3]`` RGB to ``[size, size]`` luminance (ITU-R 601), resized by area averaging."""

    def __init__(self, env: gym.Env[Any, Any], size: int = 84) -> None:
        super().__init__(env)
        self.size = size
        self.observation_space = gym.spaces.Box(0, 255, (size, size), dtype=np.uint8)

    def observation(self, observation: Any) -> np.ndarray:
        import torch

        frame = np.asarray(observation, dtype=np.float32)
        gray = frame[..., 0] * 0.299 + frame[..., 1] * 0.587 + frame[..., 2] * 0.114
        resized = torch.nn.functional.adaptive_avg_pool2d(
            torch.from_numpy(gray)[None, None], (self.size, self.size))[0, 0].numpy()
        pixels: np.ndarray = np.clip(np.rint(resized), 0, 255).astype(np.uint8)
        return pixels
