"""The retrain worker's training data: recent logged features joined with delayed labels.

Where the rows come from:
- Features: the `PredictionRecord`s the model servers logged for live (non-shadow) traffic of one
  kind, read back from the JetStream stream PREDICTIONS (`mesh.predictions.<kind>`) for the last
  `lookback_s` seconds. A request scored twice (a retry) counts once (by `request_id`).
- Labels: `Label` events on `mesh.labels` (stream LABELS) over the same period plus the label delay.
- Joined by `request_id`; a prediction without a label yet is not a training row.

The rule when labels are scarce (docs: control_plane/healing/retrain.py): no synthetic rows of
the drifted distribution are ever made up. The worker waits for the delayed label feed instead,
and gives up (ledger entry) when not enough labels arrive in time.

Training set = a random interleave of the recent labelled rows (minus the holdout) and a sample of
the champion's original training data (regenerated from the seed and size the champion's params
record, so nothing needs storing). Holdout = the latest `holdout_fraction` of the recent labelled
rows by time: out of time for both models. When that slice holds fewer than `min_positives`
frauds, the holdout grows backwards in time until it does, up to `max_fraction` of the rows
(`holdout_fraction_for`): the gates' intervals narrow with the frauds they see, and the rows
the drift made are what the champion was not trained for, so the holdout stays recent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from data_plane.contracts import subjects
from data_plane.contracts.events import Label, PredictionBatch
from data_plane.synthetic import Dataset, generate

log = logging.getLogger(__name__)
_batch = msgspec.json.Decoder(PredictionBatch).decode
_label = msgspec.json.Decoder(Label).decode


@dataclass(frozen=True)
class RecentRows:
    """Recent live rows of one kind, time-ordered: features (n, 11), labels, prediction times."""

    features: np.ndarray
    labels: np.ndarray
    timestamps: np.ndarray
    predictions_seen: int

    @property
    def positives(self) -> int:
        return int(self.labels.sum())

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def dataset(self) -> Dataset:
        return Dataset(self.features, self.labels.astype(np.int8), self.timestamps, scenario="recent")


def join_labelled(batches: Iterable[bytes], labels: Iterable[bytes], kind: str,
                  max_rows: int = 100_000) -> RecentRows:
    """Decode prediction batches and labels and join them by request_id (the newest `max_rows`)."""
    by_request: dict[str, tuple[float, list[float]]] = {}
    seen = 0
    for data in batches:
        try:
            batch = _batch(data)
        except msgspec.MsgspecError:
            continue
        for rec in batch.records:
            if rec.shadow or rec.model != kind or not rec.request_id:
                continue
            seen += 1
            by_request.setdefault(rec.request_id, (rec.ts, rec.features))
    truth: dict[str, bool] = {}
    for data in labels:
        with contextlib.suppress(msgspec.MsgspecError):
            lab = _label(data)
            truth[lab.request_id] = lab.is_fraud
    rows = [(ts, feats, truth[rid]) for rid, (ts, feats) in by_request.items() if rid in truth]
    rows.sort(key=lambda r: r[0])
    rows = rows[-max_rows:]
    if not rows:
        return RecentRows(np.empty((0, 11)), np.empty(0, dtype=np.int8), np.empty(0), seen)
    return RecentRows(np.asarray([r[1] for r in rows], dtype=np.float64),
                      np.asarray([r[2] for r in rows], dtype=np.int8),
                      np.asarray([r[0] for r in rows], dtype=np.float64), seen)


def holdout_fraction_for(labels: np.ndarray, base: float, min_positives: int, max_fraction: float) -> float:
    """The share of the latest rows to hold out: `base`, or more until the slice holds
    `min_positives` frauds, never more than `max_fraction` (labels in time order)."""
    y = np.asarray(labels)
    n = int(y.size)
    if n == 0 or min_positives <= 0:
        return base
    from_end = np.cumsum(y[::-1])
    reached = np.flatnonzero(from_end >= min_positives)
    needed = (int(reached[0]) + 1) / n if reached.size else 1.0
    return float(min(max(base, needed), max(base, max_fraction)))


def split_recent(recent: RecentRows, holdout_fraction: float) -> tuple[Dataset, Dataset]:
    """(train part, holdout = the latest `holdout_fraction` by time) of the recent rows."""
    ds = recent.dataset()
    cut = len(ds) - max(1, round(len(ds) * holdout_fraction))
    return ds.slice(0, cut), ds.slice(cut, len(ds))


def reference_sample(champion_params: Mapping[str, str], rows: int, seed: int = 0) -> Dataset:
    """`rows` rows of the champion's own training distribution (regenerated from its params)."""
    total = int(float(champion_params.get("rows", 0) or 0)) or max(rows, 20_000)
    train_seed = int(float(champion_params.get("seed", 0) or 0))
    scenario = champion_params.get("scenario")
    full = generate(total, seed=train_seed, scenario=None if scenario in (None, "", "none") else scenario)
    pick = np.random.default_rng(seed).choice(len(full), size=min(rows, len(full)), replace=False)
    pick.sort()
    return Dataset(full.features[pick], full.labels[pick], full.timestamps[pick], train_seed, "reference")


def training_set(recent_train: Dataset, reference: Dataset, seed: int = 0) -> Dataset:
    """Recent and reference rows interleaved at random, with fresh ascending timestamps.

    Why interleave: `train_one` splits by time (train / validation / holdout). With the reference
    first and the recent rows last, the scarce recent rows would land in its validation and holdout
    only; interleaved, both parts teach the model and pick its threshold. The real, out-of-time
    judgement is the worker's own holdout, which no model has seen.
    """
    x = np.concatenate([reference.features, recent_train.features])
    y = np.concatenate([reference.labels.astype(np.int8), recent_train.labels.astype(np.int8)])
    order = np.random.default_rng(seed).permutation(len(y))
    return Dataset(x[order], y[order], np.arange(len(y), dtype=np.float64), seed, "retrain")


# ---- JetStream reads -----------------------------------------------------------------------------
async def read_stream(nc: Any, stream: str, subject: str, since_ts: float, max_msgs: int = 50_000,
                      fetch_timeout: float = 0.5) -> list[bytes]:
    """Every message of `subject` in `stream` stored since `since_ts` (an ephemeral pull consumer)."""
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    js = nc.jetstream()
    config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME,
                            opt_start_time=dt.datetime.fromtimestamp(since_ts, tz=dt.UTC),
                            ack_policy=AckPolicy.NONE, inactive_threshold=30.0)
    psub = await js.pull_subscribe(subject, stream=stream, config=config)
    out: list[bytes] = []
    try:
        while len(out) < max_msgs:
            try:
                msgs = await psub.fetch(batch=256, timeout=fetch_timeout)
            except (TimeoutError, NatsTimeout):
                break
            out.extend(m.data for m in msgs)
            if msgs and msgs[-1].metadata.num_pending == 0:
                break
    finally:
        with contextlib.suppress(Exception):
            await psub.unsubscribe()
    return out


async def fetch_recent(nc: Any, kind: str, lookback_s: float, now: float,
                       max_rows: int = 100_000) -> RecentRows:
    """Recent predictions of `kind` joined with the labels that arrived for them."""
    since = now - lookback_s
    batches = await read_stream(nc, "PREDICTIONS", subjects.predictions(kind), since)
    labels = await read_stream(nc, "LABELS", subjects.LABELS, since, max_msgs=2_000_000)
    return join_labelled(batches, labels, kind, max_rows)
