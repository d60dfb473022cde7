"""Run the compatibility programs and print the pass rate per area.

    python -m tests.compat                  # every program on ember (skips and pendings shown)
    python -m tests.compat core/doc_tasks   # programs whose id contains one of the words
    python -m tests.compat --ray --timeout 600   # the unchanged programs on the installed Ray
    python -m tests.compat --all            # also run the skipped and pending ones
    python -m tests.compat -v               # print the output of each program that fails
"""

from __future__ import annotations

import argparse
import sys

from tests.compat import _runner


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.compat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("patterns", nargs="*", help="run the programs whose id contains one")
    parser.add_argument("--ray", action="store_true",
                        help="run the unchanged programs on the installed Ray")
    parser.add_argument("--all", action="store_true", help="run skipped and pending ones too")
    parser.add_argument("--no-slow", action="store_true", help="leave out the slow ones")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per program instead of its own (Ray starts slowly)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print the output of each program that fails")
    args = parser.parse_args(argv)
    programs = _runner.select(_runner.discover(), args.patterns)
    outcomes = []
    for program in programs:
        if args.no_slow and program.slow:
            continue
        if program.not_run_reason and not args.all:
            outcome = _runner.outcome_of_skip(program)
        else:
            outcome = _runner.run(program, against="ray" if args.ray else "ember",
                                  timeout_s=args.timeout)
        outcomes.append(outcome)
        detail = "; ".join(outcome.problems)
        print(f"{outcome.status.upper():7} {outcome.seconds:6.1f}s  {program.id}"
              + (f"  ({detail})" if detail else ""), flush=True)
        if args.verbose and outcome.status == "failed":
            print("    | " + outcome.output[-3000:].replace("\n", "\n    | "), flush=True)
    print()
    print(_runner.table(outcomes))
    return 0 if all(o.status != "failed" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
