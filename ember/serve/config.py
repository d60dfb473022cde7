"""Serve's configuration objects, under Ray's module name (``ray.serve.config``).

``HTTPOptions`` configures the HTTP proxy (``serve.start(http_options=...)``), with Ray's field
names and ember's input limits; ``AutoscalingConfig`` and ``ProxyLocation`` are as in Ray.
ember serves HTTP only: ``gRPCOptions`` exists so that Ray code imports, and is refused as soon
as it asks for a gRPC service.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any

from ember.serve._autoscaling import AutoscalingConfig

__all__ = ["AutoscalingConfig", "DeploymentMode", "HTTPOptions", "ProxyLocation", "gRPCOptions"]


class ProxyLocation(str, enum.Enum):
    """Where HTTP proxies run. ember runs one proxy, on the driver's machine: ``HeadOnly`` and
    ``EveryNode`` both mean that; ``Disabled`` starts none."""

    Disabled = "Disabled"
    HeadOnly = "HeadOnly"
    EveryNode = "EveryNode"


class DeploymentMode(str, enum.Enum):
    """Ray's older spelling of ``ProxyLocation`` (``HTTPOptions.location``)."""

    NoServer = "NoServer"
    HeadOnly = "HeadOnly"
    EveryNode = "EveryNode"


# Fields of Ray's HTTPOptions that ember does not implement: accepted only at their default,
# so that a setting is never silently ignored.
_UNSUPPORTED = {
    "root_path": ("", "mount applications with serve.run(app, route_prefix=...) instead"),
    "root_url": ("", "ember derives the URL from host and port"),
    "request_timeout_s": (None, "time requests out in the client, or in the handler"),
    "ssl_keyfile": (None, "put a TLS-terminating proxy (nginx, caddy) in front of serve"),
    "ssl_certfile": (None, "put a TLS-terminating proxy (nginx, caddy) in front of serve"),
    "ssl_keyfile_password": (None, "put a TLS-terminating proxy (nginx, caddy) in front"),
    "ssl_ca_certs": (None, "put a TLS-terminating proxy (nginx, caddy) in front of serve"),
}


@dataclass(frozen=True)
class HTTPOptions:
    """Options of the HTTP proxy (Ray's names, plus ember's limits on what clients send).

    - ``host`` (default 127.0.0.1: only this machine), ``port`` (default 8000; 0 picks one),
      ``keep_alive_timeout_s`` (idle connections close after it; default 5).
    - Limits, each answered with a 4xx before any replica is involved:
      ``max_body_bytes`` (100 MiB, else 413), ``max_header_bytes`` (one header, name and value:
      8 KiB as nginx's header buffer, else 431), ``max_headers`` (100 headers, as Apache's
      ``LimitRequestFields``, else 431) and ``max_request_head_bytes`` (the request line and all
      headers together: 64 KiB, else 431; the HTTP parser buffers no more than this).
    - ``show_error_details`` (default False): a handler's exception text in 500 bodies. Off,
      clients get a generic message with the request id, and the replica logs the traceback
      with that id; turn it on for development only.
    - ``location``, ``num_cpus``, ``middlewares``: Ray's, accepted for compatibility
      (``middlewares`` only empty). ``root_path``, ``root_url``, ``request_timeout_s`` and the
      ``ssl_*`` fields are refused unless left at their defaults.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    keep_alive_timeout_s: float = 5.0
    max_body_bytes: int = 100 * 2**20
    max_header_bytes: int = 8 * 2**10
    max_headers: int = 100
    max_request_head_bytes: int = 64 * 2**10
    show_error_details: bool = False
    location: ProxyLocation | DeploymentMode | str | None = ProxyLocation.HeadOnly
    num_cpus: float = 0
    middlewares: list[Any] = field(default_factory=list)
    root_path: str = ""
    root_url: str = ""
    request_timeout_s: float | None = None
    ssl_keyfile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile_password: str | None = None
    ssl_ca_certs: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or not 0 <= self.port < 65536:
            raise ValueError(f"HTTPOptions(port={self.port!r}) must be an integer in "
                             "[0, 65535] (0 picks a free port)")
        for name in ("max_body_bytes", "max_header_bytes", "max_headers",
                     "max_request_head_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"HTTPOptions({name}={value!r}) must be an integer >= 0")
        if self.max_request_head_bytes < 1024:
            raise ValueError(f"HTTPOptions(max_request_head_bytes={self.max_request_head_bytes})"
                             " must be at least 1024")
        if not isinstance(self.keep_alive_timeout_s, (int, float)) or (
                self.keep_alive_timeout_s <= 0):
            raise ValueError(f"HTTPOptions(keep_alive_timeout_s={self.keep_alive_timeout_s!r}) "
                             "must be a number > 0")
        if self.middlewares:
            raise ValueError("HTTPOptions(middlewares=...) is not supported (Ray deprecated it "
                             "too): wrap your ASGI app in its middleware and use @serve.ingress")
        for name, (default, instead) in _UNSUPPORTED.items():
            if getattr(self, name) != default:
                raise ValueError(f"HTTPOptions({name}={getattr(self, name)!r}) is not "
                                 f"supported by ember serve: {instead}")
        location = self.location
        if location is not None and str(getattr(location, "value", location)) not in (
                "HeadOnly", "EveryNode", "Disabled", "NoServer"):
            raise ValueError(f"HTTPOptions(location={location!r}) must be one of HeadOnly, "
                             "EveryNode, Disabled")

    @classmethod
    def from_any(cls, value: Any) -> HTTPOptions:
        """``HTTPOptions`` from itself, a dict of its fields, or ``None`` (the defaults)."""
        if value is None:
            return cls()
        if isinstance(value, HTTPOptions):
            return value
        if isinstance(value, dict):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ValueError(f"unknown http_options {unknown}; known: "
                                 f"{', '.join(sorted(known))}")
            return cls(**value)
        raise TypeError(f"http_options must be an HTTPOptions or a dict, got {value!r}")

    def proxy_options(self) -> dict[str, Any]:
        """What the proxy actor needs (plain values: they travel to it)."""
        return {"max_body_bytes": self.max_body_bytes, "max_header_bytes": self.max_header_bytes,
                "max_headers": self.max_headers,
                "max_request_head_bytes": self.max_request_head_bytes,
                "show_error_details": self.show_error_details,
                "keep_alive_timeout_s": self.keep_alive_timeout_s}


@dataclass(frozen=True)
class gRPCOptions:
    """Ray's gRPC proxy options. ember serves HTTP only: options that ask for a gRPC service
    (``grpc_servicer_functions``) are refused; the defaults (no service) are accepted."""

    port: int = 9000
    grpc_servicer_functions: list[str] = field(default_factory=list)
    request_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.grpc_servicer_functions:
            raise ValueError(
                "gRPCOptions(grpc_servicer_functions=...) asks for a gRPC proxy, which ember "
                "serve does not have: serve the deployment over HTTP (or call it with a "
                "DeploymentHandle), and drop grpc_options"
            )
