"""The ``ember`` commands that look at a running program::

    ember status                              # resources, nodes, actor and task counts
    ember list actors --filter state=DEAD     # also tasks, objects, nodes; --format json
    ember summary tasks                       # per function: counts by state
    ember logs 00000000000000a3 --follow      # an actor's, a task's or a deployment's output
    ember serve status                        # applications, deployments, replicas, req/s
    ember dashboard                           # open the dashboard in a browser

They find the program through its session file (see ``_session``: an owner-only folder, a
token) and talk to it over its Unix socket; ``--pid`` picks one program when several run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import time
from typing import Any
from urllib.parse import urlencode

from ember.dashboard._session import Session, find_session
from ember.errors import SessionError

_COLUMNS = {
    "actors": ["actor_id", "class_name", "state", "name", "pid", "num_restarts", "death_cause"],
    "tasks": ["task_id", "func_or_class_name", "state", "type", "worker_pid", "error_type"],
    "objects": ["object_id", "state", "object_size", "reference_count", "spilled_bytes",
                "task_name"],
    "nodes": ["node_id", "state", "node_ip", "resources_used", "resources_total",
              "object_store_used_bytes", "object_store_spilled_bytes"],
}
FOLLOW_POLL_S = 0.5


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class Client:
    """GETs to a running program's session socket, with its token."""

    def __init__(self, session: Session, timeout: float = 30.0) -> None:
        self.session = session
        self.timeout = timeout

    def get(self, path: str, **params: Any) -> Any:
        query = urlencode([(k, x) for k, v in params.items() if v is not None
                           for x in (v if isinstance(v, list) else [v])])
        conn = _UnixConnection(self.session.socket, self.timeout)
        try:
            conn.request("GET", f"{path}?{query}" if query else path,
                         headers={"X-Ember-Token": self.session.token})
            response = conn.getresponse()
            body = response.read()
        except OSError as exc:
            raise SessionError(f"cannot reach the ember program with pid {self.session.pid} "
                               f"at {self.session.socket}: {exc} (did it just exit?)") from exc
        finally:
            conn.close()
        if response.status != 200:
            try:
                message = json.loads(body)["error"]
            except (ValueError, KeyError, TypeError):
                message = body.decode(errors="replace")
            raise SessionError(f"the program answered {response.status}: {message}")
        if response.getheader("Content-Type", "").startswith("application/json"):
            return json.loads(body)
        return body.decode()


def _client(args: argparse.Namespace) -> Client:
    session, others = find_session(args.pid)
    if others and args.pid is None:
        print(f"(several ember programs run: showing pid {session.pid}; others: "
              f"{', '.join(str(s.pid) for s in others)}; pick one with --pid)", file=sys.stderr)
    return Client(session)


def _bytes(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                         for k, v in sorted(value.items()) if k != "object_store_memory") or "-"
    text = str(value).strip().splitlines()
    first = text[0] if text else ""
    if len(text) > 1 or len(first) > 60:  # a traceback: its first line, shortened
        first = first[:57] + "..."
    return first


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


# -- commands -------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    client = _client(args)
    status = client.get("/api/status")
    if args.format == "json":
        print(json.dumps(status, indent=2))
        return 0
    session = client.session
    print(f"ember program pid {session.pid} ({' '.join(session.argv) or '?'}), backend "
          f"{status.get('backend')}")
    if session.dashboard_url:
        print(f"dashboard: {session.dashboard_url}")
    for node in status.get("nodes", []):
        print(f"node {node['node_id']} ({node.get('state')})")
        total = node.get("resources_total") or {}
        used = node.get("resources_used") or {}
        for resource in sorted(total):
            if resource == "object_store_memory":
                continue
            print(f"  {used.get(resource, 0):g}/{total[resource]:g} {resource}")
        print(f"  object store {_bytes(node.get('object_store_used_bytes'))} of "
              f"{_bytes(node.get('object_store_capacity_bytes'))} in memory, "
              f"{_bytes(node.get('object_store_spilled_bytes'))} spilled; "
              f"{node.get('num_objects', '-')} objects, {node.get('num_workers', '-')} "
              "worker processes")

    def counts(found: dict[str, int]) -> str:
        return ", ".join(f"{state} {n}" for state, n in sorted(found.items())) or "none"

    print(f"actors: {counts(status.get('actors', {}))}")
    print(f"tasks: {counts(status.get('tasks', {}))}")
    failures = status.get("recent_failures") or []
    if failures:
        print("recent failures:")
        for failure in failures[:5]:
            print(f"  {failure['func_or_class_name']} ({failure['task_id']}): "
                  f"{_cell(failure['error_message'])}")
    views = status.get("views") or {}
    shown = [f"{kind} {n}" for kind, n in views.items() if n]
    if shown:
        print(f"library views: {', '.join(shown)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    client = _client(args)
    rows = client.get(f"/api/list/{args.kind}", filter=args.filter or None, limit=args.limit,
                      detail="1" if args.detail else None)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no {args.kind}" + (" match the filters" if args.filter else ""))
    else:
        print(table(rows, _COLUMNS[args.kind]))
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    summary = _client(args).get("/api/summary/tasks")
    if args.format == "json":
        print(json.dumps(summary, indent=2))
        return 0
    rows = [{"func_or_class_name": name, "type": entry["type"],
             "state_counts": ", ".join(f"{s}: {n}" for s, n in sorted(
                 entry["state_counts"].items()))}
            for name, entry in summary["summary"].items()]
    print(table(rows, ["func_or_class_name", "type", "state_counts"]) if rows else "no tasks")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    client = _client(args)
    answer = client.get("/api/logs", id=args.id)
    if not answer["found"]:
        print(f"ember logs: nothing is known as {args.id!r}: give an actor id, a task id, a "
              "deployment name (app/name) or a worker pid (see ember list actors)",
              file=sys.stderr)
        return 1
    lines = answer["lines"]
    if args.tail is not None and args.tail >= 0:
        lines = lines[-args.tail:] if args.tail else []
    _print_lines(lines)
    if not args.follow:
        return 0
    last = answer["last"]
    try:
        while True:
            time.sleep(FOLLOW_POLL_S)
            try:
                answer = client.get("/api/logs", id=args.id, after=last)
            except SessionError:
                print("(the program exited)", file=sys.stderr)
                return 0
            _print_lines(answer["lines"])
            last = answer["last"]
    except KeyboardInterrupt:
        return 0


def _print_lines(lines: list[dict[str, Any]]) -> None:
    for line in lines:
        stream = sys.stderr if line["stream"] == "stderr" else sys.stdout
        print(f"({line['name']} pid={line['pid']}) {line['text']}", file=stream)
    sys.stdout.flush()


def cmd_dashboard(args: argparse.Namespace) -> int:
    session, _others = find_session(args.pid)
    if not session.dashboard_url:
        print(f"ember program pid {session.pid} runs no dashboard: start it with "
              "ember.init(include_dashboard=True)", file=sys.stderr)
        return 1
    print(session.dashboard_url)
    if not args.no_browser:
        import webbrowser

        webbrowser.open(session.dashboard_url)
    return 0


def serve_status(argv: list[str]) -> int:
    """``ember serve status``: applications, deployments and replicas of a running program."""
    parser = argparse.ArgumentParser(prog="ember serve status",
                                     description="Serve applications of a running program.")
    _common(parser)
    args = parser.parse_args(argv)
    return _run(_serve_status, args)


def _serve_status(args: argparse.Namespace) -> int:
    answer = _client(args).get("/api/views/serve")
    if args.format == "json":
        print(json.dumps(answer, indent=2))
        return 0
    views = answer["views"]
    if not views:
        print("no serve applications")
        return 0
    series = answer.get("series", {})
    for app, view in views.items():
        state = view.get("state") or {}
        print(f"application {app}: {state.get('status', '?')} (route {state.get('route_prefix')})")
        for name, dep in (state.get("deployments") or {}).items():
            replicas = dep.get("replicas", [])
            running = sum(1 for r in replicas if r.get("state") == "RUNNING")
            line = (f"  deployment {name}: {dep.get('status')}, {running}/"
                    f"{dep.get('target_replicas')} replicas")
            points = series.get(f"{app}/{name}") or []
            if points:
                last = points[-1]
                p50 = "-" if last["p50"] is None else f"{last['p50']:.1f} ms"
                p99 = "-" if last["p99"] is None else f"{last['p99']:.1f} ms"
                line += f", {last['rps']:.1f} req/s, p50 {p50}, p99 {p99}"
            print(line)
            for replica in replicas:
                models = replica.get("models") or []
                print(f"    {replica.get('replica_id')}: {replica.get('state')}, "
                      f"{replica.get('ongoing', 0)} ongoing, pid {replica.get('pid')}"
                      + (f", models {', '.join(models)}" if models else ""))
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pid", type=int, default=None,
                        help="the program to look at, when several run (default: the newest)")
    parser.add_argument("--format", choices=("table", "json"), default="table")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ember", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="resources, nodes, actor and task counts")
    _common(status)
    status.set_defaults(run=cmd_status)
    listing = commands.add_parser("list", help="actors, tasks, objects or nodes")
    listing.add_argument("kind", choices=sorted(_COLUMNS))
    listing.add_argument("--filter", action="append", metavar="KEY=VALUE",
                         help="keep rows whose column matches (also KEY!=VALUE); repeatable")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--detail", action="store_true")
    _common(listing)
    listing.set_defaults(run=cmd_list)
    summary = commands.add_parser("summary", help="tasks per function, by state")
    summary.add_argument("kind", choices=("tasks",))
    _common(summary)
    summary.set_defaults(run=cmd_summary)
    logs = commands.add_parser("logs", help="what an actor, a task or a deployment printed")
    logs.add_argument("id", help="an actor id, a task id, a deployment (app/name) or a pid")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    logs.add_argument("--tail", type=int, default=None, help="only the last N lines")
    logs.add_argument("--pid", type=int, default=None,
                      help="the program to look at, when several run (default: the newest)")
    logs.set_defaults(run=cmd_logs)
    dashboard = commands.add_parser("dashboard", help="open the dashboard of a running program")
    dashboard.add_argument("--pid", type=int, default=None)
    dashboard.add_argument("--no-browser", action="store_true", help="only print the URL")
    dashboard.set_defaults(run=cmd_dashboard)
    return parser


COMMANDS = ("status", "list", "summary", "logs", "dashboard")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return _run(args.run, args)


def _run(command: Any, args: argparse.Namespace) -> int:
    try:
        return int(command(args))
    except SessionError as exc:
        print(f"ember {getattr(args, 'command', 'serve status')}: {exc}", file=sys.stderr)
        return 1
