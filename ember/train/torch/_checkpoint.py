"""``TorchCheckpoint``: Ray 2.5's checkpoint of a torch model or state dict."""

from __future__ import annotations

import copy
from typing import Any

import torch

from ember.train._checkpoint import PREPROCESSOR_KEY, Checkpoint

MODEL_KEY = "model"  # Ray 2.5's key of the model in a dict checkpoint


class TorchCheckpoint(Checkpoint):
    """A ``Checkpoint`` that holds a torch model, or its state dict (Ray 2.5's
    ``ray.train.torch.TorchCheckpoint``): a dict checkpoint with the key ``"model"``::

        session.report({"loss": loss}, checkpoint=TorchCheckpoint.from_state_dict(
            model.module.state_dict()))
        ...
        model = TorchCheckpoint.from_checkpoint(result.checkpoint).get_model(MyModel())
    """

    @classmethod
    def from_model(cls, model: torch.nn.Module, *,
                   preprocessor: Any = None) -> TorchCheckpoint:
        """A checkpoint of the whole ``model`` (pickled, its class by reference unless
        cloudpickle must ship it by value), and optionally a fitted preprocessor. A model
        wrapped by ``prepare_model`` (DDP) is saved unwrapped."""
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"TorchCheckpoint.from_model() takes a torch.nn.Module, got "
                            f"{type(model).__name__}; for a state dict use from_state_dict()")
        return cls.from_dict({MODEL_KEY: _unwrapped(model), PREPROCESSOR_KEY: preprocessor})

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, Any], *,
                        preprocessor: Any = None) -> TorchCheckpoint:
        """A checkpoint of a model's ``state_dict()``, and optionally a fitted preprocessor;
        ``get_model(model)`` loads it into ``model``."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"TorchCheckpoint.from_state_dict() takes a dict (a model's "
                            f"state_dict()), got {type(state_dict).__name__}")
        return cls.from_dict({MODEL_KEY: state_dict, PREPROCESSOR_KEY: preprocessor})

    def get_model(self, model: torch.nn.Module | None = None) -> torch.nn.Module:
        """The model in this checkpoint. For a state dict, pass the ``model`` to load it into
        (a ``module.`` prefix, left by DDP, is removed); for a whole model, ``model`` is not
        needed (if given, it gets the saved model's weights)."""
        data = self.to_dict()
        if MODEL_KEY not in data:
            raise ValueError(f"{self!r} holds no model (its keys: {sorted(map(str, data))}); "
                             "make it with TorchCheckpoint.from_model() or from_state_dict()")
        saved = data[MODEL_KEY]
        if isinstance(saved, torch.nn.Module):
            if model is None:
                return saved
            saved = saved.state_dict()
        if not isinstance(saved, dict):
            raise ValueError(f"{self!r} holds a {type(saved).__name__} under 'model'; expected "
                             "a torch.nn.Module or a state dict")
        if model is None:
            raise ValueError("this checkpoint holds a state dict, not a model: pass the model "
                             "to load it into, get_model(MyModel())")
        saved = copy.copy(saved)  # the prefix is removed in place: not in the caller's dict
        torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(saved, "module.")
        model.load_state_dict(saved)
        return model


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model.module  # type: ignore[no-any-return]
    return model
