"""A/B statistics per model version from the live prediction stream: `GET /api/v1/ab-stats` and
label-free proxy gauges on the control plane's `/metrics`.

Input (core NATS, own connection): `mesh.predictions.>` (primary traffic only; shadow answers
never reach a caller) and `mesh.labels` (delayed truth, joined by request_id). Memory is bounded:
predictions in a time window (`MESH_AB_WINDOW_S`, default 900 s) capped at `MESH_AB_MAX_RECORDS`
(default 100,000; the oldest go first; fixed numpy columns, `control_plane.ab_records`, ~29 bytes a
row), request ids awaiting a label capped at the same number (~190 bytes each),
labelled outcomes in `MESH_AB_LABEL_WINDOW_S` (default 3,600 s) capped likewise.

Arms are model versions (`xgboost_v3`, `pytorch_v1`...). The chi-square test compares the two
arms with the most predictions in the window (statistics in `control_plane.ab_stats`). The
score PSI of each arm is measured against the champion arm's scores in the same window (the arm
with most champion-slot traffic), a label-free sign that two versions see the traffic differently.
MESH_AB_STATS=0 turns the component off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
from aiohttp import web
from prometheus_client.core import GaugeMetricFamily

from control_plane import ab_stats
from control_plane.ab_records import RecordRing
from data_plane import envconfig
from data_plane.contracts import subjects
from data_plane.contracts.events import Label, PredictionBatch, PredictionRecord
from data_plane.eventbus import connect_forever

if TYPE_CHECKING:
    from control_plane.app import ControlPlane

log = logging.getLogger(__name__)
_batch = msgspec.json.Decoder(PredictionBatch).decode
_label = msgspec.json.Decoder(Label).decode
PROXY_WINDOWS_S = (60, 300)  # plus the whole window
PREFIX = "MESH_AB_"
MIN_SAMPLES_PER_ARM = 100  # below this the test is reported but flagged as not enough evidence


@dataclass(frozen=True)
class ABConfig:
    window_s: float = 900.0
    label_window_s: float = 3600.0
    max_records: int = 100_000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ABConfig:
        """`MESH_AB_<FIELD>` overrides, e.g. MESH_AB_WINDOW_S=300."""
        return cls(**envconfig.overrides(cls, PREFIX, env))


class ABWindow:
    """The bounded sliding window of predictions and labelled outcomes (no I/O; `now` injectable)."""

    def __init__(self, config: ABConfig | None = None, clock: Callable[[], float] = time.time) -> None:
        self.config = config or ABConfig()
        self.clock = clock
        self.records = RecordRing(self.config.max_records)  # fixed memory, oldest overwritten
        # request_id -> 2 * version code + predicted fraud: a small int, shared by CPython, so an
        # entry costs the id and the dict slot only
        self.awaiting: OrderedDict[str, int] = OrderedDict()
        self.early_labels: OrderedDict[str, bool] = OrderedDict()  # labels that beat their prediction
        self.outcomes: deque[tuple[float, str, bool, bool]] = deque()  # (ts, version, predicted, actual)
        self.records_seen = self.labels_seen = self.labels_joined = 0

    # ---- input ------------------------------------------------------------------------------------
    def add_record(self, rec: PredictionRecord) -> None:
        if rec.shadow:
            return
        cap = self.config.max_records
        self.records_seen += 1
        self.records.append(rec.ts, rec.model_version, rec.slot == "champion", rec.score, rec.is_fraud,
                            rec.latency_ms)
        actual = self.early_labels.pop(rec.request_id, None)
        if actual is not None:
            self._outcome(self.records.versions[self.records.code(rec.model_version)], rec.is_fraud, actual)
            return
        self.awaiting[rec.request_id] = 2 * self.records.code(rec.model_version) + int(rec.is_fraud)
        if len(self.awaiting) > cap:
            self.awaiting.popitem(last=False)

    def add_label(self, lab: Label) -> None:
        self.labels_seen += 1
        hit = self.awaiting.pop(lab.request_id, None)
        if hit is None:
            self.early_labels[lab.request_id] = lab.is_fraud
            if len(self.early_labels) > self.config.max_records // 10:
                self.early_labels.popitem(last=False)
            return
        self._outcome(self.records.versions[hit >> 1], bool(hit & 1), lab.is_fraud)

    def _outcome(self, version: str, predicted: bool, actual: bool) -> None:
        self.labels_joined += 1
        self.outcomes.append((self.clock(), version, predicted, actual))
        if len(self.outcomes) > self.config.max_records:
            self.outcomes.popleft()

    def copy(self) -> ABWindow:
        """A detached copy (cheap: two deque copies) to compute on outside the event loop."""
        twin = ABWindow(self.config, self.clock)
        twin.records, twin.outcomes = self.records.copy(), deque(self.outcomes)
        twin.records_seen, twin.labels_seen = self.records_seen, self.labels_seen
        twin.labels_joined = self.labels_joined
        twin.awaiting = OrderedDict(self.awaiting)
        return twin

    def expire(self) -> None:
        now = self.clock()
        self.records.expire_before(now - self.config.window_s)
        cut = now - self.config.label_window_s
        while self.outcomes and self.outcomes[0][0] < cut:
            self.outcomes.popleft()

    # ---- output -----------------------------------------------------------------------------------
    def _arrays(self, since: float | None = None) -> dict[str, dict[str, np.ndarray]]:
        return self.records.by_version(since)

    def snapshot(self) -> dict[str, Any]:
        """The `/api/v1/ab-stats` answer."""
        self.expire()
        arms = self._arrays()
        champion = max(arms, key=lambda v: (int(arms[v]["slot_champion"].sum()), arms[v]["score"].size),
                       default=None)
        out: dict[str, Any] = {}
        for version, a in sorted(arms.items()):
            n = int(a["score"].size)
            flagged = int(a["fraud"].sum())
            out[version] = {
                "count": n, "flagged": flagged, "fraud_rate": flagged / n,
                "mean_score": float(a["score"].mean()),
                "mean_confidence": float(np.maximum(a["score"], 1 - a["score"]).mean()),
                "latency_ms": ab_stats.percentiles(a["latency"]),
                "score_psi_vs_champion": (ab_stats.score_psi(arms[champion]["score"], a["score"])
                                          if champion else None),
                "labelled": None}
        for version, m in self._labelled().items():
            out.setdefault(version, {"count": 0})["labelled"] = m
        return {"window_s": self.config.window_s, "label_window_s": self.config.label_window_s,
                "champion": champion, "arms": out, "comparison": self._compare(out),
                "records_in_window": len(self.records), "records_seen": self.records_seen,
                "labels_seen": self.labels_seen, "labels_joined": self.labels_joined,
                "awaiting_labels": len(self.awaiting)}

    def _labelled(self) -> dict[str, dict[str, Any]]:
        by: dict[str, tuple[list[bool], list[bool]]] = {}
        for _, version, predicted, actual in self.outcomes:
            p, a = by.setdefault(version, ([], []))
            p.append(predicted)
            a.append(actual)
        return {v: ab_stats.labelled_metrics(*ab_stats.confusion(p, a)) for v, (p, a) in by.items()}

    @staticmethod
    def _compare(arms: dict[str, Any]) -> dict[str, Any] | None:
        ranked = sorted((v for v in arms if arms[v].get("count")), key=lambda v: (-arms[v]["count"], v))
        if len(ranked) < 2:
            return None
        a, b = ranked[:2]
        test = ab_stats.fraud_rate_test(arms[a]["flagged"], arms[a]["count"], arms[b]["flagged"],
                                        arms[b]["count"])
        enough = min(arms[a]["count"], arms[b]["count"]) >= MIN_SAMPLES_PER_ARM
        return {"arms": [a, b], "test": "chi2_contingency (fraud rate)",
                "chi2": test.chi2 if test else None, "p_value": test.p_value if test else None,
                "dof": test.dof if test else None, "min_samples_per_arm": MIN_SAMPLES_PER_ARM,
                "enough_samples": enough,
                "significant_at_0_01": bool(test and enough and test.p_value < 0.01)}

    def proxy_windows(self) -> Iterator[tuple[str, str, dict[str, np.ndarray]]]:
        """(window label, version, arrays) for the last 60 s, 300 s and the whole window."""
        now = self.clock()
        for label, since in [*((f"{w}s", now - w) for w in PROXY_WINDOWS_S), ("window", None)]:
            for version, a in self._arrays(since).items():
                yield label, version, a


class ABCollector:
    """Prometheus collector: computed at scrape time from the window (no stale gauges)."""

    def __init__(self, window: ABWindow) -> None:
        self.window = window

    def describe(self) -> list[Any]:
        return []  # names are known only at scrape time; nothing to check at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        w = self.window
        w.expire()
        labels = ["version", "window"]
        count = GaugeMetricFamily("mesh_ab_predictions", "Primary predictions per version in the window",
                                  labels=labels)
        rate = GaugeMetricFamily("mesh_ab_predicted_fraud_rate", "Share of predictions flagged as fraud",
                                 labels=labels)
        score = GaugeMetricFamily("mesh_ab_score_mean", "Mean fraud probability", labels=labels)
        conf = GaugeMetricFamily("mesh_ab_confidence_mean", "Mean of max(p, 1-p)", labels=labels)
        lat = GaugeMetricFamily("mesh_ab_latency_p99_ms", "p99 of the server's prediction latency (ms)",
                                labels=labels)
        for window, version, a in w.proxy_windows():
            n = a["score"].size
            count.add_metric([version, window], n)
            rate.add_metric([version, window], float(a["fraud"].mean()))
            score.add_metric([version, window], float(a["score"].mean()))
            conf.add_metric([version, window], float(np.maximum(a["score"], 1 - a["score"]).mean()))
            lat.add_metric([version, window], float(np.percentile(a["latency"], 99)))
        yield from (count, rate, score, conf, lat)
        snap = w.snapshot()
        psi = GaugeMetricFamily("mesh_ab_score_psi", "Score-distribution PSI vs the champion arm (window)",
                                labels=["version"])
        for version, arm in snap["arms"].items():
            if arm.get("score_psi_vs_champion") is not None:
                psi.add_metric([version], arm["score_psi_vs_champion"])
        yield psi
        cmp = snap["comparison"]
        if cmp and cmp["p_value"] is not None:
            p = GaugeMetricFamily("mesh_ab_p_value", "Chi-square p-value of the fraud-rate difference of the "
                                  "two largest arms", labels=["arm_a", "arm_b"])
            p.add_metric(cmp["arms"], cmp["p_value"])
            yield p
            smallest = min(snap["arms"][v]["count"] for v in cmp["arms"])
            m = GaugeMetricFamily("mesh_ab_min_arm_samples", "Predictions in the smaller compared arm",
                                  labels=["arm_a", "arm_b"])
            m.add_metric(cmp["arms"], smallest)
            yield m


class ABStatsComponent:
    """NATS subscriptions feeding an `ABWindow`; the route and the gauges read it."""

    name = "ab-stats"

    def __init__(self, cp: ControlPlane, config: ABConfig | None = None) -> None:
        self.cp = cp
        self.window = ABWindow(config or ABConfig.from_env())
        self._nc: Any = None
        self._task: asyncio.Task[None] | None = None
        self._collector = ABCollector(self.window)

    async def start(self) -> None:
        self.cp.metrics.registry.register(self._collector)
        self._task = asyncio.create_task(self._subscribe(), name="ab-stats-nats")

    async def stop(self) -> None:
        with contextlib.suppress(KeyError):
            self.cp.metrics.registry.unregister(self._collector)
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=3)
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.close(), 2)

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/v1/ab-stats", self._get)]

    async def _get(self, request: web.Request) -> web.Response:
        # numpy/scipy on up to max_records rows: tens of ms, off the event loop
        snap = await asyncio.get_running_loop().run_in_executor(None, self.window.copy().snapshot)
        snap["nats_connected"] = bool(self._nc is not None and self._nc.is_connected)
        return web.json_response(snap)

    async def _subscribe(self) -> None:
        self._nc = await connect_forever(self.cp.settings.nats_url, "ab-stats")
        await self._nc.subscribe("mesh.predictions.>", cb=self._on_predictions)
        await self._nc.subscribe(subjects.LABELS, cb=self._on_label)

    async def _on_predictions(self, msg: Any) -> None:
        try:
            batch = _batch(msg.data)
        except msgspec.MsgspecError:
            return
        for rec in batch.records:
            self.window.add_record(rec)

    async def _on_label(self, msg: Any) -> None:
        with contextlib.suppress(msgspec.MsgspecError):
            self.window.add_label(_label(msg.data))


def ab_stats_component(cp: ControlPlane) -> ABStatsComponent | None:
    """Component factory (see control_plane.components); MESH_AB_STATS=0 turns it off."""
    if not envconfig.switch(None, "MESH_AB_STATS"):
        return None
    return ABStatsComponent(cp)
