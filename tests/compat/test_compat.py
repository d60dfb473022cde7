"""Ray programs (written here, each modelled on a topic of Ray's documentation and run
unchanged on Ray 2.60.0) run on ember with only the import changed: one test per program under
``tests/compat/<area>/`` (see ``_runner.py`` for the header format and how a program runs).

After a run that included these tests, the pass rate per area is printed (``conftest.py``);
``python -m tests.compat`` prints it without pytest.
"""

from __future__ import annotations

import pytest

from tests.compat import _runner

PROGRAMS = _runner.discover()


def _marks(program: _runner.Program) -> list[pytest.MarkDecorator]:
    marks = [pytest.mark.timeout(program.timeout_s + 30)]
    if program.slow:
        marks.append(pytest.mark.slow)
    return marks


@pytest.mark.parametrize("program", [pytest.param(p, id=p.id, marks=_marks(p))
                                     for p in PROGRAMS])
def test_ray_program_runs_on_ember(program: _runner.Program) -> None:
    if program.not_run_reason is not None:
        pytest.skip(program.not_run_reason)
    outcome = _runner.run(program)
    assert outcome.passed, (
        f"{program.id} (written here, modelled on {program.topic}) failed on ember: "
        f"{'; '.join(outcome.problems)}; its output:\n{outcome.output[-4000:]}")
