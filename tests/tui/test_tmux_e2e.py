"""End to end in a real terminal: `meshctl console` in tmux sets weights 50/50.

The console runs as its own process (`python -m meshctl console`) in a fixed-size tmux window on a
private tmux socket; keys go in with `send-keys`, the screen comes back with `capture-pane`. Once
against the recorded fake (exact request checked), once against the real control plane process.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest

from data_plane.netutil import free_port
from data_plane.procs import ManagedProcess
from data_plane.settings import REPO_ROOT, Ports, Settings
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
    try:
        socket_path = t.run("display-message", "-p", "#{socket_path}").strip()
    except subprocess.CalledProcessError:
        socket_path = ""
    subprocess.run([TMUX or "tmux", "-L", t.socket, "kill-server"], capture_output=True, timeout=10,
                   check=False)
    if socket_path:
        Path(socket_path).unlink(missing_ok=True)  # tmux can leave the socket file behind


def start_console(tmux: Tmux, tmp_path: Path, env: dict[str, str], *args: str) -> None:
    """`meshctl console ARGS` in a 100x30 tmux window; it echoes its exit code when it ends."""
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    script = tmp_path / "console.sh"
    # Textual draws on stderr: leave it on the terminal. COLUMNS/LINES would fake the size.
    script.write_text(f"cd {REPO_ROOT} && unset COLUMNS LINES && export TERM=xterm-256color {exports} && "
                      f"{sys.executable} -m meshctl console {' '.join(map(shlex.quote, args))}; "
                      "echo console exited $?; sleep 60\n")
    tmux.run("new-session", "-d", "-s", "console", "-x", "100", "-y", "30", f"bash {script}")


def set_weights_50_50(tmux: Tmux) -> str:
    """The operator's keys: w, 0.5 (pytorch follows), enter, y. Returns the screen after it applied."""
    tmux.wait_for("80.0% chain-xgboost")
    tmux.run("send-keys", "-t", "console", "w")
    tmux.wait_for("Set traffic weights")
    tmux.run("send-keys", "-t", "console", "0.5")  # the field is selected: typing replaces 0.8
    tmux.wait_for("0.5")
    tmux.run("send-keys", "-t", "console", "Enter")
    tmux.wait_for("Set the champion traffic split to xgboost 50% / pytorch")
    tmux.run("send-keys", "-t", "console", "y")
    screen = tmux.wait_for("50.0% chain-xgboost")
    assert "50.0% chain-pytorch" in screen
    return screen


def quit_console(tmux: Tmux) -> None:
    tmux.run("send-keys", "-t", "console", "q")
    tmux.wait_for("console exited 0")


def test_set_weights_in_a_real_terminal(tmux: Tmux, fake_api_thread: FakeOperatorAPI,
                                        token_file: Path, tmp_path: Path) -> None:
    start_console(tmux, tmp_path, {"MESH_HOME": str(tmp_path / "mesh")}, "--operator-url",
                  fake_api_thread.url, "--token-file", str(token_file), "--no-events", "--poll", "0.5")
    try:
        set_weights_50_50(tmux)
        tmux.wait_for("decision #7 operator set_weights -> xDS v43 ack")
        assert fake_api_thread.writes == [
            Write("POST", "/api/v1/traffic", {"xgboost": 0.5, "pytorch": 0.5}, f"Bearer {TOKEN}")]
    finally:
        print(tmux.screen())  # shown by pytest when the test fails
    quit_console(tmux)


def test_set_weights_against_the_real_control_plane(tmux: Tmux, tmp_path: Path) -> None:
    """`python -m control_plane` (no Envoy, no NATS: the decision is recorded, no node to ACK)."""
    env = {"MESH_HOME": str(tmp_path / "mesh"), "MESH_LOG_LEVEL": "WARNING"}
    # Every port a free one: the control plane probes and binds nothing of anyone else's mesh.
    env.update({f"MESH_PORT_{f.name.upper()}": str(free_port()) for f in fields(Ports)})
    settings = Settings.from_env(env)
    plane = ManagedProcess("control-plane", [sys.executable, "-m", "control_plane"], tmp_path / "cp.log",
                           env=env, cwd=REPO_ROOT).start()
    try:
        plane.wait_port(settings.host, settings.ports.operator, timeout=30)
        start_console(tmux, tmp_path, env, "--no-events", "--poll", "0.5")  # URL and token from MESH_*
        try:
            set_weights_50_50(tmux)
            tmux.wait_for("operator set_weights -> xDS v2")
        finally:
            print(tmux.screen())
        quit_console(tmux)
        with urllib.request.urlopen(f"{settings.operator_url}/api/v1/decisions?since=1", timeout=5) as resp:
            ledger = json.load(resp)["decisions"]
        assert [(d["actor"], d["action"], d["numbers"]) for d in ledger] == [
            ("operator", "set_weights", {"xgboost": 0.5, "pytorch": 0.5})]
    finally:
        plane.stop()
        print(plane.log_tail())
