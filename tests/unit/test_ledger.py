"""The decision ledger: append-only, fsynced, crash-safe, seq without gaps or duplicates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import msgspec
import pytest

from control_plane.ledger import ACKS_FILE, LEDGER_FILE, Ledger
from data_plane.contracts.events import Decision
from data_plane.settings import Settings


def _decision(action: str = "set_weights", **kw: object) -> Decision:
    return Decision(actor="operator", action=action, rule="operator_request", reason="test", **kw)


def test_append_numbers_from_one_and_reads_back(settings: Settings) -> None:
    ledger = Ledger(settings.state_dir)
    stored = [ledger.append(_decision(numbers={"xgboost": 0.5 + i / 10})) for i in range(3)]
    assert [d.seq for d in stored] == [1, 2, 3]
    again = Ledger(settings.state_dir)
    assert [d.seq for d in again.read()] == [1, 2, 3]
    assert again.read()[2].numbers == {"xgboost": 0.7}
    assert [d.seq for d in again.read(since_seq=1, limit=1)] == [2]
    assert again.read(since_seq=3) == []
    assert [d.seq for d in again.tail(2)] == [2, 3]


def test_seq_continues_after_restart(settings: Settings) -> None:
    Ledger(settings.state_dir).append(_decision())
    d = Ledger(settings.state_dir).append(_decision())
    assert d.seq == 2


def test_torn_last_line_is_cut_off_and_seq_continues(settings: Settings) -> None:
    ledger = Ledger(settings.state_dir)
    ledger.append(_decision())
    ledger.append(_decision())
    path = settings.state_dir / LEDGER_FILE
    full_line = msgspec.json.encode(msgspec.structs.replace(_decision(), seq=3))
    with open(path, "ab") as fh:
        fh.write(full_line[: len(full_line) // 2])  # a writer killed mid-line
    reopened = Ledger(settings.state_dir)
    assert reopened.last_seq == 2
    d = reopened.append(_decision("freeze"))
    assert d.seq == 3
    lines = path.read_bytes().splitlines()
    assert [json.loads(x)["seq"] for x in lines] == [1, 2, 3]  # every line parses: no merged line


def test_undecodable_last_line_with_newline_is_treated_as_torn(settings: Settings) -> None:
    Ledger(settings.state_dir).append(_decision())
    with open(settings.state_dir / LEDGER_FILE, "ab") as fh:
        fh.write(b"\x00\x00\x00\n")
    assert Ledger(settings.state_dir).append(_decision()).seq == 2


def test_update_ack_is_a_follow_up_entry(settings: Settings) -> None:
    ledger = Ledger(settings.state_dir)
    d = ledger.append(_decision(xds_version="7", acked=None, nodes={"edge": "pending"}))
    before = (settings.state_dir / LEDGER_FILE).read_bytes()
    updated = ledger.update_ack(d.seq, True, {"edge": "ack"})
    assert updated.acked is True and updated.nodes == {"edge": "ack"}
    assert (settings.state_dir / LEDGER_FILE).read_bytes() == before  # the ledger is never rewritten
    assert (settings.state_dir / ACKS_FILE).exists()
    again = Ledger(settings.state_dir).get(d.seq)
    assert again is not None and again.acked is True and again.nodes == {"edge": "ack"}
    with pytest.raises(KeyError):
        ledger.update_ack(99, True, {})


def test_read_caps_the_limit(settings: Settings) -> None:
    ledger = Ledger(settings.state_dir)
    for _ in range(3):
        ledger.append(_decision())
    assert ledger.read(limit=0) == []
    assert len(ledger.read(limit=10_000)) == 3


_APPENDER = """
import sys
from control_plane.ledger import Ledger
from data_plane.contracts.events import Decision
from data_plane.settings import Settings
ledger = Ledger(Settings.from_env().state_dir)
while True:
    d = ledger.append(Decision(actor="reconciler", action="eject", rule="r", reason="x" * 300))
    print(d.seq, flush=True)
"""


def test_sigkill_while_appending_leaves_no_gap_or_duplicate(settings: Settings) -> None:
    env = {**os.environ, "MESH_HOME": str(settings.home)}
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", _APPENDER], stdout=subprocess.PIPE, env=env)
        assert proc.stdout is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and int(proc.stdout.readline()) < 10:
            pass
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        printed = [int(x) for x in proc.stdout.read().split()]
        proc.stdout.close()
        ledger = Ledger(settings.state_dir)
        seqs = [d.seq for d in ledger.read(limit=1000)]
        assert seqs == list(range(1, len(seqs) + 1))
        if printed:
            assert seqs[-1] >= printed[-1]  # every append that returned is durable


def test_constructing_touches_nothing_until_open(settings: Settings) -> None:
    Ledger(settings.state_dir).append(_decision())
    path = settings.state_dir / LEDGER_FILE
    with open(path, "ab") as fh:
        fh.write(b'{"seq": 2, "act')
    before = path.read_bytes()
    ledger = Ledger(settings.state_dir)  # e.g. a second control plane that has not got the lock
    assert path.read_bytes() == before
    assert ledger.open().last_seq == 1
    assert path.read_bytes() == before[: before.index(b'{"seq": 2')]
