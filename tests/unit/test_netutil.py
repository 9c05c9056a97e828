"""free_port: ports outside the ephemeral range, never handed out twice by one process."""

from __future__ import annotations

import socket

import pytest

from data_plane import netutil


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    ports = [netutil.free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(netutil._LOWEST <= p < netutil._ephemeral_low() for p in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))  # free when handed out


def test_a_port_in_use_or_handed_out_before_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    given = netutil.free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        spare = netutil.free_port()
        netutil._handed_out.discard(spare)
        draws = iter([taken, given, spare])
        monkeypatch.setattr(netutil, "_ephemeral_low", lambda: 65_000)  # the busy port is in range
        scripted = type("Draws", (), {"randrange": lambda self, low, high: next(draws)})()
        monkeypatch.setattr(netutil, "_rng", scripted)
        assert netutil.free_port() == spare
