"""The A/B window's fixed ring of prediction rows: deque semantics, and memory that stops growing."""

from __future__ import annotations

import random
import tracemalloc
from collections import deque

import numpy as np
import pytest

from control_plane.ab_component import ABConfig, ABWindow
from control_plane.ab_records import RecordRing
from data_plane.contracts.events import Label, PredictionRecord


def _row(rng: random.Random, ts: float) -> tuple[float, str, bool, float, bool, float]:
    return (ts, rng.choice(["xgboost_v1", "xgboost_v2", "pytorch_v1"]), rng.random() < 0.8,
            round(rng.random(), 6), rng.random() < 0.1, rng.uniform(0.5, 20))


def test_ring_matches_a_bounded_deque_through_wraps_and_expiry() -> None:
    rng = random.Random(7)
    ring, ref = RecordRing(50), deque[tuple[float, str, bool, float, bool, float]](maxlen=50)
    ts = 0.0
    for step in range(2_000):
        ts += rng.uniform(0, 1)
        row = _row(rng, ts)
        ring.append(*row)
        ref.append(row)
        if step % 97 == 0:  # expire like the old deque loop: pop the front while it is too old
            cut = ts - rng.uniform(0, 40)
            ring.expire_before(cut)
            while ref and ref[0][0] < cut:
                ref.popleft()
        assert len(ring) == len(ref)
        if step % 13 == 0:
            since = ts - 20 if step % 2 else None
            got = ring.by_version(since)
            want: dict[str, list[tuple[float, str, bool, float, bool, float]]] = {}
            for r in ref:
                if since is None or r[0] >= since:
                    want.setdefault(r[1], []).append(r)
            assert set(got) == set(want)
            for version, rows in want.items():
                cols = got[version]
                assert cols["score"].tolist() == [r[3] for r in rows]
                assert cols["slot_champion"].tolist() == [r[2] for r in rows]
                assert cols["fraud"].tolist() == [r[4] for r in rows]
                assert np.allclose(cols["latency"], [r[5] for r in rows])


def test_ring_copy_is_detached_and_capacity_is_checked() -> None:
    ring = RecordRing(3)
    ring.append(1.0, "xgboost_v1", True, 0.5, False, 1.0)
    twin = ring.copy()
    ring.append(2.0, "pytorch_v1", True, 0.9, True, 1.0)
    assert len(twin) == 1 and set(twin.by_version()) == {"xgboost_v1"}
    assert set(ring.by_version()) == {"xgboost_v1", "pytorch_v1"}
    with pytest.raises(ValueError, match="MESH_AB_MAX_RECORDS"):
        RecordRing(0)


def _rid(i: int) -> str:
    return f"{i:08x}-4b1d-4c2a-9f3e-{i:012x}"  # a fresh string per row, as NATS decoding gives


def _record(i: int) -> PredictionRecord:
    return PredictionRecord(request_id=_rid(i), model="xgboost",
                            model_version=f"xgboost_v{1 + i % 2}", slot="champion", features=[],
                            score=(i % 1000) / 1000, is_fraud=i % 9 == 0, latency_ms=1.5,
                            ts=1000.0 + i / 1000)


def test_window_memory_stops_growing_once_full() -> None:
    """The soak's RSS rule rests on this: after one fill of MESH_AB_MAX_RECORDS the window's memory is
    flat, and a row (ring + a request id awaiting its label) costs well under the ~520 bytes a
    deque of tuples plus an awaiting dict of tuples used to."""
    cap = 5_000
    w = ABWindow(ABConfig(max_records=cap, window_s=1e9), clock=lambda: 2000.0)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        i = 0
        for i in range(2 * cap):  # fill, then one full turn (the awaiting dict's one resize)
            w.add_record(_record(i))
        full = tracemalloc.get_traced_memory()[0] - base
        for j in range(i + 1, i + 1 + 5 * cap):  # five more turns
            w.add_record(_record(j))
            if j % 7 == 0:
                w.add_label(Label(request_id=_rid(j - 3), is_fraud=True))
        later = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(w.records) == cap and len(w.awaiting) <= cap and len(w.outcomes) <= cap
    assert full / cap < 260, f"{full / cap:.0f} bytes a row"
    # Outcomes (labels joined in the later turns) add their own bounded deque; nothing else grows.
    assert later - full < 0.5 * full, (full, later)
    assert w.labels_joined > 0 and {o[1] for o in w.outcomes} == {"xgboost_v1", "xgboost_v2"}
