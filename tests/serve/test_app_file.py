"""The YAML config of ``ember serve run config.yaml``: checking it (pure) and applying it."""

from __future__ import annotations

from typing import Any

import pytest

from ember import serve
from ember.serve._app_file import (
    AppConfig,
    ConfigError,
    ServeConfig,
    build_application,
    parse_config,
)


def test_a_full_config_is_read() -> None:
    config = parse_config({
        "proxy_location": "EveryNode",
        "http_options": {"host": "127.0.0.1", "port": 0},
        "applications": [
            {"name": "a", "route_prefix": "/a", "import_path": "m:app",
             "deployments": [{"name": "Model", "num_replicas": 2}]},
            {"name": "b", "route_prefix": None, "import_path": "m:build", "args": {"x": 1}},
        ],
    })
    assert config == ServeConfig("127.0.0.1", 0, (
        AppConfig("a", "m:app", "/a", {}, {"Model": {"num_replicas": 2}}),
        AppConfig("b", "m:build", None, {"x": 1}, {}),
    ), "EveryNode")
    assert parse_config({"applications": [{"import_path": "m:a"}]}).proxy_location == "HeadOnly"


@pytest.mark.parametrize(("raw", "message"), [
    ([], "must be a mapping"),
    ({"applications": []}, "non-empty 'applications'"),
    ({"aplications": []}, "unknown key 'aplications' \\(did you mean 'applications'\\?\\)"),
    ({"applications": [{"import_path": "nocolon"}]}, "must be 'module:attribute'"),
    ({"applications": [{"import_path": "m:a", "route_prefix": "a"}]}, "must start with '/'"),
    ({"applications": [{"import_path": "m:a", "runtime_env": {"pip": ["x"]}}]},
     "runtime_env is not supported"),
    ({"applications": [{"import_path": "m:a"}, {"import_path": "m:b", "route_prefix": "/"}]},
     "share a name"),
    ({"http_options": {"port": "80"}, "applications": [{"import_path": "m:a"}]},
     "port='80'"),
    ({"applications": [{"import_path": "m:a", "deployments": [{"num_replicas": 1}]}]},
     "must be a mapping with a 'name'"),
    ({"proxy_location": "Everywhere", "applications": [{"import_path": "m:a"}]},
     "proxy_location='Everywhere' must be HeadOnly"),
])
def test_bad_configs_say_where_and_what(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_deployment_options_reach_the_named_deployment() -> None:
    @serve.deployment
    class Inner:
        pass

    @serve.deployment
    class Outer:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

    app = AppConfig("x", "m:app", deployments={"Inner": {"num_replicas": 3},
                                               "Outer": {"max_ongoing_requests": 7}})
    built = build_application(app, Outer.bind(Inner.bind()))
    assert built.deployment.config.max_ongoing_requests == 7
    assert built.args[0].deployment.config.num_replicas == 3

    def builder(args: dict[str, Any]) -> Any:
        return Inner.options(num_replicas=args["n"])

    assert build_application(AppConfig("y", "m:b", args={"n": 2}), builder
                             ).deployment.config.num_replicas == 2
    with pytest.raises(ConfigError, match=r"no deployment named \['Missing'\]"):
        build_application(AppConfig("z", "m:a", deployments={"Missing": {}}), Inner.bind())
    with pytest.raises(ValueError, match="unknown deployment option 'num_replica'"):
        build_application(AppConfig("z", "m:a", deployments={"Inner": {"num_replica": 1}}),
                          Inner.bind())


# -- ember.serve.config: HTTPOptions, gRPCOptions, ProxyLocation (Ray's module) --------------
def test_http_options_take_ray_names_and_refuse_what_ember_cannot_do() -> None:
    from ember.serve.config import HTTPOptions, ProxyLocation

    options = HTTPOptions.from_any({"host": "0.0.0.0", "port": 0, "keep_alive_timeout_s": 90,
                                    "location": "EveryNode", "num_cpus": 0})
    assert (options.host, options.port, options.keep_alive_timeout_s) == ("0.0.0.0", 0, 90)
    assert HTTPOptions.from_any(None) == HTTPOptions()
    assert HTTPOptions().max_header_bytes == 8192 and HTTPOptions().max_headers == 100
    assert ProxyLocation("Disabled") is ProxyLocation.Disabled
    for bad, match in (({"ssl_certfile": "c.pem"}, "TLS"),
                       ({"root_path": "/api"}, "route_prefix"),
                       ({"request_timeout_s": 5}, "request_timeout_s"),
                       ({"middlewares": [object()]}, "middlewares"),
                       ({"max_headers": -1}, "max_headers"),
                       ({"port": 70000}, "port"),
                       ({"location": "Nowhere"}, "location"),
                       ({"hots": "x"}, "unknown http_options")):
        with pytest.raises(ValueError, match=match):
            HTTPOptions.from_any(bad)


def test_grpc_options_are_refused_when_they_ask_for_a_service() -> None:
    from ember import serve
    from ember.serve.config import gRPCOptions

    assert gRPCOptions().grpc_servicer_functions == []  # asks for nothing: accepted, as Ray
    with pytest.raises(ValueError, match="HTTP"):
        gRPCOptions(grpc_servicer_functions=["my_pb2_grpc.add_Servicer_to_server"])
    with pytest.raises(ValueError, match="gRPC"):
        serve.start(grpc_options={"grpc_servicer_functions": ["x.add_Servicer_to_server"]})


def test_status_strings_compare_equal_to_ray_status_enums() -> None:
    from ember.serve.schema import ApplicationStatus, ApplicationStatusOverview, DeploymentStatus

    overview = ApplicationStatusOverview("RUNNING", "/")
    assert overview.status == ApplicationStatus.RUNNING
    assert DeploymentStatus.HEALTHY == "HEALTHY"
