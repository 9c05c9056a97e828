"""meshctl lifecycle building blocks: port clashes, process identity, the service table."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import replace

import pytest

from data_plane.contracts.errors import MeshError
from data_plane.netutil import free_port
from data_plane.settings import Ports, Settings
from meshctl import lifecycle
from meshctl.services import SERVICES, get_service


def test_a_taken_port_is_named_with_the_variable_that_moves_it(settings: Settings) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        s = replace(settings, ports=replace(Ports(), edge=taken, edge_admin=free_port()))
        problems = lifecycle.port_conflicts(s, [get_service("edge")])
    assert len(problems) == 1
    assert f"port {taken}" in problems[0] and "MESH_PORT_EDGE " in problems[0]


def test_every_service_port_is_a_settings_port() -> None:
    known = {f for f in Ports.__dataclass_fields__}
    for spec in SERVICES:
        assert set(spec.ports) <= known, spec.name
    assert [s.name for s in SERVICES][:3] == ["nats", "control-plane", "edge"]


def test_unknown_service_names_are_refused_with_the_list() -> None:
    with pytest.raises(MeshError, match=r"unknown service 'natz'.*control-plane"):
        lifecycle.select(["natz"], None)


def test_child_env_carries_every_port(settings: Settings) -> None:
    env = lifecycle.child_env(settings)
    assert env["MESH_HOME"] == str(settings.home)
    assert Settings.from_env(env).ports == settings.ports


def test_process_identity_tells_a_reused_pid_apart() -> None:
    me = os.getpid()
    ticks = lifecycle.process_start_ticks(me)
    assert ticks is not None
    assert lifecycle.process_alive(me, ticks)
    assert not lifecycle.process_alive(me, ticks + 1)  # same pid, different start: not ours


def test_a_zombie_counts_as_stopped() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    ticks = lifecycle.process_start_ticks(child.pid)
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
    try:
        assert not lifecycle.process_alive(child.pid, ticks)
    finally:
        child.wait()


def test_down_with_nothing_recorded_is_a_no_op(settings: Settings) -> None:
    assert lifecycle.down(settings, out=lambda _: None) == []
    assert lifecycle.down(settings, out=lambda _: None) == []
