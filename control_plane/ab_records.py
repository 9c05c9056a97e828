"""A fixed-size ring of prediction rows in numpy columns: the A/B window's memory, allocated once.

The A/B window keeps up to `MESH_AB_MAX_RECORDS` (100,000) primary predictions. As a deque of
tuples each row cost ~330 bytes (a tuple, three float objects, a version and a slot string per
row), so the control plane's RSS climbed by ~33 MB while the window filled: bounded, but it looked
like a leak in the soak for the first minutes at 1,000 rps. Here a row is 29 bytes in preallocated
columns (8 ts + 4 version code + 1 champion + 8 score + 1 fraud + 8 latency), versions are stored
once each, and a full ring overwrites its oldest row: the memory cannot grow after construction.
"""

from __future__ import annotations

import numpy as np

Columns = dict[str, np.ndarray]


class RecordRing:
    """Rows in arrival order; `append` drops the oldest when full, `expire_before` drops old rows."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"MESH_AB_MAX_RECORDS must be >= 1 (got {capacity})")
        self.capacity = capacity
        self.ts = np.zeros(capacity, dtype=np.float64)
        self.version = np.zeros(capacity, dtype=np.int32)
        self.champion = np.zeros(capacity, dtype=bool)
        self.score = np.zeros(capacity, dtype=np.float64)
        self.fraud = np.zeros(capacity, dtype=bool)
        self.latency = np.zeros(capacity, dtype=np.float64)
        # version label <-> code; one entry per model version ever seen (a handful per registry)
        self.codes: dict[str, int] = {}
        self.versions: list[str] = []
        self._head = 0  # index of the oldest row
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def code(self, version: str) -> int:
        found = self.codes.get(version)
        if found is None:
            found = self.codes[version] = len(self.versions)
            self.versions.append(version)
        return found

    def append(self, ts: float, version: str, champion: bool, score: float, fraud: bool,
               latency_ms: float) -> None:
        if self._size == self.capacity:  # full: overwrite the oldest row
            i = self._head
            self._head = (self._head + 1) % self.capacity
        else:
            i = (self._head + self._size) % self.capacity
            self._size += 1
        self.ts[i], self.version[i], self.champion[i] = ts, self.code(version), champion
        self.score[i], self.fraud[i], self.latency[i] = score, fraud, latency_ms

    def _ordered(self, column: np.ndarray) -> np.ndarray:
        """The live rows of a column, oldest first (a copy when the rows wrap around the end)."""
        end = self._head + self._size
        if end <= self.capacity:
            return column[self._head:end]
        return np.concatenate((column[self._head:], column[:end - self.capacity]))

    def expire_before(self, cut: float) -> None:
        """Drop the leading rows older than `cut` (arrival order, like a deque's popleft loop)."""
        if not self._size:
            return
        young = self._ordered(self.ts) >= cut
        drop = int(np.argmax(young)) if young.any() else self._size
        self._head = (self._head + drop) % self.capacity
        self._size -= drop

    def by_version(self, since: float | None = None) -> dict[str, Columns]:
        """version -> {"slot_champion", "score", "fraud", "latency"} arrays of rows at or after `since`."""
        if not self._size:
            return {}
        codes = self._ordered(self.version)
        keep = self._ordered(self.ts) >= since if since is not None else np.ones(self._size, dtype=bool)
        cols = {"slot_champion": self._ordered(self.champion), "score": self._ordered(self.score),
                "fraud": self._ordered(self.fraud), "latency": self._ordered(self.latency)}
        out = {}
        for code in np.unique(codes[keep]):
            mask = keep & (codes == code)
            out[self.versions[int(code)]] = {name: col[mask] for name, col in cols.items()}
        return out

    def copy(self) -> RecordRing:
        """A detached copy (to compute on in a worker thread while the original keeps filling)."""
        twin = RecordRing.__new__(RecordRing)
        twin.__dict__.update(self.__dict__)
        for name in ("ts", "version", "champion", "score", "fraud", "latency"):
            setattr(twin, name, getattr(self, name).copy())
        twin.codes, twin.versions = dict(self.codes), list(self.versions)
        return twin
