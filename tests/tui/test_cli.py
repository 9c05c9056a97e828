"""`meshctl console` outside a terminal, and with bad arguments: a clear message and exit code 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from data_plane.settings import REPO_ROOT


def meshctl(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshctl", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "MESH_HOME": str(home)})


def test_without_a_terminal_it_says_so_and_exits_1(tmp_path: Path) -> None:
    done = meshctl("console", "--no-events", home=tmp_path)
    assert done.returncode == 1
    assert "meshctl console: the console needs an interactive terminal (a TTY)" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_poll_interval_out_of_range_is_refused(tmp_path: Path) -> None:
    done = meshctl("console", "--poll", "0.01", home=tmp_path)
    assert done.returncode == 1
    assert "--poll 0.01 is outside 0.2-30 seconds" in done.stderr
