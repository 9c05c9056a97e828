"""Fixtures for the Toxiproxy conformance suite.

The same tests run against:
- the project's fault proxy (default): started as a process (``python -m chaos.proxy``) on a
  free port for the session;
- a real Toxiproxy: set ``TOXIPROXY_URL`` (e.g. ``http://127.0.0.1:8474``). With the container on
  the host network nothing else is needed. For a port-mapped container set also
  ``TOXIPROXY_LISTEN_HOST=0.0.0.0``, ``TOXIPROXY_PORTS=26000-26100`` (the mapped range),
  ``TOXIPROXY_UPSTREAM_HOST=host.docker.internal`` and ``TOXIPROXY_UPSTREAM_BIND`` (an address the
  container can reach). See docs/chaos-proxy.md.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conformance._support import Api, Upstreams, connect, port_of

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Target:
    """The server under test and how to reach things from either side."""

    api: Api
    ours: bool
    connect_host: str  # where tests dial proxy listeners
    listen_host: str  # the host part of `listen` for proxies the tests create
    upstream_host: str  # how the proxy reaches the tests' upstreams
    ports: Iterator[int] | None  # listen ports to use instead of 0 (a port-mapped container)

    def listen(self) -> str:
        port = next(self.ports) if self.ports is not None else 0
        return f"{self.listen_host}:{port}"


def _port_range(spec: str | None) -> Iterator[int] | None:
    if not spec:
        return None
    low, _, high = spec.partition("-")
    return itertools.cycle(range(int(low), int(high or low) + 1))


def _spawn_ours(log: Path) -> tuple[subprocess.Popen[str], str]:
    # Logs go to a file, not a pipe nobody drains (a full pipe would stall the proxy).
    with log.open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chaos.proxy", "--listen", "127.0.0.1:0", "--log-level", "INFO"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=log_file, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the process prints one "listening on <url>" line when ready
    match = re.search(r"listening on (http://\S+)", line)
    if not match:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"fault proxy did not start: {line!r}\n{log.read_text()}")
    return proc, match.group(1)


@pytest.fixture(scope="session")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    url = os.environ.get("TOXIPROXY_URL")
    proc = None
    if not url:
        proc, url = _spawn_ours(tmp_path_factory.mktemp("fault-proxy") / "proxy.log")
    api_host = urlsplit(url).hostname or "127.0.0.1"
    yield Target(
        api=Api(url.rstrip("/")),
        ours=proc is not None,
        connect_host=os.environ.get("TOXIPROXY_CONNECT_HOST", api_host),
        listen_host=os.environ.get("TOXIPROXY_LISTEN_HOST", "127.0.0.1"),
        upstream_host=os.environ.get("TOXIPROXY_UPSTREAM_HOST", "127.0.0.1"),
        ports=_port_range(os.environ.get("TOXIPROXY_PORTS")),
    )
    if proc is not None:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


@pytest.fixture(scope="session")
def upstreams() -> Iterator[Upstreams]:
    servers = Upstreams(bind=os.environ.get("TOXIPROXY_UPSTREAM_BIND", "127.0.0.1"))
    servers.start()
    yield servers
    servers.stop()


@pytest.fixture
def api(target: Target) -> Api:
    return target.api


@pytest.fixture
def name() -> str:
    """A proxy name no other test (or earlier run) uses."""
    return f"conf_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_proxy(target: Target, upstreams: Upstreams) -> Iterator[Callable[..., dict[str, Any]]]:
    """Create a proxy to one of the upstreams (`echo`, `banner`, `bye`, `http`); deleted afterwards."""
    created: list[str] = []

    def make(upstream: str = "echo", **fields: Any) -> dict[str, Any]:
        body = {"name": f"conf_{uuid.uuid4().hex[:10]}", "listen": target.listen(),
                "upstream": f"{target.upstream_host}:{upstreams.ports[upstream]}", **fields}
        reply = target.api.post("/proxies", body)
        assert reply.status == 201, reply.body
        created.append(body["name"])
        return reply.json()

    yield make
    for proxy_name in created:
        target.api.delete(f"/proxies/{proxy_name}")


@pytest.fixture
def dial(target: Target) -> Iterator[Callable[[dict[str, Any]], Any]]:
    """Open a TCP connection to a proxy's listener; closed afterwards."""
    socks = []

    def open_(proxy: dict[str, Any]) -> Any:
        sock = connect(target.connect_host, port_of(proxy["listen"]))
        socks.append(sock)
        return sock

    yield open_
    for sock in socks:
        sock.close()

