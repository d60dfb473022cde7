"""ember.rl's PPO on CartPole-v1: time to a mean return of 150, and sampling + learning speed.

Run it from the repository root::

    .venv/bin/python benchmarks/rl.py             # about a minute on 2 CPUs
    .venv/bin/python benchmarks/rl.py --quick     # one learner layout only

Setup: 2 env runners x 4 sub-envs, 2 learners (1 CPU each, gloo), 2000 steps per iteration,
10 epochs of minibatches of 250, the settings of ``examples/ppo_cartpole.py``. Learner layouts:
even weights (1, 1) and uneven ones (1, 3). It prints one Markdown table: build seconds,
iterations and seconds to a mean return of 150, and env steps per second over the run.

RLlib is not compared here: ``ray.rllib`` does not import in this environment (it needs
``dm-tree``); add the same config on its new API stack when it does.
"""

from __future__ import annotations

import argparse
import time

import ember
from ember.rl import PPOConfig

TARGET = 150.0
MAX_ITERATIONS = 40


def run(weights: tuple[float, float]) -> dict[str, float]:
    config = (PPOConfig().environment("CartPole-v1")
              .env_runners(2, num_envs_per_env_runner=4)
              .learners(2, learner_weights=weights)
              .training(lr=3e-4, train_batch_size=2000, minibatch_size=250, num_epochs=10,
                        vf_loss_coeff=0.5, grad_clip=0.5)
              .debugging(seed=0))
    start = time.perf_counter()
    with config.build() as algo:
        built = time.perf_counter()
        steps = 0
        for _ in range(MAX_ITERATIONS):
            result = algo.train()
            iterations = result["training_iteration"]
            steps += result["num_env_steps_sampled"]
            if result["episode_return_mean"] >= TARGET:
                break
        done = time.perf_counter()
    return {"build_s": built - start, "iterations": iterations, "train_s": done - built,
            "steps_per_s": steps / (done - built), "final_return": result["episode_return_mean"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    layouts: list[tuple[float, float]] = [(1.0, 1.0)] if args.quick else [(1.0, 1.0), (1.0, 3.0)]
    ember.init(num_cpus=2)
    try:
        rows = [(layout, run(layout)) for layout in layouts]
    finally:
        ember.shutdown()
    print(f"| learner weights | build s | iterations to {TARGET:.0f} | train s | env steps/s "
          "| final return |")
    print("| --- | --- | --- | --- | --- | --- |")
    for layout, r in rows:
        print(f"| {layout} | {r['build_s']:.1f} | {r['iterations']} | {r['train_s']:.1f} "
              f"| {r['steps_per_s']:.0f} | {r['final_return']:.1f} |")


if __name__ == "__main__":
    main()
