"""Shared fixtures: an isolated MESH_HOME per test, settings bound to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_plane.settings import Settings


@pytest.fixture
def mesh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "mesh"
    monkeypatch.setenv("MESH_HOME", str(home))
    return home


@pytest.fixture
def settings(mesh_home: Path) -> Settings:
    s = Settings.from_env()
    s.ensure_home()
    return s
