"""End to end in a real terminal: `meshctl console` in tmux sets weights 50/50 against the fake API.

The console runs as its own process (`python -m meshctl console`) in a fixed-size tmux window on a
private tmux socket; keys go in with `send-keys`, the screen comes back with `capture-pane`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from data_plane.settings import REPO_ROOT
from tests.tui.fake_api import TOKEN, FakeOperatorAPI, Write

TMUX = shutil.which("tmux")
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt-get install tmux)")]


class Tmux:
    """One tmux server on a private socket, so the test never touches anyone's sessions."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def run(self, *args: str) -> str:
        assert TMUX is not None
        # The tmux server keeps the environment of the client that started it; pytest's run has
        # COLUMNS/LINES set, which would make the console believe the terminal is 80x24.
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        done = subprocess.run([TMUX, "-L", self.socket, *args], capture_output=True, text=True, timeout=10,
                              check=True, env=env)
        return done.stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "console")

    def wait_for(self, text: str, within: float = 20.0) -> str:
        deadline = time.monotonic() + within
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} did not appear within {within:g} s; the screen:\n{screen}")


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    t = Tmux(f"mesh-console-test-{uuid.uuid4().hex[:8]}")
    yield t
    subprocess.run([TMUX or "tmux", "-L", t.socket, "kill-server"], capture_output=True, timeout=10,
                   check=False)


def test_set_weights_in_a_real_terminal(tmux: Tmux, fake_api_thread: FakeOperatorAPI,
                                        token_file: Path, tmp_path: Path) -> None:
    command = (f"MESH_HOME={tmp_path / 'mesh'} {sys.executable} -m meshctl console "
               f"--operator-url {fake_api_thread.url} --token-file {token_file} --no-events --poll 0.5; "
               "echo console exited $?; sleep 60")  # Textual draws on stderr: leave it on the terminal
    env_file = tmp_path / "run.sh"
    env_file.write_text(f"cd {REPO_ROOT} && unset COLUMNS LINES && export TERM=xterm-256color && {command}\n")
    tmux.run("new-session", "-d", "-s", "console", "-x", "100", "-y", "30", f"bash {env_file}")
    try:
        tmux.wait_for("80.0% chain-xgboost")
        tmux.run("send-keys", "-t", "console", "w")
        tmux.wait_for("Set traffic weights")
        tmux.run("send-keys", "-t", "console", "0.5")  # the field is selected: typing replaces 0.8
        tmux.wait_for("0.5")
        tmux.run("send-keys", "-t", "console", "Enter")
        tmux.wait_for("Set the champion traffic split to xgboost 50% / pytorch")
        assert fake_api_thread.writes == []
        tmux.run("send-keys", "-t", "console", "y")
        screen = tmux.wait_for("50.0% chain-xgboost")
        assert "50.0% chain-pytorch" in screen
        tmux.wait_for("decision #7 operator set_weights -> xDS v43 ack")
        assert fake_api_thread.writes == [
            Write("POST", "/api/v1/traffic", {"xgboost": 0.5, "pytorch": 0.5}, f"Bearer {TOKEN}")]
    finally:
        print(tmux.screen())  # shown by pytest when the test fails
    tmux.run("send-keys", "-t", "console", "q")
    tmux.wait_for("console exited 0")
