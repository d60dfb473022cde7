"""The ``ember`` command: ``ember serve run module:app``, ``ember --version``, and the commands
that look at a running program (``ember status``, ``list``, ``summary``, ``logs``,
``dashboard``, ``serve status``: see ``ember.dashboard._cli``)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("--version", "version"):
        from ember import __version__

        print(f"ember {__version__}")
        return 0
    if args and args[0] == "serve":
        if args[1:2] == ["status"]:  # observe: talks to a running program
            from ember.dashboard._cli import serve_status

            return serve_status(args[2:])
        from ember.serve._cli import main as serve_main

        return int(serve_main(args[1:]) or 0)
    from ember.dashboard._cli import COMMANDS
    from ember.dashboard._cli import main as observe_main

    if args and args[0] in COMMANDS:
        return observe_main(args)
    print("usage: ember serve run MODULE:APP [--host H --port P ...] | ember serve status | "
          "ember status | ember list actors|tasks|objects|nodes | ember summary tasks | "
          "ember logs ID [--follow] | ember dashboard | ember --version", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
