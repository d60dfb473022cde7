"""PPO on CartPole-v1 with ember.rl: 2 env runner actors, 2 learners in data-parallel.

Run it from the repository root::

    .venv/bin/python examples/ppo_cartpole.py [--iterations 30] [--weights 1 3] [--quick]

Each training iteration samples 2000 env steps (2 runners x 4 sub-envs), splits the batch between
the two learners in proportion to ``--weights`` (give a faster GPU a larger weight), all-reduces
their gradients over gloo and sends the new weights back to the runners. It prints the return
curve, one line per iteration::

    iter  1  return   20.1  steps   2000  shares [1000, 1000]  policy_loss -0.012  0.5s
    ...

stops once the mean return over the last 100 episodes reaches 195, saves a checkpoint, restores
it with ``PPO.from_checkpoint`` and plays one greedy episode with ``compute_single_action``.
It takes about 15-30 s on two CPU cores. ``--quick`` (what CI runs) trains 2 iterations of 400
steps (4 epochs each), far from solving it, then saves, restores and plays the same way.
"""

from __future__ import annotations

import argparse
import tempfile

import gymnasium as gym

import ember
from ember.rl import PPO, PPOConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--weights", type=float, nargs=2, default=(1.0, 1.0),
                        help="relative learner speeds, e.g. 1 3")
    parser.add_argument("--quick", action="store_true",
                        help="2 iterations of 400 steps, 4 epochs (for CI)")
    args = parser.parse_args()
    iterations, batch, epochs = (2, 400, 4) if args.quick else (args.iterations, 2000, 10)

    ember.init(num_cpus=2)  # the two learners hold one CPU each; env runners hold none
    config = (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=2, num_envs_per_env_runner=4)
        .learners(num_learners=2, learner_weights=args.weights)
        .training(lr=3e-4, gamma=0.99, lambda_=0.95, clip_param=0.2, vf_loss_coeff=0.5,
                  entropy_coeff=0.0, train_batch_size=batch, minibatch_size=batch // 8,
                  num_epochs=epochs, grad_clip=0.5)
        .debugging(seed=0)
    )
    with config.build() as algo:
        for _ in range(iterations):
            result = algo.train()
            print(f"iter {result['training_iteration']:2d}  "
                  f"return {result['episode_return_mean']:6.1f}  "
                  f"steps {result['num_env_steps_sampled']:6d}  "
                  f"shares {result['learner_shares']}  "
                  f"policy_loss {result['policy_loss']:+.3f}  "
                  f"{result['time_this_iter_s']:.1f}s")
            if result["episode_return_mean"] >= 195:
                break
        checkpoint = algo.save(tempfile.mkdtemp(prefix="ember-ppo-"))
    print(f"saved to {checkpoint}")

    with PPO.from_checkpoint(checkpoint) as restored:
        env = gym.make("CartPole-v1")
        obs, _ = env.reset(seed=123)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(restored.compute_single_action(obs))
            total += float(reward)
            done = terminated or truncated
        print(f"greedy episode with the restored policy: return {total:.0f}")
    ember.shutdown()


if __name__ == "__main__":
    main()
