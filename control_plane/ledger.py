"""The decision ledger: every change the mesh made, why, on which evidence, and what Envoy made of it.

Append-only JSON lines under `settings.state_dir`:
- `ledger.jsonl`: one `Decision` per line, `seq` 1, 2, 3, ... without gaps.
- `ledger-acks.jsonl`: follow-up ACK states (`AckUpdate`) for decisions whose ACKs arrived later.

Each append is fsynced before it returns. A SIGKILL mid-write can leave at most a torn last line;
opening the ledger detects it (no newline or undecodable) and cuts it off, so sequence numbers
continue from the last complete entry: no gaps, no duplicates.
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
import time
from pathlib import Path

import msgspec

from data_plane.contracts import subjects
from data_plane.contracts.errors import StateDirError
from data_plane.contracts.events import Decision
from data_plane.eventbus import EventBus

log = logging.getLogger(__name__)

LEDGER_FILE = "ledger.jsonl"
ACKS_FILE = "ledger-acks.jsonl"
MAX_READ = 1000


class AckUpdate(msgspec.Struct, kw_only=True):
    """A later ACK state for the decision `seq` (the decision line itself is never rewritten)."""

    seq: int
    acked: bool | None
    nodes: dict[str, str]
    ts: float = msgspec.field(default_factory=time.time)


_enc = msgspec.json.Encoder()


class _JsonlFile:
    """An append-only JSON-lines file that repairs a torn tail when opened."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, decoder: msgspec.json.Decoder) -> list:  # type: ignore[type-arg]
        """Decode every complete line; cut off a torn last line so the next append starts clean."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        items = []
        good_end = 0
        pos = 0
        while pos < len(raw):
            nl = raw.find(b"\n", pos)
            if nl < 0:
                break  # no newline: the writer died mid-line
            line = raw[pos:nl]
            try:
                items.append(decoder.decode(line))
            except msgspec.DecodeError:
                if raw.find(b"\n", nl + 1) < 0 and not raw[nl + 1:].strip():
                    break  # undecodable last line: torn (e.g. zero-filled by the filesystem)
                log.warning("%s: skipping an undecodable line at byte %d", self.path, pos)
            good_end = nl + 1
            pos = nl + 1
        if good_end < len(raw):
            log.warning("%s: cutting off a torn last entry (%d bytes) left by a crash",
                        self.path, len(raw) - good_end)
            with open(self.path, "r+b") as fh:
                fh.truncate(good_end)
                os.fsync(fh.fileno())
        return items

    def append(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)


class Ledger:
    """Append-only decision log, mirrored to NATS `mesh.decisions` when a bus is given."""

    def __init__(self, state_dir: Path, bus: EventBus | None = None) -> None:
        """No I/O here: the files are read (and a torn tail repaired) by `open()` or first use,
        so a control plane can take its state lock before it touches the ledger."""
        self.state_dir = state_dir
        self.bus = bus
        self._lock = threading.RLock()  # open() may run inside append()'s critical section
        self._decisions_file = _JsonlFile(state_dir / LEDGER_FILE)
        self._acks_file = _JsonlFile(state_dir / ACKS_FILE)
        self._by_seq: dict[int, Decision] = {}
        self._order: list[int] = []
        self._opened = False

    def open(self) -> Ledger:
        """Load every complete entry, cutting off a torn last line; idempotent."""
        with self._lock:
            if self._opened:
                return self
            try:
                self.state_dir.mkdir(parents=True, exist_ok=True)
                decisions: list[Decision] = self._decisions_file.load(msgspec.json.Decoder(Decision))
                acks: list[AckUpdate] = self._acks_file.load(msgspec.json.Decoder(AckUpdate))
            except OSError as exc:
                raise StateDirError(f"cannot open the decision ledger in {self.state_dir}: "
                                    f"{exc.strerror or exc}") from exc
            for d in decisions:
                if self._order and d.seq <= self._order[-1]:
                    log.warning("ledger: ignoring out-of-order seq %d", d.seq)
                    continue
                self._by_seq[d.seq] = d
                self._order.append(d.seq)
            for a in acks:
                if a.seq in self._by_seq:
                    self._by_seq[a.seq] = _with_ack(self._by_seq[a.seq], a)
            self._opened = True
        return self

    @property
    def last_seq(self) -> int:
        self.open()
        return self._order[-1] if self._order else 0

    def __len__(self) -> int:
        self.open()
        return len(self._order)

    def append(self, decision: Decision) -> Decision:
        """Give `decision` the next seq, fsync it to the ledger, publish it; return the stored copy."""
        self.open()
        with self._lock:
            stored = msgspec.structs.replace(decision, seq=self.last_seq + 1)
            self._write(self._decisions_file, _enc.encode(stored))
            self._by_seq[stored.seq] = stored
            self._order.append(stored.seq)
        self._publish(stored)
        return stored

    def update_ack(self, seq: int, acked: bool | None, nodes: dict[str, str]) -> Decision:
        """Record a later ACK state for decision `seq` (a follow-up entry; the line stays as written)."""
        self.open()
        with self._lock:
            if seq not in self._by_seq:
                raise KeyError(seq)
            update = AckUpdate(seq=seq, acked=acked, nodes=dict(nodes))
            self._write(self._acks_file, _enc.encode(update))
            merged = _with_ack(self._by_seq[seq], update)
            self._by_seq[seq] = merged
        # Consumers upsert by seq: the same decision again, with its new ACK state.
        self._publish(merged)
        return merged

    def get(self, seq: int) -> Decision | None:
        self.open()
        return self._by_seq.get(seq)

    def read(self, since_seq: int = 0, limit: int = 100) -> list[Decision]:
        """Decisions with seq > since_seq, oldest first, at most `limit` (capped at 1000)."""
        self.open()
        limit = max(0, min(limit, MAX_READ))
        start = bisect.bisect_right(self._order, since_seq)
        return [self._by_seq[s] for s in self._order[start:start + limit]]

    def tail(self, n: int = 20) -> list[Decision]:
        """The newest `n` decisions, oldest first."""
        self.open()
        return [self._by_seq[s] for s in self._order[-n:]] if n > 0 else []

    def _write(self, jf: _JsonlFile, data: bytes) -> None:
        try:
            jf.append(data)
        except OSError as exc:
            raise StateDirError(f"cannot append to {jf.path}: {exc.strerror or exc}. "
                                "Free some space on the MESH_HOME disk.") from exc

    def _publish(self, decision: Decision) -> None:
        if self.bus is not None:
            self.bus.publish(subjects.DECISIONS, decision)


def _with_ack(decision: Decision, update: AckUpdate) -> Decision:
    return msgspec.structs.replace(decision, acked=update.acked, nodes=dict(update.nodes))
