"""`meshctl chaos proxy`: runs in the foreground, serves the API, stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _meshctl(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "meshctl", "chaos", "proxy", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_serves_until_sigterm_and_loads_a_config_file(tmp_path, mesh_home):
    config = tmp_path / "proxies.json"
    config.write_text(json.dumps([{"name": "from_config", "listen": "127.0.0.1:0",
                                   "upstream": "127.0.0.1:9"}]))
    proc = _meshctl("--listen", "127.0.0.1:0", "--config", str(config))
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("populated 1 proxies")
        url = re.search(r"listening on (http://\S+)", proc.stdout.readline()).group(1)
        with urllib.request.urlopen(f"{url}/proxies", timeout=5) as resp:
            proxies = json.load(resp)
        assert proxies["from_config"]["enabled"] is True
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    assert "fault proxy stopped" in out


def test_refuses_a_non_loopback_api_address_with_a_clear_error(mesh_home):
    proc = _meshctl("--listen", "192.0.2.10:8474")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "loopback" in err and "Traceback" not in err


def test_a_busy_port_is_a_clear_error(mesh_home):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = _meshctl("--listen", f"127.0.0.1:{busy.getsockname()[1]}")
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "cannot listen" in err and "Traceback" not in err
