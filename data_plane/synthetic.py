"""Seeded synthetic card transactions (seed 000: 11 features, ~2 % fraud) with drift scenarios.

How a row is made (numpy only, vectorised, one ``numpy.random.Generator`` per seed):

- A *genuine* row starts from the cardholder: a 7-day average spend (log-normal), an amount near
  that average, a daily activity profile (few purchases at night), home-area distances, rare
  foreign use, low velocity and a card age of years. A few genuine rows look suspicious for good
  reasons (travellers far from home and abroad, big-ticket purchases, new cards).
- A *fraud* row starts as a genuine row and then shows each fraud signal with its own probability
  (amount spike vs the 7-day average, night hour, foreign, far from home and from the last
  transaction, high velocity, young card, risky merchant category). Fraud showing only one or two
  weak signals overlaps genuine traffic, so the classes are not trivially separable: gradient
  boosting lands at AUC ~0.98, an MLP a little lower.
- ``timestamps`` are arrival times at the scorer (a Poisson process, ascending), so an
  out-of-time holdout is the last slice. ``hour_of_day``/``day_of_week`` are the cardholder's
  local time and do not follow the arrival clock: a short live window stays a fair sample of the
  daily profile and the drift detector does not raise false alarms on the time of day.

Drift scenarios (``SCENARIOS``) change only their intended features; ``SCENARIO_FEATURES`` names
them (tests check PSI >= 0.2 on those and < 0.1 on the rest). A scenario never changes the
seeded base rows it is applied to, so ``generate(n, s, scenario)`` is ``generate(n, s)`` plus the
scenario's edit.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from data_plane.contracts.schema import FEATURE_NAMES, FEATURES

GENERATOR_VERSION = 1
DEFAULT_START_TS = 1_767_225_600.0  # 2026-01-01T00:00:00Z: fixed so fingerprints are stable
DEFAULT_RATE_PER_S = 20.0  # mean arrival rate of the timestamp clock

SCENARIOS: dict[str, str] = {
    "covariate_shift": "amounts x1.9 and distances (home, last transaction) x2.6 for every card; "
                       "fraud signals unchanged",
    "merchant_mix": "genuine spend moves to other merchant categories (popularity order reversed)",
    "new_fraud_pattern": "a card-testing attack: 25 % of traffic is fraud with a new signature "
                         "(daytime, domestic, small amounts $0.5-5, very high velocity)",
}
# The raw features each scenario is meant to move (everything else must stay put).
SCENARIO_FEATURES: dict[str, tuple[str, ...]] = {
    "covariate_shift": ("amount", "distance_from_home", "distance_from_last_txn"),
    "merchant_mix": ("merchant_category",),
    "new_fraud_pattern": ("amount", "velocity_last_1h", "velocity_last_24h"),
}

IDX = {name: i for i, name in enumerate(FEATURE_NAMES)}
_INT_COLS = tuple(i for i, f in enumerate(FEATURES) if f.kind is int)
_LOW = np.array([f.minimum for f in FEATURES])
_HIGH = np.array([f.maximum for f in FEATURES])

# Genuine activity by local hour: quiet at night, busy from late morning to evening.
_HOUR_GENUINE = np.array([1.2, 0.7, 0.4, 0.3, 0.3, 0.5, 1.2, 2.5, 3.8, 4.6, 5.2, 5.8,
                          6.3, 6.0, 5.6, 5.5, 5.8, 6.3, 6.6, 6.2, 5.2, 4.0, 2.8, 1.8])
_HOUR_NIGHT = np.array([6.0, 7.0, 7.0, 6.5, 5.5, 4.0, 2.0, 0.8, 0.5, 0.5, 0.5, 0.5,
                        0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.6, 0.8, 1.2, 2.0, 3.5, 5.0])
_DAY = np.array([0.138, 0.137, 0.139, 0.142, 0.153, 0.151, 0.140])
# Merchant categories 0-9: genuine spend is mostly everyday categories (groceries, fuel, ...);
# fraud prefers resellable goods and card-not-present categories (7-9).
_MERCHANT_GENUINE = np.array([0.20, 0.16, 0.14, 0.12, 0.10, 0.08, 0.07, 0.06, 0.04, 0.03])
_MERCHANT_FRAUD = np.array([0.03, 0.03, 0.04, 0.05, 0.05, 0.07, 0.10, 0.19, 0.23, 0.21])

# Probability that a fraud row shows each signal (independently).
_SIGNAL_P = {"amount": 0.78, "night": 0.62, "foreign": 0.42, "far": 0.62, "velocity": 0.58,
             "young": 0.42, "merchant": 0.68}


@dataclass(frozen=True)
class Dataset:
    """Raw features (n, 11) in FEATURE_NAMES order, labels (1 = fraud), ascending timestamps."""

    features: np.ndarray
    labels: np.ndarray
    timestamps: np.ndarray
    seed: int | None = None
    scenario: str | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def fraud_rate(self) -> float:
        return float(self.labels.mean()) if len(self) else 0.0

    def slice(self, a: int | None, b: int | None) -> Dataset:
        """Rows a:b (a view; timestamps stay ascending)."""
        return Dataset(self.features[a:b], self.labels[a:b], self.timestamps[a:b],
                       self.seed, self.scenario)

    def fingerprint(self) -> str:
        """sha256 over shape and content (little-endian), stable across runs and machines."""
        h = hashlib.sha256()
        h.update(f"fraud-mesh-dataset/v1 {self.features.shape}".encode())
        h.update(np.ascontiguousarray(self.features, dtype="<f8").tobytes())
        h.update(np.ascontiguousarray(self.labels, dtype="i1").tobytes())
        h.update(np.ascontiguousarray(self.timestamps, dtype="<f8").tobytes())
        return h.hexdigest()

    def request_bodies(self) -> list[dict[str, Any]]:
        """The rows as `POST /api/v1/predict` bodies (ints as ints)."""
        return [to_request(row) for row in self.features]

    def to_frame(self) -> Any:
        """A pandas DataFrame (features, `is_fraud`, `timestamp`). pandas is imported here only."""
        import pandas as pd

        frame = pd.DataFrame(self.features, columns=list(FEATURE_NAMES))
        for i in _INT_COLS:
            frame[FEATURE_NAMES[i]] = frame[FEATURE_NAMES[i]].astype("int64")
        frame["is_fraud"] = self.labels.astype("int8")
        frame["timestamp"] = self.timestamps
        return frame


def to_request(row: Sequence[float]) -> dict[str, Any]:
    """One raw feature row as a request body dict; integer features become Python ints."""
    body: dict[str, Any] = {}
    for i, spec in enumerate(FEATURES):
        v = row[i]
        body[spec.name] = int(v) if spec.kind is int else float(v)
    return body


def generate(rows: int, seed: int = 0, scenario: str | None = None,
             start_ts: float = DEFAULT_START_TS, fraud_rate: float = 0.02,
             rate_per_s: float = DEFAULT_RATE_PER_S) -> Dataset:
    """`rows` transactions for `seed` (same arguments -> same bytes), optionally with a drift scenario."""
    if rows < 0:
        raise ValueError(f"rows must be >= 0 (got {rows})")
    if not 0.0 <= fraud_rate < 1.0:
        raise ValueError(f"fraud_rate must be in [0, 1) (got {fraud_rate})")
    if scenario is not None and scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    base_seq, scen_seq, clock_seq = np.random.SeedSequence([GENERATOR_VERSION, seed]).spawn(3)
    rng = np.random.default_rng(base_seq)
    labels = (rng.random(rows) < fraud_rate).astype(np.int8)
    x = _genuine(rng, rows)
    _apply_fraud(rng, x, labels.astype(bool))
    if scenario is not None:
        _SCENARIO_FNS[scenario](np.random.default_rng(scen_seq), x, labels)
    x = _finish(x)
    clock = np.random.default_rng(clock_seq)
    timestamps = start_ts + np.cumsum(clock.exponential(1.0 / rate_per_s, rows))
    return Dataset(x, labels, timestamps, seed, scenario)


# ---- genuine traffic -------------------------------------------------------------------------------
def _genuine(rng: np.random.Generator, n: int) -> np.ndarray:
    x = np.empty((n, len(FEATURES)))
    avg7 = np.exp(rng.normal(np.log(55.0), 0.75, n))
    amount = avg7 * np.exp(rng.normal(0.0, 0.5, n))
    big_ticket = rng.random(n) < 0.03  # a new laptop, a flight: big but genuine
    amount[big_ticket] *= np.exp(rng.uniform(0.8, 2.2, big_ticket.sum()))
    x[:, IDX["amount"]] = amount
    x[:, IDX["avg_amount_last_7d"]] = avg7
    x[:, IDX["merchant_category"]] = rng.choice(10, n, p=_MERCHANT_GENUINE)
    x[:, IDX["hour_of_day"]] = rng.choice(24, n, p=_HOUR_GENUINE / _HOUR_GENUINE.sum())
    x[:, IDX["day_of_week"]] = rng.choice(7, n, p=_DAY / _DAY.sum())
    travelling = rng.random(n) < 0.04
    home = np.exp(rng.normal(np.log(6.0), 1.0, n))
    home[travelling] = np.exp(rng.normal(np.log(250.0), 1.1, travelling.sum()))
    x[:, IDX["distance_from_home"]] = home
    last = np.exp(rng.normal(np.log(3.0), 1.1, n))
    last[travelling] *= np.exp(rng.normal(1.0, 1.0, travelling.sum()))
    x[:, IDX["distance_from_last_txn"]] = last
    foreign = rng.random(n) < 0.02
    foreign[travelling] = rng.random(travelling.sum()) < 0.45
    x[:, IDX["is_foreign"]] = foreign
    v1 = rng.poisson(0.35, n)
    x[:, IDX["velocity_last_1h"]] = v1
    x[:, IDX["velocity_last_24h"]] = v1 + rng.poisson(3.5, n)
    age = np.exp(rng.normal(np.log(900.0), 0.9, n))
    new_card = rng.random(n) < 0.04
    age[new_card] = rng.uniform(0, 60, new_card.sum())
    x[:, IDX["card_age_days"]] = age
    return x


# ---- fraud signals ---------------------------------------------------------------------------------
def _apply_fraud(rng: np.random.Generator, x: np.ndarray, fraud: np.ndarray) -> None:
    """Overwrite fraud rows' features with signals, each shown with its own probability."""
    rows = np.flatnonzero(fraud)
    k = rows.size
    if k == 0:
        return
    show = {name: rng.random(k) < p for name, p in _SIGNAL_P.items()}

    r = rows[show["amount"]]
    x[r, IDX["amount"]] = x[r, IDX["avg_amount_last_7d"]] * np.exp(rng.normal(1.4, 0.7, r.size))
    r = rows[show["night"]]
    x[r, IDX["hour_of_day"]] = rng.choice(24, r.size, p=_HOUR_NIGHT / _HOUR_NIGHT.sum())
    r = rows[show["foreign"]]
    x[r, IDX["is_foreign"]] = 1
    r = rows[show["far"]]
    x[r, IDX["distance_from_home"]] = np.exp(rng.normal(np.log(180.0), 1.2, r.size))
    x[r, IDX["distance_from_last_txn"]] = np.exp(rng.normal(np.log(120.0), 1.2, r.size))
    r = rows[show["velocity"]]
    v1 = 2 + rng.poisson(3.0, r.size)
    x[r, IDX["velocity_last_1h"]] = v1
    x[r, IDX["velocity_last_24h"]] = v1 + rng.poisson(7.0, r.size)
    r = rows[show["young"]]
    x[r, IDX["card_age_days"]] = rng.uniform(0, 45, r.size)
    r = rows[show["merchant"]]
    x[r, IDX["merchant_category"]] = rng.choice(10, r.size, p=_MERCHANT_FRAUD)


# ---- drift scenarios -------------------------------------------------------------------------------
def _covariate_shift(rng: np.random.Generator, x: np.ndarray, labels: np.ndarray) -> None:
    x[:, IDX["amount"]] *= 1.9
    x[:, IDX["distance_from_home"]] *= 2.6
    x[:, IDX["distance_from_last_txn"]] *= 2.6


def _merchant_mix(rng: np.random.Generator, x: np.ndarray, labels: np.ndarray) -> None:
    genuine = np.flatnonzero(labels == 0)
    x[genuine, IDX["merchant_category"]] = rng.choice(10, genuine.size, p=_MERCHANT_GENUINE[::-1])


CARD_TESTING_SHARE = 0.25


def _new_fraud_pattern(rng: np.random.Generator, x: np.ndarray, labels: np.ndarray) -> None:
    # Card testing: many tiny purchases in a burst on stolen numbers. The rows keep a genuine
    # cardholder's other features (daytime, domestic, near home), which the old model trusts.
    genuine = np.flatnonzero(labels == 0)
    attack = genuine[rng.random(genuine.size) < CARD_TESTING_SHARE / (1.0 - labels.mean())]
    x[attack, IDX["amount"]] = rng.uniform(0.5, 5.0, attack.size)
    v1 = 8 + rng.poisson(12.0, attack.size)
    x[attack, IDX["velocity_last_1h"]] = v1
    x[attack, IDX["velocity_last_24h"]] = v1 + rng.poisson(20.0, attack.size)
    labels[attack] = 1


_SCENARIO_FNS = {"covariate_shift": _covariate_shift, "merchant_mix": _merchant_mix,
                 "new_fraud_pattern": _new_fraud_pattern}


def _finish(x: np.ndarray) -> np.ndarray:
    """Round to the schema's types (cents, 0.1 km, whole counts) and clip into its ranges."""
    for name in ("amount", "avg_amount_last_7d"):
        x[:, IDX[name]] = np.round(np.maximum(x[:, IDX[name]], 0.5), 2)
    for name in ("distance_from_home", "distance_from_last_txn"):
        x[:, IDX[name]] = np.round(x[:, IDX[name]], 1)
    cols = list(_INT_COLS)
    x[:, cols] = np.floor(x[:, cols])
    return np.clip(x, _LOW, _HIGH)


# ---- live stream and delayed labels ------------------------------------------------------------------
def iter_labelled(seed: int = 0, scenario: str | None = None, chunk: int = 4096,
                  fraud_rate: float = 0.02, cards: int = 0) -> Iterator[tuple[dict[str, Any], int]]:
    """Endless (request body, true label) pairs. With `cards` > 0 each body also carries a
    `card_id` drawn from a pool of that many ids (the sticky A/B routing key)."""
    if chunk < 1 or cards < 0:
        raise ValueError("chunk must be >= 1 and cards >= 0")
    card_rng = np.random.default_rng([GENERATOR_VERSION, seed, 7])
    for block in itertools.count():
        ds = generate(chunk, seed=_chunk_seed(seed, block), scenario=scenario, fraud_rate=fraud_rate)
        card_ids = card_rng.integers(0, cards, chunk).tolist() if cards else [None] * chunk
        for row, label, card in zip(ds.features.tolist(), ds.labels.tolist(), card_ids, strict=True):
            body = to_request(row)
            if card is not None:
                body["card_id"] = f"card-{card:06d}"
            yield body, int(label)


def iter_transactions(seed: int = 0, scenario: str | None = None, **kw: Any) -> Iterator[dict[str, Any]]:
    """Endless request bodies for the load generator (see `iter_labelled` for the labels)."""
    for body, _ in iter_labelled(seed, scenario, **kw):
        yield body


def _chunk_seed(seed: int, block: int) -> int:
    # Distinct from any small training seed, so live traffic is never the training set.
    return 1_000_003 * (seed + 1) + block


class DueLabel(NamedTuple):
    """A label whose delay has passed: the request it belongs to and the truth."""

    request_id: str
    is_fraud: bool
    produced_at: float
    features: tuple[float, ...] | None = None


class LabelFeed:
    """Holds (request_id, true label) pairs and releases each after a delay, like chargebacks.

    Delay per label = `delay_s` + uniform(0, `jitter_s`) (seeded). Bounded: beyond `max_pending`
    the label due soonest is dropped and counted in `dropped`. Thread-safe.
    """

    def __init__(self, delay_s: float = 30.0, jitter_s: float = 0.0, seed: int = 0,
                 max_pending: int = 1_000_000) -> None:
        if delay_s < 0 or jitter_s < 0:
            raise ValueError("delay_s and jitter_s must be >= 0")
        self.delay_s = delay_s
        self.jitter_s = jitter_s
        self.max_pending = max_pending
        self.dropped = 0
        self._rng = np.random.default_rng(seed)
        self._heap: list[tuple[float, int, DueLabel]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def add(self, request_id: str, is_fraud: bool | int, now: float,
            features: Sequence[float] | None = None) -> float:
        """Record a label produced at `now`; returns the time it becomes due."""
        delay = self.delay_s + (float(self._rng.uniform(0, self.jitter_s)) if self.jitter_s else 0.0)
        item = DueLabel(request_id, bool(is_fraud), now, tuple(features) if features is not None else None)
        with self._lock:
            if len(self._heap) >= self.max_pending:
                heapq.heappop(self._heap)  # bounded memory beats completeness here
                self.dropped += 1
            heapq.heappush(self._heap, (now + delay, next(self._seq), item))
        return now + delay

    def due(self, now: float) -> list[DueLabel]:
        """Labels whose release time is <= `now`, in release order (each released once)."""
        out: list[DueLabel] = []
        with self._lock:
            while self._heap and self._heap[0][0] <= now:
                out.append(heapq.heappop(self._heap)[2])
        return out

    def __len__(self) -> int:
        return len(self._heap)
