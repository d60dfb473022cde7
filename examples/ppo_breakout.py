"""PPO on Atari Breakout with ember.rl: the Nature CNN over 84x84 gray 4-frame stacks.

Needs ale-py (it ships the ROMs) and OpenCV for gymnasium's AtariPreprocessing::

    pip install 'ale-py>=0.9' opencv-python-headless

Run it from the repository root::

    .venv/bin/python examples/ppo_breakout.py [--iterations 10] [--env-runners 1]
        [--envs-per-runner 8] [--learners 1] [--gpus-per-learner 0] [--learner-weights W ...]
        [--batch 2048] [--minibatch 256] [--quick]

Each iteration samples ``--batch`` env steps (runners x 8 sub-envs, each step 4 emulator frames
with max-pooling, rewards clipped to {-1, 0, 1}), trains for 4 epochs of minibatches of
``--minibatch`` (256) and prints one line (wrapped here)::

    iter  1  return    1.2  episodes     6  steps   2048  loss +0.024  entropy 1.384
        14.2s  145 steps/s

then saves a checkpoint. On two CPU cores it runs 150-200 env steps a second (about 10-15 s an
iteration): enough to watch it work, far from enough to learn Breakout (that takes ~10M steps).
``--quick`` (what CI runs, on the CPU: ``--gpus-per-learner 0``) is one iteration of 256 steps
over 2 sub-envs with minibatches of 64.

GPU settings
------------
Learners train, env runners sample; place them like this:

- learners per GPU: ``--learners N --gpus-per-learner 1`` gives each of N learners a whole GPU
  (ember sets ``CUDA_VISIBLE_DEVICES`` per learner; gradients are all-reduced over NCCL), so N is
  the number of GPUs. ``--gpus-per-learner 0.5`` packs two learners on each GPU (for models too
  small to fill one); ``0`` trains on the CPU over gloo. Each learner also holds one CPU core.
- GPUs of different kinds: ``--learner-weights 1 3`` gives the second learner three quarters of
  every batch (say an H100 beside an A10); the update is still exactly one learner's on the
  whole batch, so weights change speed, not results.
- env runners per CPU: runners run the emulator and the policy on the CPU (one torch thread
  each) and hold no resource, so start about one per core left over: cores minus one per
  learner minus one for the driver. ``--envs-per-runner 8`` batches the policy over 8 emulators
  in each runner, which is cheaper per step than more runners.
- batch sizes: ``--batch`` env steps per iteration (split among learners, so it can grow with
  their number past one GPU's memory), ``--minibatch`` samples per gradient step (split the same
  way).

For example, on one machine with 1 GPU and 16 cores::

    .venv/bin/python examples/ppo_breakout.py --learners 1 --gpus-per-learner 1 \\
        --env-runners 14 --envs-per-runner 8 --batch 8192 --minibatch 1024 --iterations 1000

and on 2 GPUs of different speeds and 32 cores::

    .venv/bin/python examples/ppo_breakout.py --learners 2 --gpus-per-learner 1 \\
        --learner-weights 1 3 --env-runners 29 --batch 16384 --minibatch 2048
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
    parser.add_argument("--learner-weights", type=float, nargs="+", default=None,
                        help="relative learner speeds, one per learner (e.g. 1 3)")
    parser.add_argument("--batch", type=int, default=2048, help="env steps per iteration")
    parser.add_argument("--minibatch", type=int, default=256, help="samples per SGD step")
    parser.add_argument("--quick", action="store_true",
                        help="1 iteration of 256 steps over 2 sub-envs, minibatch 64 (for CI)")
    args = parser.parse_args()
    if args.quick:
        args.iterations, args.envs_per_runner, args.batch, args.minibatch = 1, 2, 256, 64

    ember.init(num_cpus=max(2, os.cpu_count() or 2))  # learners hold a CPU; runners hold none
    config = (
        PPOConfig()
        .environment("ALE/Breakout-v5")
        .env_runners(num_env_runners=args.env_runners,
                     num_envs_per_env_runner=args.envs_per_runner)
        .learners(num_learners=args.learners, num_gpus_per_learner=args.gpus_per_learner,
                  learner_weights=args.learner_weights)
        # cleanrl's Atari PPO settings (lr without annealing)
        .training(lr=2.5e-4, gamma=0.99, lambda_=0.95, clip_param=0.1, vf_loss_coeff=0.5,
                  entropy_coeff=0.01, train_batch_size=args.batch, minibatch_size=args.minibatch,
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
