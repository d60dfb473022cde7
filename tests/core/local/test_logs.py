"""Workers' stdout and stderr reach the driver prefixed ``(Name pid=N)``, as with Ray, and are
kept per process; ``log_to_driver=False`` keeps them without printing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent("""
    import os, sys, time
    import ember
    from ember.util import state

    ember.init(num_cpus=1, log_to_driver={log_to_driver})

    @ember.remote
    class Printer:
        def say(self, text):
            print(text)                                 # no flush: lines still arrive
            print("warning: " + text, file=sys.stderr)
            return os.getpid()

    @ember.remote
    def crash():
        os.write(2, b"fatal: segment gone\\n")         # below Python, as a C library would
        os._exit(3)

    printer = Printer.remote()
    pid = ember.get(printer.say.remote("hello"))
    try:
        ember.get(crash.options(max_retries=0).remote())
    except ember.errors.WorkerCrashedError:
        pass
    actor_id = state.list_actors()[0].actor_id
    for _ in range(500):  # the lines travel through a pipe read by another thread
        lines = list(state.get_log(actor_id=actor_id))
        if len(lines) == 2:
            break
        time.sleep(0.02)
    print("DRIVER pid", pid, lines, flush=True)
    ember.shutdown()
""")


def run(log_to_driver: bool, tmp_path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "program.py"
    script.write_text(PROGRAM.format(log_to_driver=log_to_driver))
    env = {**os.environ, "EMBER_RUNTIME_DIR": str(tmp_path / "runtime")}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=100, env=env, cwd=tmp_path)


def test_worker_lines_reach_the_driver_prefixed_with_their_process(tmp_path):
    result = run(True, tmp_path)
    assert result.returncode == 0, result.stderr
    pid = result.stdout.split("DRIVER pid ")[1].split()[0]
    assert f"(Printer pid={pid}) hello\n" in result.stdout
    assert f"(Printer pid={pid}) warning: hello\n" in result.stderr
    assert "(crash pid=" in result.stderr and ") fatal: segment gone" in result.stderr
    assert "['hello', 'warning: hello']" in result.stdout  # kept for ember logs


def test_log_to_driver_false_keeps_lines_without_printing_them(tmp_path):
    result = run(False, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "(Printer pid=" not in result.stdout + result.stderr
    assert "fatal: segment gone" not in result.stderr
    assert "['hello', 'warning: hello']" in result.stdout
