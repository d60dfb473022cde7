"""Pin ``ember.rl``'s public names, and check that importing it loads nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys

import ember.rl

RL_ALL = ["PPO", "Algorithm", "AlgorithmConfig", "PPOConfig", "Policy"]


def test_rl_all_is_pinned():
    assert ember.rl.__all__ == RL_ALL


def test_every_exported_name_exists():
    for name in RL_ALL:
        assert getattr(ember.rl, name) is not None


def test_importing_ember_rl_loads_neither_torch_nor_gymnasium():
    code = ("import sys, json, ember; ember.rl.PPOConfig().environment('CartPole-v1'); "
            "print(json.dumps([m for m in ('torch', 'gymnasium', 'numpy') if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert json.loads(done.stdout) == []
