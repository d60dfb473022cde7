"""Batch text generation with ember.data: a small language model on a pool of actors.

Run it from the repository root::

    .venv/bin/python examples/data_text_inference.py [--quick]

Nothing is downloaded. It builds a text corpus from the docstrings of Python's standard library,
trains a tiny byte-level language model on it with torch (1,500 steps, loss from 5.5 to about
2), saves it, and then
completes a dataset of prompts with ``map_batches`` on an actor pool of 2 (each actor loads the
model once in its constructor). It prints the training loss, ``ds.show()`` of the completions
(prompt and continuation) and ``ds.stats()``. About 20 s on 2 CPUs. ``--quick`` (what CI runs)
trains 50 steps (the completions are gibberish then) and completes 8 prompts, not 32.
"""

from __future__ import annotations

import argparse
import inspect
import os
import tempfile
import time

import numpy as np
import torch

import ember
from ember.data import ActorPoolStrategy

CONTEXT = 32  # bytes of context the model sees


class ByteModel(torch.nn.Module):
    """Embeds the last CONTEXT bytes and predicts the next one (a small MLP language model)."""

    def __init__(self, width: int = 128) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(256, 16)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(16 * CONTEXT, width), torch.nn.ReLU(), torch.nn.Linear(width, 256))

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.net(self.embed(context).flatten(1))


def corpus() -> bytes:
    """Docstrings of a few standard-library modules: text that is on every machine."""
    import collections
    import json
    import pathlib
    import textwrap

    docs = []
    for module in (collections, json, pathlib, textwrap, inspect, tempfile):
        for _, obj in inspect.getmembers(module):
            doc = inspect.getdoc(obj)
            if doc and len(doc) > 80:
                docs.append(doc)
    return "\n\n".join(docs).encode("ascii", "ignore")


def train(text: bytes, steps: int = 1500) -> ByteModel:
    torch.manual_seed(0)
    data = torch.tensor(list(text), dtype=torch.long)
    model = ByteModel()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    started = time.perf_counter()
    for step in range(steps):
        starts = torch.randint(0, len(data) - CONTEXT - 1, (256,))
        context = torch.stack([data[s : s + CONTEXT] for s in starts])
        target = data[starts + CONTEXT]
        loss = torch.nn.functional.cross_entropy(model(context), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 300 == 0 or step == steps - 1:
            print(f"  step {step:5d}  loss {loss.item():.3f}  ({time.perf_counter() - started:.1f} s)")
    return model.eval()


class Completer:
    """Built once per actor: loads the saved model, then completes batch after batch."""

    def __init__(self, path: str, length: int) -> None:
        torch.set_num_threads(1)
        self.model = ByteModel()
        self.model.load_state_dict(torch.load(path))
        self.model.eval()
        self.length = length

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        prompts = [p.encode("ascii", "ignore")[-CONTEXT:].rjust(CONTEXT) for p in batch["item"]]
        context = torch.tensor([list(p) for p in prompts], dtype=torch.long)
        generator = torch.Generator().manual_seed(0)
        out = []
        with torch.no_grad():
            for _ in range(self.length):
                probs = torch.softmax(self.model(context) / 0.7, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator)
                out.append(nxt)
                context = torch.cat([context[:, 1:], nxt], dim=1)
        tokens = torch.cat(out, dim=1).tolist()
        completions = [bytes(t).decode("ascii", "replace") for t in tokens]
        return {"prompt": batch["item"], "completion": np.array(completions, dtype=object)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="50 training steps and 8 prompts (for CI)")
    quick = parser.parse_args().quick
    text = corpus()
    print(f"corpus: {len(text):,} bytes of standard-library docstrings")
    model = train(text, steps=50 if quick else 1500)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "byte_model.pt")
        torch.save(model.state_dict(), path)
        prompts = ["Return a new ", "The default value ", "Raise ValueError if ",
                   "This function ", "If the path ", "A list of ", "Create a ", "Open the "]
        prompts *= 1 if quick else 4
        ds = ember.data.from_items(prompts).map_batches(
            Completer, compute=ActorPoolStrategy(size=2), fn_constructor_args=(path, 40),
            batch_size=8)
        ds = ds.materialize()
        ds.show(8)
        print(ds.stats())
    ember.shutdown()


if __name__ == "__main__":
    main()
