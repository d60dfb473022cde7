"""Print the compatibility suite's pass rate per area at the end of a run that included it.

The outcomes are read from the test reports (``pytest_runtest_logreport``), which reach the
process that prints the summary also when ``pytest-xdist`` runs the tests in other processes.
"""

from __future__ import annotations

import re

import pytest

from tests.compat import _runner

_outcomes: dict[str, str] = {}
_PROGRAM_TEST = re.compile(r"test_compat\.py::test_ray_program_runs_on_ember\[(.+)\]$")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    match = _PROGRAM_TEST.search(report.nodeid)
    if match is None:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _outcomes[match.group(1)] = report.outcome  # "passed", "failed" or "skipped"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _outcomes:
        return
    programs = {p.id: p for p in _runner.discover()}
    outcomes = [_runner.Outcome(programs[pid], status) for pid, status in _outcomes.items()
                if pid in programs]
    terminalreporter.section("Ray programs on ember: pass rate per area")
    terminalreporter.write_line(_runner.table(outcomes))
