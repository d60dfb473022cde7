"""Print the compatibility suite's pass rate per area at the end of a run that included it."""

from __future__ import annotations

import pytest

from tests.compat import _runner

_outcomes: dict[str, str] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = (yield).get_result()
    program = getattr(item, "callspec", None) and item.callspec.params.get("program")
    if not isinstance(program, _runner.Program):
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _outcomes[program.id] = {"passed": "passed", "failed": "failed",
                                 "skipped": "skipped"}[report.outcome]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _outcomes:
        return
    programs = {p.id: p for p in _runner.discover()}
    outcomes = [_runner.Outcome(programs[pid], status) for pid, status in _outcomes.items()
                if pid in programs]
    terminalreporter.section("Ray programs on ember: pass rate per area")
    terminalreporter.write_line(_runner.table(outcomes))
