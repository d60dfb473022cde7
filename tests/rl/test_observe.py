"""The dashboard's ``"rl"`` view: one event per iteration with the numbers ``train()``
returned, the return curve's points."""

from __future__ import annotations

from ember.dashboard import _server
from ember.rl._observe import IterationView


def test_each_iteration_is_an_event_of_its_numbers(ember_local):
    view = IterationView("PPO", "CartPole-v1", num_env_runners=2, num_learners=1)
    view.iteration({"training_iteration": 1, "episode_return_mean": 21.5,
                    "learner_shares": [200, 200], "done": False})
    view.iteration({"training_iteration": 2, "episode_return_mean": float("nan")})
    view.stopped()

    service = _server.current()
    assert service is not None
    shown = service.views("rl")[view.key]
    assert view.key.startswith("PPO_CartPole-v1_")
    assert shown["state"]["status"] == "stopped"
    assert shown["events"] == [{"training_iteration": 1.0, "episode_return_mean": 21.5},
                               {"training_iteration": 2.0, "episode_return_mean": None}]
