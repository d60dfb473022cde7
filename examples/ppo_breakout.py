"""PPO on Atari Breakout with ember.rl: the Nature CNN over 84x84 gray 4-frame stacks.

Needs ale-py (it ships the ROMs) and OpenCV for gymnasium's AtariPreprocessing::

    pip install 'ale-py>=0.9' opencv-python-headless

Run it from the repository root::

    .venv/bin/python examples/ppo_breakout.py [--iterations 10] [--env-runners 1]
                                              [--learners 1] [--gpus-per-learner 0]

Each iteration samples ``--batch`` env steps (runners x 8 sub-envs, each step 4 emulator frames
with max-pooling, rewards clipped to {-1, 0, 1}), trains for 4 epochs of minibatches of 256 and
prints one line (wrapped here)::

    iter  1  return    1.2  episodes     6  steps   2048  loss +0.024  entropy 1.384
        14.2s  145 steps/s

then saves a checkpoint. On two CPU cores it runs 150-200 env steps a second (about 10-15 s an
iteration): enough to watch it work, far from enough to learn Breakout (that takes ~10M steps).

On a GPU machine give each learner a GPU and each spare CPU core an env runner, e.g. on one
machine with 1 GPU and 16 cores::

    .venv/bin/python examples/ppo_breakout.py --learners 1 --gpus-per-learner 1 \\
        --env-runners 14 --batch 8192 --iterations 1000

``--learners N --gpus-per-learner 1`` puts one learner on each of N GPUs (gradients all-reduced;
``--gpus-per-learner 0.5`` packs two learners on each GPU); env runners step the emulator on the
CPU, so use about one runner per core, keeping a core for each learner and one for the driver.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import ember
from ember.rl import PPOConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--env-runners", type=int, default=1)
    parser.add_argument("--envs-per-runner", type=int, default=8)
    parser.add_argument("--learners", type=int, default=1)
    parser.add_argument("--gpus-per-learner", type=float, default=0)
    parser.add_argument("--batch", type=int, default=2048, help="env steps per iteration")
    args = parser.parse_args()

    ember.init(num_cpus=max(2, os.cpu_count() or 2))  # learners hold a CPU; runners hold none
    config = (
        PPOConfig()
        .environment("ALE/Breakout-v5")
        .env_runners(num_env_runners=args.env_runners,
                     num_envs_per_env_runner=args.envs_per_runner)
        .learners(num_learners=args.learners, num_gpus_per_learner=args.gpus_per_learner)
        # cleanrl's Atari PPO settings (lr without annealing)
        .training(lr=2.5e-4, gamma=0.99, lambda_=0.95, clip_param=0.1, vf_loss_coeff=0.5,
                  entropy_coeff=0.01, train_batch_size=args.batch, minibatch_size=256,
                  num_epochs=4, grad_clip=0.5)
        .debugging(seed=0)
    )
    with config.build() as algo:
        for _ in range(args.iterations):
            result = algo.train()
            print(f"iter {result['training_iteration']:2d}  "
                  f"return {result['episode_return_mean']:6.1f}  "
                  f"episodes {result['num_episodes_lifetime']:5d}  "
                  f"steps {result['num_env_steps_sampled']:6d}  "
                  f"loss {result['total_loss']:+.3f}  "
                  f"entropy {result['entropy']:.3f}  "
                  f"{result['time_this_iter_s']:.1f}s  "
                  f"{result['num_env_steps_sampled_per_s']:.0f} steps/s")
        checkpoint = algo.save(tempfile.mkdtemp(prefix="ember-ppo-breakout-"))
    print(f"saved to {checkpoint}")
    ember.shutdown()


if __name__ == "__main__":
    main()
