"""An LLM's whole life on one machine with ember: data -> train -> batch inference -> serve -> RL.

Run it from the repository root (``make demo`` sets up ``.venv`` first)::

    .venv/bin/python examples/llm_lifecycle.py [--quick] [--out demo_output]
        [--storage PATH_OR_S3_URL] [--s3-endpoint URL] [--local-s3] [--address HOST:PORT]
        [--hold]

Nothing is downloaded and no cluster is needed: everything runs on ember's embedded local
backend. The same script runs on a Ray cluster: ``--address <head-ip>:6379`` (or
``EMBER_BACKEND=ray EMBER_ADDRESS=auto`` on a node of the cluster) connects to it, and the
banner says which backend runs it and on how many nodes. The five stages:

1. **data**: builds a text corpus from the docstrings of Python's standard library, tokenizes it
   byte by byte with ``map_batches`` into windows of 64 tokens, and writes Parquet shards
   (``OUT/data/pretrain``; and ``OUT/data/finetune``, a different slice: ``unittest`` and
   ``doctest``).
2. **train**: trains a tiny GPT-2 (``transformers.GPT2Config``, 2 layers) with ``TorchTrainer``
   on 2 workers fed by ``streaming_split`` of the Parquet dataset. The model is sharded with
   FSDP2 and every worker uploads its own checkpoint shard to the storage path (a local folder,
   or ``s3://...``). Then a short fine-tune from that checkpoint on the other slice makes a
   second variant: ``base`` and ``tuned``.
3. **batch inference**: completes a set of prompts with both variants through ``map_batches`` on
   an ``ActorPoolStrategy(size=2)`` pool (each actor loads both checkpoints from storage once)
   and ``show()``s the results.
4. **serve**: puts both variants behind one OpenAI-compatible endpoint
   (``ember.serve.llm.build_openai_app``: the request's ``model`` picks the variant); the
   ``openai`` client on 127.0.0.1 streams one completion from each variant, printing every chunk
   with its arrival time, then sends a burst of concurrent requests and prints how many
   sequences the engines decoded together (continuous batching).
5. **rl**: PPO on CartPole-v1 with 2 env runners and 2 learners until the mean return reaches 450
   or the time budget runs out, printing the return curve.

It ends with a summary table (stage, wall time, key figure), also written to ``OUT/summary.md``,
and two plots, ``OUT/training_loss.png`` and ``OUT/ppo_return.png``. ``--quick`` is a reduced
run (a few training steps, 3 PPO iterations) for CI. A failed stage ends the run with exit code
1 and a message that names the stage; everything started is shut down either way. ``OUT`` must be
new, empty, or the folder of an earlier run (which is then replaced).

About 3.5 minutes on 2 busy CPU cores (``--quick``: about 1 minute).

The dashboard runs while it does: the URL printed at the start (127.0.0.1, with its token)
shows the actors, tasks, the dataset runs, the training loss, the serve deployment and the PPO
return curve live. ``--hold`` keeps the program (and the dashboard) up after the last stage,
until Ctrl+C; ``ember status`` and ``ember list actors`` look at it from another shell.

S3: ``--storage s3://bucket/path`` uses any S3 endpoint, given by the usual AWS environment
variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``...) or ``--s3-endpoint``; ``--local-s3``
starts moto's S3-compatible server on 127.0.0.1 and keeps the checkpoints there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.util
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import ember
from ember import serve
from ember.data import ActorPoolStrategy
from ember.rl import PPOConfig
from ember.train import Checkpoint, CheckpointConfig, Result, RunConfig, ScalingConfig
from ember.train.torch import TorchTrainer

CONTEXT = 64  # tokens (bytes) per training window, and the model's context length
VARIANTS = ("base", "tuned")
PROMPTS = ["Return a new ", "Fail if the ", "The default value ", "Raise ValueError if ",
           "Assert that ", "This method ", "If the path ", "Test that "]

# Modules whose docstrings make the corpus: the first list pre-trains, the second fine-tunes.
PRETRAIN_MODULES = ["argparse", "asyncio.events", "asyncio.streams", "asyncio.tasks", "ast",
                    "calendar", "codecs", "collections", "configparser", "contextlib", "copy",
                    "csv", "dataclasses", "datetime", "decimal", "difflib", "email.message",
                    "enum", "fnmatch", "fractions", "functools", "gettext", "glob", "gzip",
                    "heapq", "http.client", "http.cookiejar", "imaplib", "inspect", "ipaddress",
                    "itertools", "json", "locale", "logging", "mailbox", "optparse", "os",
                    "pathlib", "pickle", "pprint", "queue", "random", "sched", "selectors",
                    "shlex", "shutil", "smtplib", "socket", "statistics", "string", "subprocess",
                    "tarfile", "tempfile", "textwrap", "threading", "tokenize", "traceback",
                    "typing", "urllib.parse", "urllib.request", "uuid", "warnings", "weakref",
                    "zipfile"]
FINETUNE_MODULES = ["unittest.case", "unittest.mock", "doctest"]


# -- the model --------------------------------------------------------------------------------
def build_gpt2() -> Any:
    """A tiny GPT-2 built from its config: byte vocabulary, 2 layers, 64-wide, 64 tokens."""
    import torch
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=256, n_positions=CONTEXT, n_embd=64, n_layer=2, n_head=4,
                        bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
    return GPT2LMHeadModel(config)


def load_variant(path: str) -> Any:
    """The GPT-2 whose sharded (DCP) checkpoint is at ``path``, local or in S3, for inference."""
    import warnings

    import torch

    from ember.train.torch import load_sharded

    torch.set_num_threads(1)
    model = build_gpt2()
    state = {"model": model.state_dict()}
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process"
        warnings.simplefilter("ignore", UserWarning)
        load_sharded(state, Checkpoint(path))
    model.load_state_dict(state["model"])
    return model.eval()


def generate(model: Any, prompt: str, length: int) -> Iterator[str]:
    """Sample ``length`` printable bytes after ``prompt``, one at a time (temperature 0.7), with
    a seed of its own for each prompt."""
    import torch

    generator = torch.Generator().manual_seed(zlib.crc32(prompt.encode()))
    ids = torch.tensor([list(prompt.encode("ascii", "ignore"))], dtype=torch.long)
    unprintable = torch.ones(256, dtype=torch.bool)
    unprintable[32:127] = False
    unprintable[ord("\n")] = False
    with torch.no_grad():
        for _ in range(length):
            logits = model(input_ids=ids[:, -CONTEXT:]).logits[:, -1]
            logits[:, unprintable] = -float("inf")
            nxt = torch.multinomial(torch.softmax(logits / 0.7, dim=-1), 1, generator=generator)
            ids = torch.cat([ids, nxt], dim=1)
            yield bytes([int(nxt)]).decode("ascii", "replace")


# -- 1. data ----------------------------------------------------------------------------------
def docstrings(module_names: list[str]) -> list[dict[str, str]]:
    """One row per distinct docstring of the modules and of their public classes, functions and
    methods: text that is on every machine. Shuffled, so that each batch mixes modules."""
    import importlib
    import inspect
    import random
    import warnings

    rows: list[dict[str, str]] = []
    seen: set[str] = set()

    def add(module: str, obj: Any) -> None:
        doc = getattr(obj, "__doc__", None)
        doc = inspect.cleandoc(doc) if isinstance(doc, str) else ""
        if len(doc) > 80 and doc not in seen:
            seen.add(doc)
            rows.append({"module": module, "text": doc})

    with warnings.catch_warnings():  # a few modules warn about their deprecated members
        warnings.simplefilter("ignore")
        for name in module_names:
            module = importlib.import_module(name)
            add(name, module)
            for attr, obj in vars(module).items():
                defined_here = (getattr(obj, "__module__", None) or "").startswith(name)
                if attr.startswith("_") or not defined_here or not (
                        inspect.isclass(obj) or inspect.isroutine(obj)):
                    continue
                add(name, obj)
                for member_name, member in vars(obj).items() if inspect.isclass(obj) else ():
                    if not member_name.startswith("_") and (
                            inspect.isroutine(member) or isinstance(member, property)):
                        add(name, member)
    random.Random(0).shuffle(rows)
    return rows


def tokenize(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Byte-level tokenizer: the batch's texts joined, cut into windows of CONTEXT bytes."""
    stream = b"".join(t.encode("ascii", "ignore") + b"\n\n" for t in batch["text"])
    tokens = np.frombuffer(stream, dtype=np.uint8)
    n = len(tokens) // CONTEXT
    return {"tokens": tokens[: n * CONTEXT].reshape(n, CONTEXT).astype(np.int64)}


# -- 2. train ---------------------------------------------------------------------------------
def train_loop(config: dict[str, Any]) -> None:
    """Each worker: a GPT-2 sharded with FSDP2, trained on its share of the Parquet rows; every
    ``checkpoint_every`` steps and at the end, each rank saves its own shard and uploads it."""
    import warnings

    import torch
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        set_model_state_dict,
    )

    from ember import train
    from ember.train.torch import load_sharded, prepare_model, save_sharded

    # GPT-2's output is a view, and nothing here modifies it in place: the warning does not apply
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    torch.set_num_threads(1)
    rank = train.get_context().get_world_rank()
    model = prepare_model(build_gpt2(), parallel_strategy="fsdp")
    step = 0
    checkpoint = train.get_checkpoint()
    if checkpoint is not None:  # the fine-tune starts from the base model's shards
        state = {"model": get_model_state_dict(model)}
        load_sharded(state, checkpoint)
        set_model_state_dict(model, state["model"])
        step = int(checkpoint.metrics["step"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"])
    shard = train.get_dataset_shard("train")
    started, losses, last = time.perf_counter(), [], step + config["steps"]
    epoch = 0
    while step < last:
        for batch in shard.iter_torch_batches(batch_size=config["batch_size"]):
            tokens = batch["tokens"].long()
            loss = model(input_ids=tokens, labels=tokens).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            losses.append(loss.item())
            if step % config["report_every"] == 0 or step == last:
                metrics = {"step": step, "epoch": epoch, "loss": float(np.mean(losses))}
                losses = []
                save = step % config["checkpoint_every"] == 0 or step == last
                if save:  # each rank writes and uploads its own shard
                    with tempfile.TemporaryDirectory(prefix="ember-demo-") as folder:
                        save_sharded({"model": get_model_state_dict(model)}, folder)
                        train.report(metrics, checkpoint=Checkpoint.from_directory(folder))
                else:
                    train.report(metrics)
                if rank == 0:
                    print(f"    [{config['variant']}] step {step:4d}  epoch {epoch}  "
                          f"loss {metrics['loss']:.3f}  ({time.perf_counter() - started:.0f} s)"
                          f"{'  checkpoint uploaded' if save else ''}", flush=True)
            if step == last:
                break
        epoch += 1


# -- 3. batch inference -----------------------------------------------------------------------
class Completer:
    """Built once per actor: loads both variants, then completes batch after batch."""

    def __init__(self, variants: dict[str, str], length: int) -> None:
        self.models = {name: load_variant(path) for name, path in variants.items()}
        self.length = length

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, Any] = {"prompt": batch["item"]}
        for name, model in self.models.items():
            out[name] = np.array(["".join(generate(model, prompt, self.length))
                                  for prompt in batch["item"]], dtype=object)
        return out


# -- 4. serve ---------------------------------------------------------------------------------
def load_for_serving(path: str) -> tuple[Any, Any]:
    """A variant and its tokenizer (token id = byte, as in training), for the LLM server."""
    from ember.serve.llm import byte_tokenizer

    return load_variant(path), byte_tokenizer(eos_token_id=0)


def openai_client(base_url: str, asynchronous: bool = False) -> Any:
    import openai

    kind = openai.AsyncOpenAI if asynchronous else openai.OpenAI
    return kind(base_url=base_url, api_key="not-needed", max_retries=0, timeout=120)


def load_variants(base_url: str, variants: list[str]) -> None:
    """One tiny request per variant, side by side: the server loads each on first use."""
    async def load(client: Any, variant: str) -> None:
        started = time.perf_counter()
        await client.completions.create(model=variant, prompt="a", max_tokens=1)
        print(f"    {variant}: loaded from its checkpoint in {time.perf_counter() - started:.1f} s")

    async def main() -> None:
        async with openai_client(base_url, asynchronous=True) as client:
            await asyncio.gather(*(load(client, variant) for variant in variants))

    asyncio.run(main())


def stream_completion(base_url: str, variant: str, prompt: str, length: int) -> list[float]:
    """Stream one completion; print each chunk with its arrival time."""
    print(f"    {variant}: {prompt!r} ->")
    started = time.perf_counter()
    arrivals: list[float] = []
    text = ""
    tokens = 0
    line = "     "
    with openai_client(base_url) as client:
        stream = client.completions.create(model=variant, prompt=prompt, max_tokens=length,
                                           temperature=0.7, seed=zlib.crc32(prompt.encode()),
                                           stream=True, stream_options={"include_usage": True})
        for part in stream:
            if part.usage is not None:
                tokens = part.usage.completion_tokens
            if not part.choices or not part.choices[0].text:
                continue
            elapsed = time.perf_counter() - started
            arrivals.append(elapsed)
            chunk = part.choices[0].text
            text += chunk
            cell = f" +{elapsed * 1000:4.0f}ms {chunk!r}"
            if len(line) + len(cell) > 96:
                print(line)
                line = "     "
            line += cell
    print(line)
    print(f"     = {prompt + text!r}  ({len(arrivals)} chunks, {tokens} tokens)")
    return arrivals


def burst(base_url: str, variants: list[str], per_variant: int, length: int
          ) -> tuple[int, float]:
    """``per_variant`` streamed requests for each variant, all at once; (tokens, seconds)."""
    async def one(client: Any, variant: str, i: int) -> int:
        stream = await client.completions.create(
            model=variant, prompt=PROMPTS[i % len(PROMPTS)], max_tokens=length,
            temperature=0.7, seed=i, stream=True, stream_options={"include_usage": True})
        tokens = 0
        async for part in stream:
            if part.usage is not None:
                tokens = part.usage.completion_tokens
        return tokens

    async def main() -> list[int]:
        async with openai_client(base_url, asynchronous=True) as client:
            return list(await asyncio.gather(*(one(client, v, i) for v in variants
                                               for i in range(per_variant))))

    started = time.perf_counter()
    tokens = asyncio.run(main())
    return sum(tokens), time.perf_counter() - started


# -- the run ----------------------------------------------------------------------------------
@dataclass
class Demo:
    out: str
    quick: bool
    storage: str
    stages: list[tuple[str, float, str]] = field(default_factory=list)
    loss_curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    returns: list[tuple[int, float]] = field(default_factory=list)
    serving: bool = False
    stamp: str = field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S"))

    @contextlib.contextmanager
    def stage(self, number: int, name: str, what: str) -> Iterator[dict[str, str]]:
        print(f"\n[{number}/5] {name}: {what}", flush=True)
        started = time.perf_counter()
        summary = {"figure": ""}
        try:
            yield summary
        except Exception as error:  # Ctrl-C goes on up as it is
            raise StageFailed(name, error) from error
        seconds = time.perf_counter() - started
        self.stages.append((name, seconds, summary["figure"]))
        print(f"    done in {seconds:.1f} s", flush=True)

    # 1 ----------------------------------------------------------------------------------------
    def data(self) -> dict[str, str]:
        paths = {}
        with self.stage(1, "data", "stdlib docstrings -> byte tokens -> Parquet") as summary:
            total_rows, total_bytes = 0, 0
            for split, modules in (("pretrain", PRETRAIN_MODULES),
                                   ("finetune", FINETUNE_MODULES)):
                docs = docstrings(modules)
                size = sum(len(d["text"]) for d in docs)
                path = os.path.join(self.out, "data", split)
                ds = ember.data.from_items(docs).map_batches(tokenize, batch_size=32)
                ds.write_parquet(path)
                written = ember.data.read_parquet(path)
                rows, shards = written.count(), len(os.listdir(path))
                print(f"    {split}: {len(docs)} docstrings from {len(modules)} modules, "
                      f"{size:,} chars -> {rows:,} windows of {CONTEXT} tokens "
                      f"in {shards} Parquet shards: {path}")
                paths[split] = path
                total_rows += rows
                total_bytes += size
            summary["figure"] = f"{total_bytes / 1e6:.2f} MB text, {total_rows:,} windows"
        return paths

    # 2 ----------------------------------------------------------------------------------------
    def train(self, data: dict[str, str]) -> dict[str, str]:
        steps = 8 if self.quick else 600
        tune_steps = 4 if self.quick else 120
        with self.stage(2, "train", "tiny GPT-2, TorchTrainer on 2 workers (FSDP2)") as summary:
            base = self._fit("base", data["pretrain"], steps=steps, lr=3e-3, resume=None)
            assert base.checkpoint is not None
            tuned = self._fit("tuned", data["finetune"], steps=tune_steps, lr=1e-3,
                              resume=base.checkpoint)
            assert tuned.checkpoint is not None
            variants = {"base": base.checkpoint.path, "tuned": tuned.checkpoint.path}
            for name, result in zip(VARIANTS, (base, tuned), strict=True):
                assert result.checkpoint is not None
                print(f"    {name}: checkpoint {result.checkpoint.path} "
                      f"(shards from ranks {result.checkpoint.ranks}), "
                      f"loss {result.checkpoint.metrics.get('loss', float('nan')):.3f}")
            base_loss = self.loss_curves["base"][-1][1]
            tuned_loss = self.loss_curves["tuned"][-1][1]
            summary["figure"] = (f"loss {self.loss_curves['base'][0][1]:.2f} -> {base_loss:.2f}"
                                 f" (base), {tuned_loss:.2f} (tuned)")
        return variants

    def _fit(self, variant: str, data: str, *, steps: int, lr: float,
             resume: Checkpoint | None) -> Result:
        print(f"  {variant}: {'fine-tune from ' + resume.path if resume else 'pre-train'}, "
              f"{steps} steps", flush=True)
        report_every = max(1, min(25, steps // 4))
        config = {"variant": variant, "lr": lr, "batch_size": 16, "steps": steps,
                  "report_every": report_every, "checkpoint_every": report_every * 8}
        result = TorchTrainer(
            train_loop, train_loop_config=config,
            # half a CPU each: the other one runs the Parquet reads that stream to the workers
            scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
            run_config=RunConfig(name=f"gpt2-{variant}-{self.stamp}", storage_path=self.storage,
                                 checkpoint_config=CheckpointConfig(num_to_keep=1)),
            datasets={"train": ember.data.read_parquet(data)},
            resume_from_checkpoint=resume,
        ).fit()
        self.loss_curves[variant] = [(int(m["step"]), float(m["loss"]))
                                     for m in result.metrics_history]
        return result

    # 3 ----------------------------------------------------------------------------------------
    def batch_inference(self, variants: dict[str, str]) -> None:
        length = 24 if self.quick else 48
        with self.stage(3, "batch inference", "both variants on an actor pool of 2") as summary:
            prompts = PROMPTS if self.quick else PROMPTS * 2
            ds = ember.data.from_items(prompts).map_batches(
                Completer, compute=ActorPoolStrategy(size=2), fn_constructor_args=(variants,
                                                                                    length),
                batch_size=4)
            ds = ds.materialize()
            ds.show(len(PROMPTS))
            path = os.path.join(self.out, "completions")
            ds.write_json(path)
            print(f"    {ds.count()} completions written to {path}")
            summary["figure"] = f"{ds.count()} prompts x {len(variants)} variants"

    # 4 ----------------------------------------------------------------------------------------
    def serve(self, variants: dict[str, str]) -> None:
        from ember.serve.llm import build_openai_app

        length = 16 if self.quick else 40
        per_variant = 8
        with self.stage(4, "serve", "both variants behind one OpenAI-compatible endpoint, "
                                    "continuous batching") as summary:
            sources = {name: functools.partial(load_for_serving, path)
                       for name, path in variants.items()}
            serve.run(build_openai_app(sources, max_num_seqs=2 * per_variant), port=0)
            self.serving = True
            base_url = f"http://127.0.0.1:{serve.status().http_port}/v1"
            with openai_client(base_url) as client:
                models = [m.id for m in client.models.list()]
            print(f"    serving {base_url} (OpenAI API; models: {', '.join(models)})")
            load_variants(base_url, list(VARIANTS))
            arrivals = [stream_completion(base_url, variant, "Return the ", length)
                        for variant in VARIANTS]
            tokens, seconds = burst(base_url, list(VARIANTS), per_variant, length)
            stats = serve.get_deployment_handle("LLMServer").stats.remote().result()
            peaks = ", ".join(f"{name} {stats[name].peak_batch_size}" for name in VARIANTS)
            print(f"    burst: {per_variant * len(VARIANTS)} concurrent streamed requests, "
                  f"{tokens} tokens in {seconds:.1f} s ({tokens / seconds:.0f} tokens/s); "
                  f"sequences decoded together at most: {peaks}")
            self.stop_serving()
            first = [times[0] * 1000 for times in arrivals]
            peak = max(stats[name].peak_batch_size for name in VARIANTS)
            summary["figure"] = (f"first token {min(first):.0f}-{max(first):.0f} ms; burst "
                                 f"{tokens / seconds:.0f} tokens/s, batches of up to {peak}")

    def stop_serving(self) -> None:
        if self.serving:
            self.serving = False
            serve.shutdown()

    # 5 ----------------------------------------------------------------------------------------
    def rl(self) -> None:
        budget, min_iterations = (0.0, 3) if self.quick else (150.0, 1)
        target = 450.0
        until = f"{min_iterations} iterations" if self.quick else f"{budget:.0f} s"
        with self.stage(5, "rl", f"PPO on CartPole-v1 until return {target:.0f} or "
                                 f"{until}") as summary:
            config = (
                PPOConfig()
                .environment("CartPole-v1")
                .env_runners(num_env_runners=2, num_envs_per_env_runner=4)
                .learners(num_learners=2)
                .training(lr=3e-4, gamma=0.99, lambda_=0.95, clip_param=0.2,
                          vf_loss_coeff=0.5, entropy_coeff=0.0, train_batch_size=2000,
                          minibatch_size=250, num_epochs=10, grad_clip=0.5)
                .debugging(seed=0)
            )
            started = time.perf_counter()
            best = 0.0
            with config.build() as algo:
                while True:
                    result = algo.train()
                    ret = float(result["episode_return_mean"])
                    best = max(best, ret)
                    steps = int(result["num_env_steps_sampled_lifetime"])
                    self.returns.append((steps, ret))
                    elapsed = time.perf_counter() - started
                    print(f"    iter {result['training_iteration']:3d}  return {ret:6.1f}  "
                          f"env steps {steps:7d}  {elapsed:5.1f} s  "
                          f"{'#' * int(ret / 10)}", flush=True)
                    if len(self.returns) >= min_iterations and (
                            ret >= target or elapsed >= budget):
                        break
                path = algo.save(os.path.join(self.out, "ppo_checkpoint"))
            reached = "reached" if best >= target else "budget spent at"
            print(f"    {reached} return {best:.1f}; policy saved to {path}")
            summary["figure"] = (f"return {self.returns[0][1]:.0f} -> {best:.0f} "
                                 f"in {len(self.returns)} iterations")

    # summary ----------------------------------------------------------------------------------
    def report(self, total: float) -> None:
        rows = [("stage", "wall time", "key figure")]
        rows += [(name, f"{seconds:.1f} s", figure) for name, seconds, figure in self.stages]
        rows.append(("total", f"{total:.1f} s", "quick mode" if self.quick else "full mode"))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
                 for r in rows]
        lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
        table = "\n".join(lines)
        print("\nsummary")
        print(table)
        summary_path = os.path.join(self.out, "summary.md")
        with open(summary_path, "w") as f:
            f.write(table + "\n")
        print(f"\nartifacts in {self.out}:")
        print(f"  summary table       {summary_path}")
        for path in self.plots():
            print(f"  plot                {path}")
        print(f"  Parquet shards      {os.path.join(self.out, 'data')}")
        print(f"  completions (JSON)  {os.path.join(self.out, 'completions')}")
        print(f"  PPO policy          {os.path.join(self.out, 'ppo_checkpoint')}")
        print(f"  model checkpoints   {self.storage}")

    def plots(self) -> list[str]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        paths = []
        fig, ax = plt.subplots(figsize=(6, 4))
        labels = {"base": "base (stdlib docstrings)", "tuned": "tuned (unittest, doctest)"}
        for variant, curve in self.loss_curves.items():
            ax.plot(*zip(*curve, strict=True), marker=".", label=labels[variant])
        ax.set(xlabel="step", ylabel="cross-entropy (nats/byte)", title="tiny GPT-2 training loss")
        ax.legend()
        paths.append(os.path.join(self.out, "training_loss.png"))
        fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(*zip(*self.returns, strict=True), marker=".")
        ax.axhline(450, color="gray", linestyle="--", label="target 450")
        ax.set(xlabel="env steps", ylabel="mean episode return", title="PPO on CartPole-v1")
        ax.legend()
        paths.append(os.path.join(self.out, "ppo_return.png"))
        fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
        plt.close(fig)
        return paths


class StageFailed(Exception):
    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(f"stage {stage!r} failed: {type(error).__name__}: {error}")
        self.stage = stage


@contextlib.contextmanager
def local_s3() -> Iterator[str]:
    """moto's S3-compatible server on 127.0.0.1 at a free port, with dummy credentials set in
    the environment (before ember starts, so every worker inherits them)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per S3 request
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    try:
        yield endpoint
    finally:
        server.stop()


def make_bucket(url: str) -> None:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    bucket = path.split("/", 1)[0]
    if not fs.exists(bucket):
        fs.mkdir(bucket)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a reduced run (a few steps, small RL budget), as in CI")
    parser.add_argument("--out", default="demo_output",
                        help="folder for data, completions, plots and the summary "
                             "(default: demo_output)")
    parser.add_argument("--storage", default=None,
                        help="where the trainers upload checkpoints: a folder or s3://bucket/path "
                             "(default: OUT/checkpoints, or s3://ember-demo/checkpoints with "
                             "--local-s3)")
    parser.add_argument("--s3-endpoint", default=None,
                        help="S3 endpoint URL for --storage s3://... (else AWS_ENDPOINT_URL)")
    parser.add_argument("--local-s3", action="store_true",
                        help="start moto's S3-compatible server on 127.0.0.1 and store there")
    parser.add_argument("--hold", action="store_true",
                        help="after the last stage, keep the program and its dashboard up "
                             "until Ctrl+C")
    parser.add_argument("--address", default=None,
                        help="run on the Ray cluster at this address (host:port of the head, "
                             "'auto', or ray://host:10001) instead of the embedded backend; "
                             "EMBER_BACKEND/EMBER_ADDRESS do the same")
    return parser.parse_args(argv)


OUT_MARKER = ".ember-demo"
OUT_PARTS = ("data", "checkpoints", "completions", "ppo_checkpoint", "summary.md",
             "training_loss.png", "ppo_return.png")


def prepare_out(out: str) -> None:
    """Create ``out``, or empty a folder that an earlier run made (it holds the marker file);
    any other non-empty folder is refused rather than touched."""
    if os.path.isdir(out) and os.listdir(out) and not os.path.exists(
            os.path.join(out, OUT_MARKER)):
        raise FileExistsError(f"--out {out!r} is a non-empty folder that this demo did not make; "
                              "pass a new or empty folder")
    os.makedirs(out, exist_ok=True)
    for name in OUT_PARTS:  # an earlier run's
        path = os.path.join(out, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
    open(os.path.join(out, OUT_MARKER), "w").close()


def missing_packages(args: argparse.Namespace) -> list[str]:
    """What this run needs (the ``demo`` extra) and cannot import."""
    needed = ["torch", "transformers", "pyarrow", "gymnasium", "starlette", "uvicorn", "openai",
              "matplotlib"]
    if args.local_s3 or (args.storage or "").startswith("s3://"):
        needed.append("s3fs")
    if args.local_s3:
        needed.append("moto")
    return [name for name in needed if importlib.util.find_spec(name) is None]


def hold(url: str | None) -> None:
    """Keep the program, and so its dashboard, up until Ctrl+C."""
    print(f"\n--hold: the dashboard stays up at {url}\n(also: ember status, ember list "
          "actors, ember logs ID from another shell); Ctrl+C ends the program", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        print("stopping", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = missing_packages(args)
    if missing:
        print(f"DEMO FAILED: it needs {', '.join(missing)}, not installed here; install them "
              "with `pip install -e '.[demo]'` (or run `make demo`)", file=sys.stderr)
        return 1
    out = os.path.abspath(args.out)
    if args.s3_endpoint:
        os.environ["AWS_ENDPOINT_URL"] = args.s3_endpoint
    started = time.perf_counter()
    # Everything started here is stopped on the way out, whatever happens: serve, the ember
    # runtime (its worker processes and /dev/shm segments), the local S3 server.
    with contextlib.ExitStack() as stack:
        try:
            prepare_out(out)
            storage = args.storage
            if args.local_s3:
                endpoint = stack.enter_context(local_s3())
                storage = storage or "s3://ember-demo/checkpoints"
                print(f"S3: moto server at {endpoint}, checkpoints go to {storage}")
            storage = storage or os.path.join(out, "checkpoints")
            if storage.startswith("s3://"):
                make_bucket(storage)
            demo = Demo(out=out, quick=args.quick, storage=storage)
            # The backend comes from --address, else from EMBER_BACKEND/EMBER_ADDRESS, else the
            # embedded one with 2 CPUs (a cluster's nodes are sized by `ray start`).
            info = (ember.init(address=args.address, include_dashboard=True) if args.address
                    else ember.init(num_cpus=2, include_dashboard=True))
            stack.callback(ember.shutdown)
            stack.callback(demo.stop_serving)  # when the serve stage failed half-way
            nodes = len(ember.nodes())
            print(f"ember {ember.__version__} on the {info.backend} backend, {nodes} "
                  f"node{'s' if nodes != 1 else ''} (session "
                  f"{ember.get_runtime_context().get_job_id()}): "
                  f"{'quick' if args.quick else 'full'} run, output in {out}, "
                  f"checkpoints in {storage}", flush=True)
            print(f"dashboard: {info.dashboard_url}", flush=True)
            data = demo.data()
            variants = demo.train(data)
            demo.batch_inference(variants)
            demo.serve(variants)
            demo.rl()
            demo.report(time.perf_counter() - started)
            if args.hold:
                hold(info.dashboard_url)
        except StageFailed as failure:
            traceback.print_exception(failure.__cause__, file=sys.stderr)
            print(f"\nDEMO FAILED: {failure}", file=sys.stderr)
            return 1
        except Exception as error:
            if not isinstance(error, FileExistsError):  # that one's message says it all
                traceback.print_exc()
            print(f"\nDEMO FAILED outside the stages: {type(error).__name__}: {error}",
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
