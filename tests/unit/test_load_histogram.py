"""The load generator's latency histogram agrees with numpy within 1 % on any data."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_plane.load.histogram import MAX_TRACKABLE_NS, LatencyHistogram

QS = (1.0, 10.0, 50.0, 90.0, 95.0, 99.0, 99.9, 100.0)


def _filled(values: np.ndarray) -> LatencyHistogram:
    h = LatencyHistogram()
    for v in values.tolist():
        h.record(int(v))
    return h


@pytest.mark.parametrize("dist", ["lognormal", "uniform", "bimodal"])
def test_percentiles_match_numpy_within_one_percent(dist: str) -> None:
    rng = np.random.default_rng(7)
    n = 50_000
    if dist == "lognormal":  # typical latency: ~1 ms median, long tail to seconds
        data = rng.lognormal(np.log(1e6), 1.2, n)
    elif dist == "uniform":
        data = rng.uniform(50_000, 300_000_000, n)
    else:  # fast path plus a stalled mode (a 200 ms pause)
        data = np.concatenate([rng.normal(800_000, 80_000, n - 700), rng.normal(2e8, 1e7, 700)])
    data = np.maximum(data, 0).astype(np.int64)
    h = _filled(data)
    for q in QS:
        want = float(np.percentile(data, q, method="inverted_cdf"))
        got = h.percentile(q)
        assert abs(got - want) <= 0.01 * want, (q, got, want)
    assert h.count == n
    assert h.min_ns == data.min() and h.max_ns == data.max()
    assert h.total_ns == int(data.sum())


def test_small_values_are_exact_and_extremes_clamped() -> None:
    h = LatencyHistogram()
    for v in (0, 1, 2, 3, 255):
        h.record(v)
    assert [h.percentile(q) for q in (20, 40, 60, 80, 100)] == [0, 1, 2, 3, 255]
    h.record(-5)  # clock skew can't make a negative latency: counted as 0
    assert h.min_ns == 0
    h.record(MAX_TRACKABLE_NS * 4)
    assert h.max_ns == MAX_TRACKABLE_NS
    assert h.percentile(100) == MAX_TRACKABLE_NS


def test_empty_histogram_reports_zero_and_bad_quantile_is_refused() -> None:
    h = LatencyHistogram()
    assert h.percentile(99) == 0
    assert h.percentiles_ms()["p99.9"] == 0.0
    with pytest.raises(ValueError, match="between 0 and 100"):
        h.percentile(101)


def test_merge_equals_recording_everything_in_one() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.lognormal(13, 1, 3000).astype(np.int64), rng.lognormal(15, 1, 2000).astype(np.int64)
    merged = _filled(a)
    merged.merge(_filled(b))
    whole = _filled(np.concatenate([a, b]))
    assert [merged.percentile(q) for q in QS] == [whole.percentile(q) for q in QS]
    assert (merged.count, merged.min_ns, merged.max_ns) == (whole.count, whole.min_ns, whole.max_ns)


def test_percentiles_ms_keys_and_units() -> None:
    h = _filled(np.array([1_000_000] * 99 + [250_000_000]))
    out = h.percentiles_ms()
    assert set(out) == {"p50", "p95", "p99", "p99.9", "max", "mean"}
    assert out["p50"] == pytest.approx(1.0, rel=0.01)
    assert out["p99.9"] == pytest.approx(250.0, rel=0.01)
    assert out["max"] == 250.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**11), min_size=1, max_size=400),
       st.floats(min_value=0.1, max_value=100.0))
def test_any_data_any_quantile_within_one_percent(values: list[int], q: float) -> None:
    h = LatencyHistogram()
    for v in values:
        h.record(v)
    want = float(np.percentile(np.array(values), q, method="inverted_cdf"))
    assert abs(h.percentile(q) - want) <= 0.01 * want + 0.5
