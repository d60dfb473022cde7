"""GAE, advantage normalisation and PPO's loss, checked against slow definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ember.rl._math import (
    adapt_kl_coeff,
    compute_gae,
    explained_variance,
    next_values,
    normalize_advantages,
    ppo_loss,
)


def reference_gae(rewards, values, next_vals, terminateds, truncateds, gamma, lambda_):
    """A_t = sum_l (gamma lambda)^l delta_{t+l}, summed forward until the episode ends."""
    steps, envs = rewards.shape
    advantages = np.zeros((steps, envs))
    for n in range(envs):
        for t in range(steps):
            total, factor = 0.0, 1.0
            for k in range(t, steps):
                bootstrap = 0.0 if terminateds[k, n] else next_vals[k, n]
                delta = rewards[k, n] + gamma * bootstrap - values[k, n]
                total += factor * delta
                if terminateds[k, n] or truncateds[k, n]:
                    break
                factor *= gamma * lambda_
            advantages[t, n] = total
    return advantages


@st.composite
def rollouts(draw):
    steps = draw(st.integers(1, 12))
    envs = draw(st.integers(1, 4))
    floats = st.floats(-10, 10, allow_nan=False, width=32)
    shape = (steps, envs)
    rewards = draw(hnp.arrays(np.float64, shape, elements=floats))
    values = draw(hnp.arrays(np.float64, shape, elements=floats))
    last = draw(hnp.arrays(np.float64, (envs,), elements=floats))
    finals = draw(hnp.arrays(np.float64, shape, elements=floats))
    ends = draw(hnp.arrays(np.int8, shape, elements=st.integers(0, 2)))  # 0 go, 1 term, 2 trunc
    gamma = draw(st.floats(0, 1))
    lambda_ = draw(st.floats(0, 1))
    return rewards, values, last, finals, ends == 1, ends == 2, gamma, lambda_


@given(rollouts())
def test_gae_matches_the_definition_summed_forward(rollout):
    rewards, values, last, finals, terminated, truncated, gamma, lambda_ = rollout
    nxt = next_values(values, last, truncated, finals)

    advantages, targets = compute_gae(rewards, values, nxt, terminated, truncated,
                                      gamma=gamma, lambda_=lambda_)

    expected = reference_gae(rewards, values, nxt, terminated, truncated, gamma, lambda_)
    np.testing.assert_allclose(advantages, expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(targets, expected + values, rtol=1e-4, atol=1e-3)


def test_lambda_one_gives_discounted_returns_minus_values():
    rewards = np.ones((3, 1))
    values = np.array([[0.5], [0.25], [0.125]])
    no_truncation = np.zeros((3, 1), bool)
    nxt = next_values(values, np.array([7.0]), no_truncation, np.zeros((3, 1)))
    advantages, targets = compute_gae(rewards, values, nxt,
                                      np.array([[0], [0], [1]], bool), no_truncation,
                                      gamma=0.5, lambda_=1.0)

    np.testing.assert_allclose(targets[:, 0], [1 + 0.5 + 0.25, 1 + 0.5, 1.0])
    np.testing.assert_allclose(advantages[:, 0], targets[:, 0] - values[:, 0])


def test_truncation_bootstraps_from_the_final_observation_but_termination_does_not():
    values = np.array([[1.0, 1.0]])
    last = np.array([100.0, 100.0])  # the first obs of the next episode: must not be used
    finals = np.array([[3.0, 3.0]])
    terminated = np.array([[True, False]])
    truncated = np.array([[False, True]])
    nxt = next_values(values, last, truncated, finals)

    advantages, _ = compute_gae(np.zeros((1, 2)), values, nxt, terminated, truncated,
                                gamma=0.9, lambda_=0.95)

    np.testing.assert_allclose(advantages[0], [-1.0, 0.9 * 3.0 - 1.0])


def test_an_episode_end_stops_advantages_leaking_backwards():
    rewards = np.array([[0.0], [10.0]])
    values = np.zeros((2, 1))
    done_first = np.array([[True], [False]])
    advantages, _ = compute_gae(rewards, values, np.zeros((2, 1)), done_first,
                                np.zeros((2, 1), bool), gamma=1.0, lambda_=1.0)

    assert advantages[0, 0] == 0.0
    assert advantages[1, 0] == 10.0


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\[T, N\]"):
        compute_gae(np.zeros((2, 1)), np.zeros((3, 1)), np.zeros((2, 1)), np.zeros((2, 1)),
                    np.zeros((2, 1)), gamma=0.9, lambda_=0.9)


@given(hnp.arrays(np.float64, st.integers(2, 50), elements=st.floats(-1e3, 1e3))
       .filter(lambda a: a.std() > 1e-3))
def test_normalised_advantages_have_zero_mean_and_unit_std(advantages):
    normalised = normalize_advantages(advantages)

    assert abs(normalised.mean()) < 1e-4
    assert abs(normalised.std() - 1) < 1e-3


def test_normalising_constant_advantages_gives_zeros_not_nan():
    assert np.all(normalize_advantages(np.full(5, 3.0)) == 0)


def loss(logp, old_logp, adv, values=None, targets=None, entropy=None, **kw):
    n = len(logp)
    terms = ppo_loss(torch.tensor(logp), torch.tensor(old_logp), torch.tensor(adv),
                     torch.zeros(n) if values is None else torch.tensor(values),
                     torch.zeros(n) if targets is None else torch.tensor(targets),
                     torch.zeros(n) if entropy is None else torch.tensor(entropy),
                     **{"clip_param": 0.2, "vf_loss_coeff": 0.5, "entropy_coeff": 0.01, **kw})
    return terms


def test_surrogate_is_clipped_above_for_positive_advantages():
    # ratio e^1 ~ 2.72 > 1.2: the gain is capped at 1.2 * A and the gradient is zero.
    logp = torch.tensor([1.0], requires_grad=True)
    terms = ppo_loss(logp, torch.tensor([0.0]), torch.tensor([2.0]), torch.zeros(1),
                     torch.zeros(1), torch.zeros(1), clip_param=0.2, vf_loss_coeff=0.5,
                     entropy_coeff=0.0)
    terms.total.backward()

    assert terms.policy.item() == pytest.approx(-1.2 * 2.0)
    assert logp.grad is not None and logp.grad.item() == 0.0
    assert terms.clip_fraction.item() == 1.0


def test_surrogate_is_not_clipped_when_it_would_help_a_negative_advantage():
    # ratio e^1 with A < 0: min picks the unclipped (worse) term, so the gradient still pushes.
    terms = loss([1.0], [0.0], [-2.0])
    assert terms.policy.item() == pytest.approx(np.e * 2.0, rel=1e-6)


def test_inside_the_clip_range_the_loss_is_minus_ratio_times_advantage():
    terms = loss([0.1, -0.1], [0.0, 0.0], [1.0, 3.0])
    expected = -np.mean([np.exp(0.1) * 1.0, np.exp(-0.1) * 3.0])
    assert terms.policy.item() == pytest.approx(expected, rel=1e-6)
    assert terms.clip_fraction.item() == 0.0


def test_total_combines_policy_value_and_entropy_with_their_coefficients():
    terms = loss([0.0, 0.0], [0.0, 0.0], [1.0, -1.0], values=[1.0, 2.0], targets=[0.0, 0.0],
                 entropy=[0.5, 1.5], vf_loss_coeff=0.25, entropy_coeff=0.1)

    assert terms.value.item() == pytest.approx(2.5)
    assert terms.entropy.item() == pytest.approx(1.0)
    assert terms.total.item() == pytest.approx(0.0 + 0.25 * 2.5 - 0.1 * 1.0)


def test_approx_kl_is_zero_for_the_same_policy_and_positive_otherwise():
    assert loss([0.3], [0.3], [1.0]).approx_kl.item() == 0.0
    assert loss([0.3, -0.2], [0.0, 0.0], [1.0, 1.0]).approx_kl.item() > 0


def test_vf_clip_param_caps_each_samples_squared_error_and_its_gradient():
    # errors 1 and 4 (squared 1 and 16), cap 4: mean(1, 4) = 2.5; the capped sample gets no
    # gradient (as RLlib's clamp of each sample's value loss), the other still does.
    values = torch.tensor([1.0, 4.0], requires_grad=True)
    terms = ppo_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), values, torch.zeros(2),
                     torch.zeros(2), clip_param=0.2, vf_loss_coeff=1.0, entropy_coeff=0.0,
                     vf_clip_param=4.0)
    terms.total.backward()

    assert terms.value.item() == pytest.approx(2.5)
    assert values.grad is not None and values.grad.tolist() == [1.0, 0.0]
    assert loss([0.0, 0.0], [0.0, 0.0], [0.0, 0.0], values=[1.0, 4.0], targets=[0.0, 0.0],
                vf_clip_param=None).value.item() == pytest.approx(8.5)


def test_explained_variance_is_one_when_perfect_zero_for_the_mean_and_nan_for_constants():
    targets = np.array([1.0, 2.0, 3.0, 6.0])
    assert explained_variance(targets, targets) == pytest.approx(1.0)
    assert explained_variance(targets, np.full(4, targets.mean())) == pytest.approx(0.0)
    assert explained_variance(targets, -targets) < 0
    assert np.isnan(explained_variance(np.ones(3), np.zeros(3)))


def test_kl_coeff_adds_the_kl_estimate_to_the_total_and_pulls_back_towards_the_old_policy():
    logp = torch.tensor([0.5, -0.5], requires_grad=True)
    plain = ppo_loss(logp, torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2),
                     torch.zeros(2), clip_param=0.2, vf_loss_coeff=0.0, entropy_coeff=0.0)
    penalised = ppo_loss(logp, torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2),
                         torch.zeros(2), clip_param=0.2, vf_loss_coeff=0.0, entropy_coeff=0.0,
                         kl_coeff=0.5)
    penalised.total.backward()

    kl = np.mean([np.exp(0.5) - 1 - 0.5, np.exp(-0.5) - 1 + 0.5])
    assert penalised.approx_kl.item() == plain.approx_kl.item() == pytest.approx(kl, rel=1e-6)
    assert penalised.total.item() == pytest.approx(plain.total.item() + 0.5 * kl, rel=1e-6)
    # d/dlogp of 0.5 * mean(e^d - 1 - d) = 0.25 * (e^d - 1): towards the old log-probability
    assert logp.grad is not None
    np.testing.assert_allclose(logp.grad.numpy(), 0.25 * (np.exp([0.5, -0.5]) - 1), rtol=1e-6)


@pytest.mark.parametrize(("kl", "expected"), [
    (0.05, 0.3), (0.021, 0.3), (0.02, 0.2), (0.01, 0.2), (0.005, 0.2), (0.004, 0.1),
    (float("nan"), 0.2),
])
def test_kl_coeff_adapts_as_rllibs_towards_the_target(kl, expected):
    assert adapt_kl_coeff(0.2, kl, kl_target=0.01) == pytest.approx(expected)

