"""Settings: defaults that work locally, env overrides, clear errors for bad values."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from data_plane.contracts.errors import ConfigError, StateDirError
from data_plane.settings import Settings


def test_defaults_bind_loopback_with_seed_ports(tmp_path: Path) -> None:
    s = Settings.from_env({"MESH_HOME": str(tmp_path)})
    assert s.host == "127.0.0.1"
    assert (s.ports.edge, s.ports.xgboost, s.ports.pytorch, s.ports.heuristic) == (8000, 8001, 8002, 8003)
    assert s.mlflow_tracking_uri == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    assert dict(s.default_weights) == {"xgboost": 0.8, "pytorch": 0.2}


def test_port_overrides_and_validation(tmp_path: Path) -> None:
    s = Settings.from_env({"MESH_HOME": str(tmp_path), "MESH_PORT_EDGE": "18080"})
    assert s.ports.edge == 18080 and s.edge_url == "http://127.0.0.1:18080"
    with pytest.raises(ConfigError, match="MESH_PORT_EDGE"):
        Settings.from_env({"MESH_PORT_EDGE": "eighty"})
    with pytest.raises(ConfigError, match="outside"):
        Settings.from_env({"MESH_PORT_NATS": "70000"})


def test_nats_credentials_in_url(tmp_path: Path) -> None:
    s = Settings.from_env({"MESH_HOME": str(tmp_path), "MESH_NATS_USER": "mesh",
                           "MESH_NATS_PASSWORD": "pw"})
    assert s.nats_url == "nats://mesh:pw@127.0.0.1:4222"


def test_ensure_home_creates_layout(tmp_path: Path) -> None:
    s = Settings.from_env({"MESH_HOME": str(tmp_path / "h")})
    s.ensure_home()
    for d in (s.state_dir, s.run_dir, s.log_dir, s.envoy_dir, s.mlflow_artifacts):
        assert d.is_dir()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; chmod cannot refuse it")
def test_unwritable_home_is_a_clear_error(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(StateDirError, match="MESH_HOME"):
        Settings.from_env({"MESH_HOME": str(ro / "home")}).ensure_home()


def test_home_under_a_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StateDirError, match="MESH_HOME"):
        Settings.from_env({"MESH_HOME": str(blocker / "home")}).ensure_home()
