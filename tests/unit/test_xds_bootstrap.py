"""Bootstrap rendering: the template's fields, and clear errors for bad arguments."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from control_plane.xds import render_bootstrap
from data_plane.contracts.errors import ConfigError


@pytest.mark.parametrize("role", ["edge", "sidecar"])
def test_rendered_bootstrap_has_node_ads_cluster_and_v3_sources(role: str, tmp_path: Path) -> None:
    path = render_bootstrap(role, f"{role}-node", 19901, "127.0.0.1", 18123, tmp_path / "b.yaml")
    boot = yaml.safe_load(path.read_text())
    assert boot["node"] == {"id": f"{role}-node", "cluster": role}
    assert boot["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 19901}
    dyn = boot["dynamic_resources"]
    assert dyn["ads_config"]["transport_api_version"] == "V3"
    assert dyn["ads_config"]["grpc_services"][0]["envoy_grpc"]["cluster_name"] == "xds"
    assert dyn["cds_config"]["resource_api_version"] == dyn["lds_config"]["resource_api_version"] == "V3"
    (xds,) = boot["static_resources"]["clusters"]
    assert xds["name"] == "xds" and xds["type"] == "STATIC"
    endpoint = xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert endpoint["socket_address"] == {"address": "127.0.0.1", "port_value": 18123}
    (options,) = xds["typed_extension_protocol_options"].values()
    assert "http2_protocol_options" in options["explicit_http_config"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"role": "proxy"}, "role 'proxy' is unknown"),
    ({"node_id": "two words"}, "node id"),
    ({"admin_port": 70000}, "admin_port=70000"),
    ({"ads_port": 0}, "ads_port=0"),
    ({"admin_host": "localhost"}, "admin_host='localhost' must be an IP address"),
    ({"ads_host": "bad host"}, "ads_host='bad host'"),
])
def test_bad_arguments_say_what_to_fix(kwargs: dict, message: str, tmp_path: Path) -> None:
    args = {"role": "edge", "node_id": "edge", "admin_port": 9901, "ads_host": "127.0.0.1", "ads_port": 18000,
            "out_path": tmp_path / "b.yaml", **kwargs}
    with pytest.raises(ConfigError, match=message):
        render_bootstrap(**args)


def test_replicas_render_their_own_id_under_the_role_they_share(tmp_path: Path) -> None:
    path = render_bootstrap("sidecar", "xgboost-5d8f-x2x7q", 9911, "127.0.0.1", 18000, tmp_path / "b.yaml",
                            node_cluster="sidecar-xgboost")
    node = yaml.safe_load(path.read_text())["node"]
    assert node == {"id": "xgboost-5d8f-x2x7q", "cluster": "sidecar-xgboost"}
    with pytest.raises(ConfigError, match="node cluster 'two words'"):
        render_bootstrap("edge", "edge-1", 9901, "127.0.0.1", 18000, tmp_path / "c.yaml",
                         node_cluster="two words")
