"""A YAML file describing several applications, for ``ember serve run config.yaml``.

The layout is Ray Serve's config file::

    http_options:
      host: 127.0.0.1
      port: 8000
    applications:
      - name: translator
        route_prefix: /translate
        import_path: my_models:translator_app     # a bound deployment, or a builder function
        args: {language: fr}                      # passed to a builder function
        deployments:                              # options for deployments of the app, by name
          - name: Translator
            num_replicas: 2
            user_config: {beam: 4}
      - name: summarizer
        route_prefix: /summarize
        import_path: my_models:summarizer_app

Parsing and checking (``parse_config``) is pure; ``build_application`` imports the target and
applies the deployment options. Every key is checked: a misspelt one is an error, not ignored.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from ember.errors import EmberError

_TOP_KEYS = {"http_options", "applications", "proxy_location", "logging_config", "grpc_options"}
# Ray's keys that mean nothing different on one machine: accepted only when they ask for nothing.
_EMPTY_ONLY = {"logging_config", "grpc_options", "runtime_env"}
_PROXY_LOCATIONS = {None, "HeadOnly", "EveryNode", "Disabled"}
_HTTP_KEYS = {"host", "port"}
_APP_KEYS = {"name", "route_prefix", "import_path", "args", "deployments", "runtime_env",
             "logging_config"}


def _check_empty(section: dict[str, Any], where: str) -> None:
    for key in sorted(_EMPTY_ONLY & set(section)):
        if section[key]:
            raise ConfigError(f"{where}.{key} is not supported by ember serve; remove it "
                              "(runtime_env: install what the app needs where it runs)")


class ConfigError(EmberError, ValueError):
    """The serve config file is malformed; the message says where and how to fix it."""


@dataclass(frozen=True)
class AppConfig:
    name: str
    import_path: str
    route_prefix: str | None = "/"
    args: dict[str, Any] = field(default_factory=dict)
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    applications: tuple[AppConfig, ...] = ()
    proxy_location: str = "HeadOnly"


def _unknown(keys: set[str], known: set[str], where: str) -> None:
    for key in sorted(keys - known):
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{where}: unknown key {key!r}{hint}; known: {', '.join(sorted(known))}")


def parse_config(raw: Any) -> ServeConfig:
    """Check a loaded YAML document and return what it describes."""
    if not isinstance(raw, dict):
        raise ConfigError("the serve config must be a mapping with an 'applications' list")
    _unknown(set(raw), _TOP_KEYS, "serve config")
    _check_empty(raw, "serve config")
    if raw.get("proxy_location") not in _PROXY_LOCATIONS:
        raise ConfigError(f"proxy_location={raw['proxy_location']!r} must be HeadOnly (one "
                          "HTTP proxy, on the head node), EveryNode or Disabled")
    http = raw.get("http_options") or {}
    if not isinstance(http, dict):
        raise ConfigError("http_options must be a mapping (host, port)")
    _unknown(set(http), _HTTP_KEYS, "http_options")
    port = http.get("port", 8000)
    if not isinstance(port, int) or not 0 <= port < 65536:
        raise ConfigError(f"http_options.port={port!r} must be an integer in [0, 65535]")
    apps_raw = raw.get("applications")
    if not isinstance(apps_raw, list) or not apps_raw:
        raise ConfigError("the serve config needs a non-empty 'applications' list")
    apps: list[AppConfig] = []
    for index, app in enumerate(apps_raw):
        where = f"applications[{index}]"
        if not isinstance(app, dict):
            raise ConfigError(f"{where} must be a mapping with at least 'import_path'")
        _unknown(set(app), _APP_KEYS, where)
        _check_empty(app, where)
        import_path = app.get("import_path")
        if not isinstance(import_path, str) or ":" not in import_path:
            raise ConfigError(f"{where}.import_path={import_path!r} must be 'module:attribute'")
        name = app.get("name", "default")
        route_prefix = app.get("route_prefix", "/")
        if route_prefix is not None and not str(route_prefix).startswith("/"):
            raise ConfigError(f"{where}.route_prefix={route_prefix!r} must start with '/'")
        args = app.get("args") or {}
        if not isinstance(args, dict):
            raise ConfigError(f"{where}.args must be a mapping of builder arguments")
        deployments: dict[str, dict[str, Any]] = {}
        for d_index, dep in enumerate(app.get("deployments") or []):
            if not isinstance(dep, dict) or not isinstance(dep.get("name"), str):
                raise ConfigError(f"{where}.deployments[{d_index}] must be a mapping with a "
                                  "'name' and the options to set")
            deployments[dep["name"]] = {k: v for k, v in dep.items() if k != "name"}
        apps.append(AppConfig(str(name), import_path, route_prefix, dict(args), deployments))
    names = [a.name for a in apps]
    prefixes = [a.route_prefix for a in apps if a.route_prefix is not None]
    for label, values in (("name", names), ("route_prefix", prefixes)):
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ConfigError(f"applications share a {label}: {repeated}; each needs its own")
    return ServeConfig(str(http.get("host", "127.0.0.1")), port, tuple(apps),
                       raw.get("proxy_location") or "HeadOnly")


def load_config(path: str) -> ServeConfig:
    import yaml

    with open(path) as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    return parse_config(raw)


def build_application(app: AppConfig, target: Any) -> Any:
    """The bound application for ``app``: ``target`` (what ``import_path`` names) bound, or
    called with ``args`` when it is a builder, with the deployment options applied."""
    from ember.serve._deployment import Application, Deployment

    if isinstance(target, Deployment):
        target = target.bind()
    elif not isinstance(target, Application) and callable(target):
        target = target(app.args)
        if isinstance(target, Deployment):
            target = target.bind()
    elif app.args:
        raise ConfigError(f"application {app.name!r}: args are for a builder function, but "
                          f"{app.import_path} is already bound; drop args or point at a builder")
    if not isinstance(target, Application):
        raise ConfigError(f"application {app.name!r}: {app.import_path} is not a bound "
                          "deployment (MyDeployment.bind(...)) nor a builder returning one")
    present = {a.deployment.name for a in target.walk()}
    missing = sorted(set(app.deployments) - present)
    if missing:
        raise ConfigError(f"application {app.name!r} has no deployment named {missing}; "
                          f"its deployments: {sorted(present)}")
    return _with_options(target, app.deployments, {})


def _with_options(app: Any, options: dict[str, dict[str, Any]], done: dict[int, Any]) -> Any:
    from ember.serve._deployment import Application, replace_applications

    if id(app) in done:
        return done[id(app)]

    def swap(child: Application) -> Any:
        return _with_options(child, options, done)

    deployment = app.deployment
    if deployment.name in options:
        deployment = deployment.options(**options[deployment.name])
    rebuilt = Application(deployment, replace_applications(app.args, swap),
                          replace_applications(app.kwargs, swap))
    done[id(app)] = rebuilt
    return rebuilt
