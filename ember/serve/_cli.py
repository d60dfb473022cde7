"""``ember serve run module:app``: deploy an application and serve it until Ctrl+C.

``main(argv)`` takes the arguments after ``ember serve``::

    ember serve run my_models:app --port 8000 --route-prefix /
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import threading
from typing import Any

USAGE_HINT = "give the application as module:attribute, e.g. my_models:app"


def load_target(spec: str) -> Any:
    """The object named by ``module:attribute`` (the module is imported from the cwd too)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise SystemExit(f"ember serve run: bad application {spec!r}; {USAGE_HINT}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"ember serve run: cannot import {module_name!r}: {exc}") from exc
    target = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise SystemExit(
                f"ember serve run: module {module_name!r} has no attribute {attribute!r}"
            ) from None
    return target


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ember serve", description="Serve ember applications.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="deploy module:app and serve it until Ctrl+C")
    run.add_argument("application", help="module:attribute of a bound deployment")
    run.add_argument("--name", default="default", help="application name (default: default)")
    run.add_argument("--host", default="127.0.0.1", help="HTTP host (default: 127.0.0.1)")
    run.add_argument("--port", type=int, default=8000, help="HTTP port (default: 8000)")
    run.add_argument("--route-prefix", default="/", help="route prefix (default: /)")
    run.add_argument("--non-blocking", action="store_true",
                     help="deploy, print the address and return (for scripts and tests)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ember import serve

    target = load_target(args.application)
    if isinstance(target, serve.Deployment):
        target = target.bind()
    if not isinstance(target, serve.Application):
        raise SystemExit(
            f"ember serve run: {args.application} is a {type(target).__name__}, not a bound "
            "deployment; point at MyDeployment.bind(...)"
        )
    serve.run(target, name=args.name, route_prefix=args.route_prefix, host=args.host,
              port=args.port)
    port = serve.status().http_port
    print(f"ember serve: application {args.name!r} at http://{args.host}:{port}"
          f"{args.route_prefix}", flush=True)
    if args.non_blocking:
        return 0
    try:
        threading.Event().wait()  # until Ctrl+C
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
