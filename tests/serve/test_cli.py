from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ember import serve
from ember.serve._cli import load_target, main
from tests._support import session_pids

APP_SOURCE = '''
from ember import serve


@serve.deployment
def hello(request):
    return "hello from the cli"


app = hello.bind()
'''


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "cli_app_mod.py").write_text(APP_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "cli_app_mod"
    sys.modules.pop("cli_app_mod", None)


def test_bad_specs_say_how_to_write_them(app_module: str) -> None:
    with pytest.raises(SystemExit, match="module:attribute"):
        load_target("no_colon")
    with pytest.raises(SystemExit, match="cannot import"):
        load_target("surely_not_a_module_xyz:app")
    with pytest.raises(SystemExit, match="has no attribute 'nope'"):
        load_target(f"{app_module}:nope")


@pytest.mark.usefixtures("serve_instance")
def test_run_serves_the_application(app_module: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", f"{app_module}:app", "--port", "0", "--non-blocking"]) == 0
    port = serve.status().http_port
    assert f"127.0.0.1:{port}/" in capsys.readouterr().out
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=20).text == "hello from the cli"


@pytest.mark.usefixtures("serve_instance")
def test_run_keeps_the_ingress_deployments_own_route_prefix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cli_prefix_mod.py").write_text(
        APP_SOURCE.replace("@serve.deployment", '@serve.deployment(route_prefix="/hi")'))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert main(["run", "cli_prefix_mod:app", "--port", "0", "--non-blocking"]) == 0
    finally:
        sys.modules.pop("cli_prefix_mod", None)
    port = serve.status().http_port
    assert f"127.0.0.1:{port}/hi" in capsys.readouterr().out
    assert httpx.get(f"http://127.0.0.1:{port}/hi", timeout=20).text == "hello from the cli"


CONFIG = """
http_options: {host: 127.0.0.1, port: 0}
applications:
  - name: first
    route_prefix: /first
    import_path: cli_app_mod:app
  - name: second
    route_prefix: /second
    import_path: cli_app_mod:build
    args: {greeting: bonjour}
    deployments:
      - name: hello
        max_ongoing_requests: 3
"""

BUILDER_SOURCE = '''

def build(args):
    greeting = args["greeting"]

    @serve.deployment(name="hello")
    class Greeter:
        async def __call__(self, request):
            return f"{greeting} from the config"

    return Greeter.bind()
'''


@pytest.mark.usefixtures("serve_instance")
def test_run_a_config_of_several_applications(
    app_module: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = tmp_path / f"{app_module}.py"
    module.write_text(module.read_text() + BUILDER_SOURCE)
    config = tmp_path / "serve.yaml"
    config.write_text(CONFIG)
    assert main(["run", str(config), "--non-blocking"]) == 0
    port = serve.status().http_port
    out = capsys.readouterr().out
    assert f"'first' at http://127.0.0.1:{port}/first" in out
    assert f"'second' at http://127.0.0.1:{port}/second" in out
    with httpx.Client(timeout=20) as client:
        assert client.get(f"http://127.0.0.1:{port}/first").text == "hello from the cli"
        assert client.get(f"http://127.0.0.1:{port}/second").text == "bonjour from the config"
    assert set(serve.status().applications) == {"first", "second"}


def test_a_bad_config_stops_before_starting_anything(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("applications:\n  - import_path: m:a\n    num_replicas: 2\n")
    with pytest.raises(SystemExit, match="unknown key 'num_replicas'"):
        main(["run", str(config)])


def test_the_command_serves_until_interrupted(tmp_path: Path) -> None:
    (tmp_path / "cmd_app.py").write_text(APP_SOURCE)
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "w") as err, subprocess.Popen(
        [sys.executable, "-m", "ember.cli", "serve", "run", "cmd_app:app", "--port", "0"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # printed once the application answers
            address = re.search(r"at (http://\S+)", line)
            assert address, f"no address in {line!r}; stderr: {stderr.read_text()}"
            assert httpx.get(address.group(1), timeout=20).text == "hello from the cli"
            proc.send_signal(signal.SIGINT)  # Ctrl+C
            assert proc.wait(timeout=60) == 0, stderr.read_text()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    deadline = time.monotonic() + 20  # its replicas and proxy went with it
    while (left := session_pids(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"processes left behind: {left}"
