"""ember.rl's Adam against torch.optim.Adam, and the numpy MLP policy against the torch MLP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ember.rl._models import MLPModel, NatureCNN, get_weights
from ember.rl._numpy_policy import NumpyMLPPolicy, is_mlp_weights
from ember.rl._optim import Adam


def two_copies() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    a = MLPModel(4, 3, (8, 8))
    b = MLPModel(4, 3, (8, 8))
    b.load_state_dict(a.state_dict())
    return a, b


def test_adam_takes_torch_adams_steps_and_resumes_from_its_state():
    mine, theirs = two_copies()
    ours = Adam(mine.parameters(), lr=0.05, eps=1e-5)
    reference = torch.optim.Adam(theirs.parameters(), lr=0.05, eps=1e-5)
    rng = np.random.default_rng(0)

    def step(model, optimizer):
        obs = torch.as_tensor(rng.normal(size=(16, 4)).astype(np.float32))
        logits, values = model(obs)
        optimizer.zero_grad()
        (logits.square().mean() + values.mean()).backward()
        optimizer.step()

    for _ in range(5):
        state = rng.bit_generator.state
        step(mine, ours)
        rng.bit_generator.state = state  # the same observations for both
        step(theirs, reference)
    for (name, p), q in zip(mine.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert any(not torch.equal(p, q) for p, q in zip(mine.parameters(),
                                                     two_copies()[0].parameters(), strict=True))

    # a fresh optimizer loaded with the state continues exactly where this one is
    resumed_model, _ = two_copies()
    resumed_model.load_state_dict(mine.state_dict())
    resumed = Adam(resumed_model.parameters(), lr=0.05, eps=1e-5)
    resumed.load_state_dict(ours.state_dict())
    state = rng.bit_generator.state
    step(mine, ours)
    rng.bit_generator.state = state
    step(resumed_model, resumed)
    for p, q in zip(mine.parameters(), resumed_model.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_adam_refuses_state_of_another_model():
    small = Adam(MLPModel(4, 2, (8,)).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="another model"):
        small.load_state_dict(Adam(MLPModel(4, 2).parameters(), lr=0.1).state_dict())


def test_numpy_policy_computes_the_torch_mlps_logits_and_values():
    torch.manual_seed(1)
    model = MLPModel(6, 3, (32, 16))
    with torch.no_grad():  # non-zero biases and output layers, so that all of them count
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    obs = np.random.default_rng(0).normal(size=(5, 2, 3)).astype(np.float32)  # flattened to 6
    policy = NumpyMLPPolicy(get_weights(model))

    logits, values = policy.logits_and_values(obs)

    expected_logits, expected_values = model(torch.as_tensor(obs))
    np.testing.assert_allclose(logits, expected_logits.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(values, expected_values.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(policy.values(obs), values)


def test_numpy_policy_samples_by_the_softmax_and_reports_log_probabilities():
    weights = get_weights(MLPModel(2, 3, (4,)))
    weights["pi.2.weight"][:] = 0  # logits = bias: probabilities 0.2, 0.3, 0.5 everywhere
    weights["pi.2.bias"][:] = np.log([0.2, 0.3, 0.5])
    policy = NumpyMLPPolicy(weights)
    obs = np.zeros((20_000, 2), np.float32)

    actions, logp, values = policy.act(obs, np.random.default_rng(0))

    frequencies = np.bincount(actions, minlength=3) / len(actions)
    np.testing.assert_allclose(frequencies, [0.2, 0.3, 0.5], atol=0.015)
    np.testing.assert_allclose(logp, np.log([0.2, 0.3, 0.5])[actions], rtol=1e-5)
    assert values.shape == (20_000,) and actions.dtype == np.int64
    again, _, _ = policy.act(obs, np.random.default_rng(0))
    np.testing.assert_array_equal(actions, again)  # seeded: reproducible


def test_only_mlp_weights_go_to_the_numpy_policy():
    assert is_mlp_weights(get_weights(MLPModel(4, 2)))
    assert not is_mlp_weights(get_weights(NatureCNN(4, 6)))
    with pytest.raises(ValueError, match="not an MLPModel"):
        NumpyMLPPolicy({"vf.0.weight": np.zeros((1, 1)), "vf.0.bias": np.zeros(1)})
