"""The control-plane state store: durable intent, a version that never goes backwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from control_plane.intent import RoutingIntent
from control_plane.store import STATE_FILE, StateLockedError, StateStore, read_state
from data_plane.contracts.errors import StateDirError
from data_plane.settings import Settings


def test_fresh_store_starts_from_the_seed_default(settings: Settings) -> None:
    store = StateStore(settings)
    assert store.version == 0
    assert store.intent.weights == {"xgboost": 0.8, "pytorch": 0.2}
    assert store.last_good is None
    assert not (settings.state_dir / STATE_FILE).exists()


def test_commit_persists_intent_and_bumps_version(settings: Settings) -> None:
    store = StateStore(settings)
    v1 = store.commit(RoutingIntent(weights={"xgboost": 0.5, "pytorch": 0.5}))
    v2 = store.commit(RoutingIntent(weights={"xgboost": 1.0, "pytorch": 0.0}, frozen=True))
    assert (v1, v2) == (1, 2)
    again = StateStore(settings)
    assert again.version == 2
    assert again.intent.weights == {"xgboost": 1.0, "pytorch": 0.0}
    assert again.intent.frozen is True


def test_mark_good_keeps_the_newest_acked_version(settings: Settings) -> None:
    store = StateStore(settings)
    intent = RoutingIntent(weights={"xgboost": 0.6, "pytorch": 0.4})
    v = store.commit(intent)
    store.mark_good(v, intent)
    store.mark_good(v - 1, RoutingIntent())  # an older ACK arriving late changes nothing
    good = read_state(settings).last_good
    assert good is not None and good.version == v
    assert good.intent.weights == {"xgboost": 0.6, "pytorch": 0.4}


def test_no_temp_files_left_behind(settings: Settings) -> None:
    store = StateStore(settings)
    for _ in range(5):
        store.commit(RoutingIntent())
    assert sorted(p.name for p in settings.state_dir.iterdir()) == [STATE_FILE]


def test_a_hand_edited_state_file_is_refused_with_a_fix(settings: Settings) -> None:
    (settings.state_dir / STATE_FILE).write_text("{not json")
    with pytest.raises(StateDirError, match="edited by hand"):
        StateStore(settings)


def test_only_one_writer_per_state_folder(settings: Settings) -> None:
    first = StateStore(settings)
    first.lock()
    try:
        with pytest.raises(StateLockedError, match=f"pid {os.getpid()}"):
            StateStore(settings).lock()
    finally:
        first.unlock()
    second = StateStore(settings)
    second.lock()  # free again once released
    second.unlock()


_WRITER = """
import sys
from control_plane.intent import RoutingIntent
from control_plane.store import StateStore
from data_plane.settings import Settings
store = StateStore(Settings.from_env())
while True:
    v = store.commit(RoutingIntent(weights={"xgboost": 0.5, "pytorch": 0.5}))
    print(v, flush=True)
"""


def test_version_survives_sigkill_mid_write(settings: Settings) -> None:
    """Kill a process that commits in a tight loop; the state stays readable and never goes back."""
    env = {**os.environ, "MESH_HOME": str(settings.home)}
    last_seen = 0
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER], stdout=subprocess.PIPE, env=env)
        assert proc.stdout is not None
        deadline = time.monotonic() + 10
        printed = 0
        while printed < last_seen + 20 and time.monotonic() < deadline:
            printed = int(proc.stdout.readline())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # Versions printed after the kill was decided may also exist; none may be lost.
        for line in proc.stdout.read().split():
            printed = max(printed, int(line))
        proc.stdout.close()
        state = read_state(Settings.from_env())
        assert state.version >= printed > last_seen
        assert state.intent.weights == {"xgboost": 0.5, "pytorch": 0.5}
        last_seen = state.version


def test_last_good_in_memory_is_written_by_the_next_commit_or_persist(settings: Settings) -> None:
    store = StateStore(settings)
    v = store.commit(RoutingIntent(weights={"xgboost": 0.7, "pytorch": 0.3}))
    store.mark_good(v, store.intent, durable=False)
    assert store.last_good is not None and read_state(settings).last_good is None  # memory only
    store.persist()
    on_disk = read_state(settings).last_good
    assert on_disk is not None and on_disk.version == v
    store.mark_good(v + 5, store.intent, durable=False)
    store.commit(store.intent)
    on_disk = read_state(settings).last_good
    assert on_disk is not None and on_disk.version == v + 5
