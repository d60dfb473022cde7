"""The dashboard in a real browser: headless Chromium (driven by selenium) loads every page of
a running program that has an actor that died, a serve application under load, a dataset in
flight and a finished train run, and checks what a person would see there.

Needs Debian's ``chromium`` and ``chromium-driver`` (CI installs them: see ``.ci/run``); skipped,
with the reason, only where they are not installed.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from typing import Any

import pytest

import ember
from ember import serve
from ember.errors import ActorDiedError
from ember.testing import LeakCheck, eventually

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-dev-shm-usage")
TRAIN_REPORTS = 6


def _browser_or_skip(profile: str) -> Any:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install 'ember-scale[test]')")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip("Chromium cannot run here: install Debian's chromium and chromium-driver "
                    "(apt-get install -y chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument("--window-size=1400,1000")
    options.binary_location = binary
    return webdriver.Chrome(options=options, service=Service(driver))


def train_loop(config):
    import ember.train as train

    for step in range(config["reports"]):
        train.report({"loss": 2.0 / (step + 1)})


def start_program(stop: threading.Event) -> tuple[Any, list[threading.Thread]]:
    @ember.remote
    class Tokenizer:
        def __init__(self, path):
            raise FileNotFoundError(f"the vocabulary file {path} is missing")

        def encode(self, text):
            return text

    broken = Tokenizer.remote("/models/vocab.json")
    with pytest.raises(ActorDiedError):
        ember.get(broken.encode.remote("hi"), timeout=60)

    @serve.deployment(num_replicas=2)
    class Classifier:
        async def __call__(self, request):
            import asyncio

            await asyncio.sleep(0.01)
            return "cat"

    serve.run(Classifier.bind(), name="classifier", route_prefix="/classify", port=0)
    url = f"http://127.0.0.1:{serve.status().http_port}/classify"

    def load() -> None:
        import httpx

        with httpx.Client(timeout=20) as client:
            while not stop.is_set():
                client.get(url)
                time.sleep(0.01)

    def slow(batch):
        import time

        time.sleep(0.05)
        return batch

    def stream() -> None:
        dataset = ember.data.range(100_000, parallelism=200).map_batches(slow, batch_size=500)
        for _ in dataset.iter_batches(batch_size=500):
            if stop.is_set():
                return
            time.sleep(0.1)  # a slow consumer: the dataset stays in flight

    threads = [threading.Thread(target=load, daemon=True),
               threading.Thread(target=stream, daemon=True)]
    for thread in threads:
        thread.start()

    from ember.train import RunConfig, ScalingConfig
    from ember.train.torch import TorchTrainer

    result = TorchTrainer(train_loop, train_loop_config={"reports": TRAIN_REPORTS},
                          scaling_config=ScalingConfig(num_workers=1),
                          run_config=RunConfig(name="browser-run",
                                               storage_path=tempfile.mkdtemp())).fit()
    assert result.error is None
    return broken, threads


def show(browser: Any, page: str) -> None:
    """Go to a page and wait until it has drawn itself from live data."""
    browser.execute_script(f"location.hash = '#{page}'")
    eventually(lambda: browser.execute_script(
        "const m = document.getElementById('page');"
        f"return !!m && m.dataset.page === '{page}' && Number(m.dataset.updated) > Date.now() - 900"),
        what=f"the {page} page to draw")


def choose(browser: Any, select_id: str, value: str) -> None:
    """Pick ``value`` in a drop-down as a person would (a selenium Select)."""
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", select_id)).select_by_visible_text(value)


def text_of(browser: Any, css: str) -> str:
    return str(browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent).join('\\n')",
        css))


@pytest.mark.slow
def test_every_page_shows_the_running_program(tmp_path):
    browser = _browser_or_skip(str(tmp_path / "chromium-profile"))
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        info = ember.init(num_cpus=4, include_dashboard=True, dashboard_port=0)
        broken, threads = start_program(stop)
        browser.get(info.dashboard_url)

        # overview: the node's resources, the dead actor and the failed call counted
        show(browser, "overview")
        eventually(lambda: "DEAD" in text_of(browser, "#page")
                 and "Tokenizer.encode" in text_of(browser, "#page"),
                 what="the dead actor and its failed call on the overview")
        assert "Node local" in text_of(browser, "#page")
        assert "CPU" in text_of(browser, "#page")

        # actors: filter to the dead ones, click it: its error, with the traceback
        show(browser, "actors")
        choose(browser, "actors-state", "DEAD")
        eventually(lambda: "Tokenizer" in text_of(browser, "tbody tr") and "Classifier" not in
                 text_of(browser, "tbody tr"), what="only dead actors listed")
        browser.execute_script("document.querySelector('tbody tr[data-key]').click()")
        cause = eventually(lambda: text_of(browser, "#actor-detail .death-cause"),
                         what="the dead actor's death cause")
        assert "FileNotFoundError: the vocabulary file /models/vocab.json is missing" in cause
        assert "Traceback (most recent call last)" in cause

        # tasks: the failed call, clicked open
        show(browser, "tasks")
        choose(browser, "tasks-state", "FAILED")
        eventually(lambda: "Tokenizer.encode" in text_of(browser, "tbody tr"),
                 what="the failed call in the task list")
        # the program has other failed calls too (its train run's killed worker): click this one
        browser.execute_script(
            "[...document.querySelectorAll(\"tr[data-key^='t:']\")]"
            ".find(row => row.textContent.includes('Tokenizer.encode')).click()")
        try:
            error = eventually(lambda: text_of(browser, "#task-detail pre.error"),
                             what="the failed call's error")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; selected {browser.execute_script('return ui.selected')}"
                                 f", live {browser.find_element('id', 'live').text!r}, page "
                                 f"{text_of(browser, '#page')[:600]!r}") from None
        assert "ActorDiedError" in error and "vocabulary file" in error

        # serve: two running replicas and a latency chart with points
        show(browser, "serve")
        eventually(lambda: int(browser.execute_script(
            "const c = document.querySelector('svg.chart[data-title*=\"latency\"]');"
            "return c ? c.querySelectorAll('circle.pt').length : 0")) >= 2,
            what="points on the latency chart")
        assert int(browser.execute_script(
            "return document.querySelector('svg.chart[data-title*=\"requests\"]')"
            ".dataset.points")) > 0
        assert text_of(browser, ".serve-app tbody").count("RUNNING") == 2

        # data: the dataset in flight, with its operator's progress
        show(browser, "data")
        eventually(lambda: "running" in text_of(browser, ".dataset h3"),
                 what="a dataset in flight")
        assert "MapBatches(slow)" in text_of(browser, ".dataset")
        assert "rows" in text_of(browser, ".dataset tbody")

        # train: the finished run and one point per reported loss
        show(browser, "train")
        assert "finished" in text_of(browser, ".train-run[data-run='browser-run'] h3")
        points = browser.execute_script(
            "return document.querySelectorAll(\".train-run[data-run='browser-run'] "
            "svg.chart[data-title='loss'] circle.pt\").length")
        assert points == TRAIN_REPORTS

        show(browser, "rl")
        assert "no rl runs yet" in text_of(browser, "#page")
        assert "not updating" not in browser.find_element("id", "live").text
        del broken
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
        browser.quit()
        if ember.is_initialized():
            serve.shutdown()
        LeakCheck().check()
