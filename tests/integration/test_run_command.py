"""`make run` headless: trains on an empty registry, serves a first prediction, prints status
lines with demo load flowing, and leaves no process behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mesh_support import free_port_env

pytestmark = pytest.mark.integration


def test_run_headless_end_to_end(tmp_path: Path) -> None:
    home = tmp_path / "mesh"
    env = {**os.environ, **free_port_env(), "MESH_HOME": str(home)}
    proc = subprocess.run(
        [sys.executable, "-m", "meshctl", "run", "--headless", "--rows", "5000", "--for", "6",
         "--interval", "2", "--rate", "30"],
        env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    out = proc.stdout
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "no model registered yet: training" in out
    first = re.search(r"first prediction ([\d.]+)s after", out)
    assert first, out
    assert '"model_type": "xgboost"' in out or '"model_type": "pytorch"' in out
    assert "background load: 30 requests/s" in out
    assert re.search(r"\| weights xgboost=0\.\d\d pytorch=0\.\d\d \| xds v\d+", out)
    assert "stopping the mesh" in out
    leftovers = subprocess.run(["pgrep", "-f", str(home)], capture_output=True, text=True).stdout
    assert not leftovers.strip(), f"processes left behind: {leftovers}"
