"""Screenshots of every page of the ember dashboard, for the README.

    python examples/dashboard_screenshots.py          # writes docs/img/dashboard-*.png
    python examples/dashboard_screenshots.py --hold   # then keeps the program up: open its URL

It starts a program with something on every page: an actor whose constructor fails and one that
prints, a task that raises, a serve application under load, a dataset in flight, a train run
that reports its loss, and a PPO run. Then headless Chromium (``apt-get install chromium
chromium-driver``, ``pip install selenium``) opens each page and saves a screenshot. Takes
about a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import threading
import time
from pathlib import Path

import ember
from ember import serve

PAGES = ("overview", "actors", "tasks", "serve", "data", "train", "rl")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-dev-shm-usage")


@ember.remote
class Tokenizer:
    def __init__(self, vocab_path: str) -> None:
        raise FileNotFoundError(f"no vocabulary at {vocab_path}")

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]


@ember.remote
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def add(self, k: int) -> int:
        self.n += k
        print(f"counter is at {self.n}")
        return self.n


@ember.remote
def parse(line: str) -> dict[str, str]:
    key, value = line.split("=")
    return {key: value}


@serve.deployment(num_replicas=2, max_ongoing_requests=32)
class Classifier:
    async def __call__(self, request) -> dict[str, object]:  # type: ignore[no-untyped-def]
        import asyncio

        await asyncio.sleep(random.choice([0.005, 0.01, 0.02, 0.05]))
        return {"label": random.choice(["cat", "dog"]), "text": request.query_params.get("q")}


def load(url: str, stop: threading.Event) -> None:
    import httpx

    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            try:
                client.get(url, params={"q": "a photo"})
            except httpx.HTTPError:
                time.sleep(0.1)
            time.sleep(0.02)


def slow_scale(batch: dict) -> dict:  # type: ignore[type-arg]
    time.sleep(0.2)
    return {"id": batch["id"], "x2": batch["id"] * 2}


def stream_dataset(stop: threading.Event) -> None:
    """One dataset after another, consumed slowly: one is always in flight."""
    while not stop.is_set():
        dataset = ember.data.range(200_000, parallelism=200).map_batches(
            slow_scale, batch_size=1000)
        for _ in dataset.iter_batches(batch_size=1000):
            if stop.is_set():
                return
            time.sleep(0.05)


def train_loop(config: dict) -> None:  # type: ignore[type-arg]
    import torch

    from ember.train import Checkpoint
    from ember.train.torch import prepare_model

    torch.manual_seed(0)
    model = prepare_model(torch.nn.Linear(4, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randn(256, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    for step in range(config["steps"]):
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        checkpoint = None
        if step % 5 == 4:
            folder = tempfile.mkdtemp()
            torch.save(model.state_dict(), os.path.join(folder, "model.pt"))
            checkpoint = Checkpoint.from_directory(folder)
        ember.train.report({"loss": loss.item(), "step": step}, checkpoint=checkpoint)


def train(storage: str) -> None:
    from ember.train import CheckpointConfig, RunConfig, ScalingConfig
    from ember.train.torch import TorchTrainer

    TorchTrainer(train_loop, train_loop_config={"steps": 40},
                 scaling_config=ScalingConfig(num_workers=2),
                 run_config=RunConfig(name="linear-regression", storage_path=storage,
                                      checkpoint_config=CheckpointConfig(num_to_keep=2))).fit()


def ppo() -> None:
    from ember.rl import PPOConfig

    config = (PPOConfig().environment("CartPole-v1")
              .env_runners(num_env_runners=1, num_envs_per_env_runner=2)
              .learners(num_learners=1)
              .training(train_batch_size=400, minibatch_size=100, num_epochs=2))
    with config.build() as algo:
        for _ in range(6):
            algo.train()


def start_workload(stop: threading.Event) -> tuple[list[threading.Thread], list[object]]:
    """Everything the pages show; returns the threads that keep it going and the actors'
    handles (an actor lives while its handle does)."""
    counter = Counter.remote()
    for k in range(3):
        ember.get(counter.add.remote(k))
    broken = Tokenizer.remote("/models/vocab.json")
    try:
        ember.get(broken.encode.remote("hello"))
    except ember.errors.ActorDiedError:
        pass
    try:
        ember.get(parse.remote("no equals sign here"))
    except ValueError:
        pass
    ember.get([parse.remote(f"k{i}=v{i}") for i in range(20)])
    serve.run(Classifier.bind(), name="classifier", route_prefix="/classify", port=0)
    url = f"http://127.0.0.1:{serve.status().http_port}/classify"
    storage = tempfile.mkdtemp()
    threads = [threading.Thread(target=load, args=(url, stop), daemon=True),
               threading.Thread(target=stream_dataset, args=(stop,), daemon=True),
               threading.Thread(target=train, args=(storage,), daemon=True),
               threading.Thread(target=ppo, daemon=True)]
    for thread in threads:
        thread.start()
    return threads, [counter, broken]


def browser(profile: str, width: int = 1400, height: int = 1000):  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")  # fresh: no state from other runs
    options.add_argument(f"--window-size={width},{height}")
    options.binary_location = "/usr/bin/chromium"
    # Chromium puts Unix sockets in its profile and in TMPDIR, and a socket's path has at most
    # 107 bytes: under a long TMPDIR (a test's) it would exit at once, so it gets /tmp then.
    env = dict(os.environ)
    if len(tempfile.gettempdir()) >= 40:
        env["TMPDIR"] = "/tmp"
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver", env=env))


def screenshot(driver, page: str, path: Path, click: str | None = None) -> None:  # type: ignore[no-untyped-def]
    """Show ``page`` (clicking the row ``click`` selects, if any) and save the whole page."""
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    driver.execute_script(f"location.hash = '#{page}'")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if driver.execute_script(
                "const m = document.getElementById('page');"
                f"return m.dataset.page === '{page}' && !!m.dataset.updated;"):
            break
        time.sleep(0.2)
    if click:
        driver.execute_script(f"document.querySelector({click!r}).click()")
    time.sleep(2.5)  # more refreshes: charts get their latest points
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 1400, "height": min(max(800, height), 3000), "deviceScaleFactor": 1,
        "mobile": False})
    time.sleep(0.5)
    driver.save_screenshot(str(path))
    print(f"wrote {path}")


def wait_for_views(url: str, timeout: float) -> None:
    """Until the train run reported a few times and PPO ran a few iterations."""
    from ember.dashboard import _server

    service = _server.current()
    assert service is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        train = service.views("train").get("linear-regression", {})
        rl = next(iter(service.views("rl").values()), {})
        if len(train.get("events", [])) >= 20 and len(rl.get("events", [])) >= 4:
            return
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/img", help="folder for the PNG files")
    parser.add_argument("--hold", action="store_true",
                        help="keep the program running after the screenshots (Ctrl+C ends it)")
    parser.add_argument("--wait", type=float, default=120.0,
                        help="at most this many seconds for the workload to get going")
    args = parser.parse_args()
    info = ember.init(num_cpus=8, include_dashboard=True, dashboard_port=0)
    assert info.dashboard_url is not None
    stop = threading.Event()
    threads, _actors = start_workload(stop)
    wait_for_views(info.dashboard_url, args.wait)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # (see browser: the profile holds a socket too)
    short = None if len(tempfile.gettempdir()) < 40 else "/tmp"
    with tempfile.TemporaryDirectory(prefix="ember-chromium-", dir=short) as profile:
        driver = browser(profile)
        try:
            driver.get(info.dashboard_url)
            for page in PAGES:
                click = "tr.click:has(.badge.DEAD)" if page == "actors" else None
                screenshot(driver, page, out / f"dashboard-{page}.png", click)
        finally:
            driver.quit()
    if args.hold:
        print(f"the dashboard stays up at {info.dashboard_url} (Ctrl+C ends the program)")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    stop.set()
    for thread in threads:
        thread.join(60)
    serve.shutdown()
    ember.shutdown()


if __name__ == "__main__":
    main()
