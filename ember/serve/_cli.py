"""``ember serve run module:app``: deploy an application and serve it until Ctrl+C.

``main(argv)`` takes the arguments after ``ember serve``::

    ember serve run my_models:app --port 8000 --route-prefix /
    ember serve run serve_config.yaml        # several applications (see _app_file.py)
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
    run = commands.add_parser(
        "run", help="deploy module:app, or every application of a YAML config, and serve "
                    "until Ctrl+C")
    run.add_argument("application", help="module:attribute of a bound deployment, or a .yaml "
                                         "config file describing several applications")
    run.add_argument("--name", default="default", help="application name (default: default)")
    run.add_argument("--host", default=None, help="HTTP host (default: 127.0.0.1, or the "
                                                  "config's http_options)")
    run.add_argument("--port", type=int, default=None, help="HTTP port (default: 8000, or the "
                                                            "config's http_options)")
    run.add_argument("--route-prefix", default=None,
                     help="route prefix (default: the ingress deployment's, else /)")
    run.add_argument("--non-blocking", action="store_true",
                     help="deploy, print the address and return (for scripts and tests)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ember import serve
    from ember.serve._deployment import UNSET

    if args.application.endswith((".yaml", ".yml")):
        run_config(args)
    else:
        target = load_target(args.application)
        if isinstance(target, serve.Deployment):
            target = target.bind()
        if not isinstance(target, serve.Application):
            raise SystemExit(
                f"ember serve run: {args.application} is a {type(target).__name__}, not a "
                "bound deployment; point at MyDeployment.bind(...)"
            )
        host = args.host or "127.0.0.1"
        given = UNSET if args.route_prefix is None else args.route_prefix  # else the ingress's
        serve.run(target, name=args.name, route_prefix=given, host=host,
                  port=8000 if args.port is None else args.port)
        port = serve.status().http_port
        prefix = serve.status().applications[args.name].route_prefix or "/"
        print(f"ember serve: application {args.name!r} at http://{host}:{port}"
              f"{prefix}", flush=True)
    if args.non_blocking:
        return 0
    try:
        threading.Event().wait()  # until Ctrl+C
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
    return 0


def run_config(args: argparse.Namespace) -> None:
    from ember import serve
    from ember.serve._app_file import ConfigError, build_application, load_config

    try:
        config = load_config(args.application)
        host = args.host or config.host
        port = config.port if args.port is None else args.port
        apps = [(app, build_application(app, load_target(app.import_path)))
                for app in config.applications]
    except (OSError, ConfigError, ValueError, TypeError) as exc:
        raise SystemExit(f"ember serve run: {args.application}: {exc}") from exc
    serve.start(proxy_location=config.proxy_location, http_options={"host": host, "port": port})
    for app, bound in apps:
        serve.run(bound, name=app.name, route_prefix=app.route_prefix, host=host, port=port)
    bound_port = serve.status().http_port
    for app, _ in apps:
        where = (f"http://{host}:{bound_port}{app.route_prefix}" if app.route_prefix
                 else "handles only (no route_prefix)")
        print(f"ember serve: application {app.name!r} at {where}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
