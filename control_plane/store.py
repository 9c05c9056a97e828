"""Durable control-plane state: the routing intent, the snapshot version counter, the last good version.

One JSON document under `settings.state_dir`, replaced atomically (temp file, fsync, rename, fsync of
the folder), so a SIGKILL at any instant leaves either the old or the new document, never a torn
one. The version only moves forward: every change is persisted *before* it is pushed to Envoy, so a
restarted control plane never hands out a version number Envoy has already seen.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
from pathlib import Path
from typing import IO

import msgspec

from control_plane.intent import RoutingIntent
from data_plane.contracts.errors import MeshError, StateDirError
from data_plane.settings import Settings

STATE_FILE = "control-plane.json"
LOCK_FILE = "control-plane.lock"
STATE_FORMAT = 1


class LastGood(msgspec.Struct, kw_only=True):
    """The newest version every connected Envoy ACKed, and the intent it was built from."""

    version: int
    intent: RoutingIntent


class ControlPlaneState(msgspec.Struct, kw_only=True):
    format: int = STATE_FORMAT
    intent: RoutingIntent
    version: int = 0
    last_good: LastGood | None = None


class StateLockedError(MeshError):
    """Another control plane already owns this MESH_HOME's state."""


def default_intent(settings: Settings) -> RoutingIntent:
    """The intent a fresh mesh starts from (seed 000: 80/20 xgboost/pytorch)."""
    return RoutingIntent(weights=dict(settings.default_weights))


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so a crash at any point leaves the old or the new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in `folder` durable (the directory entry itself)."""
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


_decode_state = msgspec.json.Decoder(ControlPlaneState)
_encoder = msgspec.json.Encoder()


class StateStore:
    """Reads and writes the control plane's durable state. One writer per MESH_HOME (see `lock`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path = settings.state_dir / STATE_FILE
        self._lock_fh: IO[bytes] | None = None
        self._mutex = threading.Lock()  # commit() may run in a worker thread
        self._dirty = False
        self._state = self._read()

    # ---- reading ------------------------------------------------------------------
    def _read(self) -> ControlPlaneState:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return ControlPlaneState(intent=default_intent(self.settings))
        except OSError as exc:
            raise StateDirError(f"cannot read {self.path}: {exc.strerror or exc}. "
                                "Check the permissions of MESH_HOME.") from exc
        try:
            state = _decode_state.decode(raw)
        except msgspec.DecodeError as exc:
            # Never silently start over: that would reset the version counter and the intent.
            raise StateDirError(
                f"{self.path} is not a valid control-plane state file ({exc}). It is only ever "
                "replaced atomically, so it was edited by hand: restore it, or move it away to start "
                "from the default intent (Envoys must then be restarted too).") from None
        if state.format != STATE_FORMAT:
            raise StateDirError(f"{self.path} has format {state.format}; this control plane reads "
                                f"format {STATE_FORMAT}")
        return state

    @property
    def intent(self) -> RoutingIntent:
        return self._state.intent

    @property
    def version(self) -> int:
        """The newest snapshot version handed out (persisted before it was pushed)."""
        return self._state.version

    @property
    def last_good(self) -> LastGood | None:
        return self._state.last_good

    @property
    def state(self) -> ControlPlaneState:
        return self._state

    # ---- writing ------------------------------------------------------------------
    def _write(self, state: ControlPlaneState) -> None:
        try:
            atomic_write(self.path, _encoder.encode(state))
        except OSError as exc:
            raise StateDirError(f"cannot write {self.path}: {exc.strerror or exc}. Free some space "
                                "or point MESH_HOME at a writable folder.") from exc
        self._state = state
        self._dirty = False

    def commit(self, intent: RoutingIntent) -> int:
        """Persist `intent` under the next version number and return that number.

        Thread-safe (the control plane runs it in a worker thread so fsync never stalls its loop).
        """
        with self._mutex:
            version = self._state.version + 1
            self._write(msgspec.structs.replace(self._state, intent=intent, version=version))
            return version

    def mark_good(self, version: int, intent: RoutingIntent, durable: bool = True) -> None:
        """Record that every connected Envoy ACKed `version` (built from `intent`).

        With durable=False only memory changes now; the next `commit()` or `persist()` writes it
        (the last good version guides a revert after a NACK; it need not cost an fsync per change).
        """
        with self._mutex:
            current = self._state.last_good
            if current is not None and current.version >= version:
                return
            state = msgspec.structs.replace(self._state, last_good=LastGood(version=version, intent=intent))
            if durable:
                self._write(state)
            else:
                self._state, self._dirty = state, True

    def persist(self) -> None:
        """Write what `mark_good(durable=False)` left in memory only."""
        with self._mutex:
            if self._dirty:
                self._write(self._state)

    # ---- single writer ----------------------------------------------------------------
    def lock(self) -> None:
        """Take the exclusive lock on this state folder, or say which process holds it."""
        lock_path = self.settings.state_dir / LOCK_FILE
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(lock_path, "a+b")  # noqa: SIM115 - held for the process's lifetime
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().decode(errors="replace").strip() or "another process"
            fh.close()
            raise StateLockedError(
                f"the control-plane state in {self.settings.state_dir} is in use by pid {holder}; "
                "stop that control plane first (`meshctl down`) or use another MESH_HOME") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()).encode())
        fh.flush()
        self._lock_fh = fh

    def unlock(self) -> None:
        if self._lock_fh is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None


def read_state(settings: Settings) -> ControlPlaneState:
    """The persisted state as it is on disk (for `meshctl status` when the control plane is down)."""
    return StateStore(settings)._state
