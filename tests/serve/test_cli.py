from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ember import serve
from ember.serve._cli import load_target, main

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
