"""``ember status / list / summary / logs / dashboard``: the CLI looks at a running program (this
test process) through its session file and socket."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

import ember
from ember.errors import ActorDiedError
from ember.testing import LeakCheck, eventually


@pytest.fixture
def program(tmp_path, monkeypatch):
    """This process as a running ember program with a dead actor and one that printed."""
    monkeypatch.setenv("EMBER_RUNTIME_DIR", str(tmp_path / "runtime"))
    ember.init(num_cpus=2)

    @ember.remote
    class Printer:
        def say(self, text):
            print(text, flush=True)

    @ember.remote
    class Broken:
        def __init__(self):
            raise RuntimeError("the model file is corrupt")

        def ping(self):
            return 1

    printer = Printer.remote()
    ember.get(printer.say.remote("hello from the printer"), timeout=60)
    broken = Broken.remote()
    with pytest.raises(ActorDiedError):
        ember.get(broken.ping.remote(), timeout=60)
    try:
        yield printer
    finally:
        del printer, broken
        LeakCheck().check()


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "ember.cli", *args, "--pid", str(os.getpid())],
                            capture_output=True, text=True, timeout=60, env=os.environ.copy())
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_status_and_list_show_the_dead_actor(program):
    status = cli("status").stdout
    assert f"ember program pid {os.getpid()}" in status
    assert "actors: ALIVE 1, DEAD 1" in status
    assert "0/2 CPU" in status

    table = cli("list", "actors").stdout
    assert "Broken" in table and "DEAD" in table and "Printer" in table
    dead = json.loads(cli("list", "actors", "--filter", "state=DEAD", "--format", "json").stdout)
    assert [row["class_name"] for row in dead] == ["Broken"]
    assert "RuntimeError: the model file is corrupt" in dead[0]["death_cause"]
    tasks = cli("summary", "tasks").stdout
    assert "Printer.say" in tasks and "FINISHED: 1" in tasks
    assert "Broken.ping" in tasks and "FAILED: 1" in tasks


def test_logs_of_an_actor_and_following_new_lines(program):
    actor_id = json.loads(cli("list", "actors", "--filter", "class_name=Printer",
                              "--format", "json").stdout)[0]["actor_id"]
    eventually(lambda: "hello from the printer" in cli("logs", actor_id).stdout,
             what="the printer's line in ember logs")
    assert "(Printer pid=" in cli("logs", actor_id).stdout

    follower = subprocess.Popen(
        [sys.executable, "-m", "ember.cli", "logs", actor_id, "--follow", "--pid",
         str(os.getpid())], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        assert "hello from the printer" in follower.stdout.readline()
        time.sleep(0.2)
        ember.get(program.say.remote("a line printed later"), timeout=60)
        assert "a line printed later" in follower.stdout.readline()
    finally:
        follower.kill()
        follower.wait()
        follower.stdout.close()


def test_unknown_ids_and_missing_programs_are_explained(program, tmp_path):
    missing = cli("logs", "no-such-thing", check=False)
    assert missing.returncode == 1
    assert "nothing is known as 'no-such-thing'" in missing.stderr
    nobody = subprocess.run([sys.executable, "-m", "ember.cli", "status"], capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "EMBER_RUNTIME_DIR": str(tmp_path / "empty")})
    assert nobody.returncode == 1
    assert "no running ember program found" in nobody.stderr
    no_dashboard = cli("dashboard", "--no-browser", check=False)
    assert no_dashboard.returncode == 1
    assert "include_dashboard=True" in no_dashboard.stderr


def test_a_starting_program_clears_the_files_of_programs_that_were_killed(tmp_path, monkeypatch):
    folder = tmp_path / "runtime"
    monkeypatch.setenv("EMBER_RUNTIME_DIR", str(folder))
    folder.mkdir(mode=0o700)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, timeout=60, check=True)
    pid = int(gone.stdout)  # a process that has exited: what a SIGKILLed driver leaves behind
    stale_json, stale_sock = folder / f"{pid}.json", folder / f"{pid}.sock"
    stale_json.write_text(json.dumps({"pid": pid, "socket": str(stale_sock), "token": "x" * 48,
                                      "dashboard_url": None, "started": 1.0,
                                      "backend": "local", "argv": ["killed.py"]}))
    stale_json.chmod(0o600)
    stale_sock.write_bytes(b"")
    ember.init(num_cpus=1)
    try:
        eventually(lambda: not stale_json.exists() and not stale_sock.exists(), timeout=30,
                   what="the dead program's session files to be cleared")
        assert (folder / f"{os.getpid()}.json").exists()  # its own stays
    finally:
        ember.shutdown()
    assert not (folder / f"{os.getpid()}.json").exists()
