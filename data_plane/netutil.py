"""Small networking helpers: free ports, waiting for a listener."""

from __future__ import annotations

import ipaddress
import random
import socket
import time
from pathlib import Path

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})
_LOWEST = 10_000
_handed_out: set[int] = set()
_rng = random.Random()  # seeded from the OS: parallel test processes draw different ports


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (outgoing connections take ports from it)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now that this process has not handed out before (tests and benchmarks).

    Drawn at random below the ephemeral range: a port the OS picks for `bind(0)` comes from the
    range every outgoing connection uses, so under load another test's client could take it
    between this call and the listener's bind (seen as "Address already in use" with two test
    processes). Random draws keep parallel test processes apart; a port handed out once is never
    handed out again by the same process.
    """
    high = _ephemeral_low()
    for _ in range(200 if high - _LOWEST >= 1_000 else 0):
        port = _rng.randrange(_LOWEST, high)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # no range to draw from: the OS's pick
        s.bind((host, 0))
        port = int(s.getsockname()[1])
    _handed_out.add(port)
    return port


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return True
        time.sleep(0.05)
    return False


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and any loopback address (127.0.0.0/8, ::1), bracketed or not."""
    name = host.strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
