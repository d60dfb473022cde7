"""The ``ember`` command: ``ember serve run module:app``, ``ember --version``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("--version", "version"):
        from ember import __version__

        print(f"ember {__version__}")
        return 0
    if args and args[0] == "serve":
        from ember.serve._cli import main as serve_main

        return int(serve_main(args[1:]) or 0)
    print("usage: ember serve run MODULE:APP [--host H --port P ...] | ember --version",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
