"""meshctl lifecycle building blocks: port clashes, process identity, the service table."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
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


def _record(proc: subprocess.Popen[bytes], name: str = "stubborn") -> lifecycle.ServiceRecord:
    ticks = lifecycle.process_start_ticks(proc.pid) or 0
    return lifecycle.ServiceRecord(name=name, pid=proc.pid, start_ticks=ticks, argv=[], ports={}, probes=[],
                                   log="", started_at=time.time())


def test_stop_escalates_to_sigkill_for_a_process_ignoring_sigterm() -> None:
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True);"
            " time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline()  # the handler is installed
    lines: list[str] = []
    stopped = lifecycle._stop(Settings.from_env(), [_record(proc)], timeout=0.3, out=lines.append)
    assert stopped == ["stubborn"] and any("SIGKILL" in line for line in lines)
    assert proc.wait(timeout=5) == -signal.SIGKILL
    proc.stdout.close()


def test_stop_reaches_group_members_that_outlive_their_leader() -> None:
    # The leader starts a grandchild in its process group and exits at once.
    code = ("import subprocess, sys;"
            " p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
            " print(p.pid, flush=True)")
    leader = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE)
    assert leader.stdout is not None
    grandchild = int(leader.stdout.readline())
    rec = _record(leader, "leader")
    leader.wait(timeout=5)
    leader.stdout.close()
    assert lifecycle.is_running(rec)  # the group lives on
    lifecycle._stop(Settings.from_env(), [rec], timeout=2, out=lambda _: None)
    deadline = time.monotonic() + 5
    while lifecycle.process_alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not lifecycle.process_alive(grandchild)
