"""Evaluation gates a retrained candidate must pass before it may become the `challenger`.

Both models are scored on the same out-of-time holdout (the latest slice of recent, labelled live
traffic, which neither trained on) and compared *paired* with a stratified bootstrap
(`paired_stats.compare_on_holdout`, fixed seed): every relative gate looks at the interval of
candidate - champion, and fails only when the interval excludes the allowed loss, i.e. when the
holdout is evidence that the candidate is worse. At ~2 % fraud a live holdout of a few minutes
holds 10-20 frauds; one fraud moves recall by 1/positives and F1 by about as much, so comparing
point estimates there (the old rules) passed and failed the same candidate run to run.

| gate | fails when (defaults) | source |
|---|---|---|
| f1_not_worse | upper bound of F1 difference < -0.02 | non-inferiority |
| f1_improvement_pct | point F1 gain < 2 % (judged with >= 50 frauds, champion F1 >= 0.70) | seed 001 |
| brier_degradation | lower bound of the Brier increase > 0.01 | seed 001 |
| recall_at_1pct_fpr_drop | lower bound of the recall drop > 0.02 | fraud caught per alert budget |
| auc | AUC < 0.85 (with < 50 frauds: the upper bound < 0.85) | seed 002 |
| f1 | F1 < 0.70 (with < 50 frauds: the upper bound < 0.70) | seed 002 |
| latency_p99_ms | ONNX one-row p99 > 1 ms | the serving budget |

Why the improvement rule waits for 50 frauds: a 2 % relative gain is ~0.015 F1, far inside the
noise of 10-20 frauds (interval half-width 0.10-0.15), so below that count it would be a coin
flip; the candidate must then be "not significantly worse" and clear the absolute floors, and the
canary (shadow on the same requests, then steps) is the next, larger sample. Why it is waived for
a champion below F1 0.70: after a drift the champion can collapse (F1 0.2), and any candidate
above the floors is then worth a canary. The floors use the interval's upper bound with few frauds
for the same reason: fail on evidence, not on one row. Every gate's numbers carry the point
estimate, the interval, n and the positives, so the ledger explains its verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from control_plane.healing.paired_stats import Estimate, HoldoutComparison
from data_plane import envconfig

PREFIX = "MESH_GATE_"


@dataclass(frozen=True)
class GateConfig:
    min_f1_improvement_pct: float = 2.0  # seed 001 MIN_F1_IMPROVEMENT_PCT
    max_brier_degradation: float = 0.01  # seed 001 MAX_BRIER_DEGRADATION
    min_auc: float = 0.85  # seed 002 THRESHOLDS roc_auc
    min_f1: float = 0.70  # seed 002 THRESHOLDS f1
    champion_f1_floor: float = 0.70  # champion below this on the holdout: no improvement needed
    f1_margin: float = 0.02  # F1 loss tolerated before "worse" (non-inferiority margin)
    recall_tolerance: float = 0.02
    max_p99_ms: float = 1.0
    min_positives_for_point: int = 50  # holdout frauds needed to judge point estimates
    confidence: float = 0.95  # two-sided bootstrap interval
    bootstrap_rounds: int = 2000
    bootstrap_seed: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GateConfig:
        """`MESH_GATE_<FIELD>` overrides, e.g. MESH_GATE_MAX_P99_MS=2."""
        return cls(**envconfig.overrides(cls, PREFIX, env))


@dataclass(frozen=True)
class Gate:
    name: str
    passed: bool
    value: float  # the point estimate the rule reads (or reports, when judged on `interval`)
    limit: float
    detail: str
    interval: Estimate | None = None  # bootstrap interval of `value`


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    gates: list[Gate] = field(default_factory=list)
    n: int = 0  # holdout rows
    positives: int = 0  # holdout frauds
    confidence: float = 0.0

    @property
    def failed(self) -> list[Gate]:
        return [g for g in self.gates if not g.passed]

    def numbers(self) -> dict[str, float]:
        """Flat numbers for a ledger Decision: `<gate>`, `<gate>_limit`, `<gate>_ci_lo/_hi`, n, frauds."""
        out: dict[str, float] = {"holdout_n": float(self.n), "holdout_positives": float(self.positives),
                                 "gate_confidence": float(self.confidence)}
        for g in self.gates:
            out[g.name] = float(g.value)
            out[f"{g.name}_limit"] = float(g.limit)
            if g.interval is not None:
                out[f"{g.name}_ci_lo"], out[f"{g.name}_ci_hi"] = g.interval.lo, g.interval.hi
        return out

    def summary(self) -> str:
        where = f"on {self.n} holdout rows, {self.positives} frauds, {self.confidence:.0%} intervals"
        if self.passed:
            key = next((g for g in self.gates if g.name == "f1_not_worse"), None)
            lead = f"F1 difference {key.interval.render(True)} " if key and key.interval else ""
            return f"all gates passed ({lead}{where})"
        return "; ".join(f"{g.name}: {g.detail}" for g in self.failed) + f" ({where})"


def f1_improvement_pct(candidate_f1: float, champion_f1: float) -> float:
    """Relative F1 change in percent (a champion at F1 0 counts any positive F1 as +100 %)."""
    if champion_f1 <= 0:
        return 100.0 if candidate_f1 > 0 else 0.0
    return (candidate_f1 - champion_f1) / champion_f1 * 100.0


def _floor(name: str, label: str, est: Estimate, floor: float, few: bool) -> Gate:
    """An absolute floor: the point estimate, or with few frauds the interval's upper bound."""
    if few:
        return Gate(name, est.hi >= floor, est.point, floor,
                    f"{label} {est.render()}: upper bound below the floor {floor:g}", est)
    return Gate(name, est.point >= floor, est.point, floor,
                f"{label} {est.render()} below the floor {floor:g}", est)


def judge_candidate(comparison: HoldoutComparison, latency_p99_ms: float,
                    config: GateConfig | None = None) -> GateVerdict:
    """Every gate of the module table; a comparison without a champion skips the relative gates."""
    c = config or GateConfig()
    few = comparison.positives < c.min_positives_for_point
    cand, champ, diff = comparison.candidate, comparison.champion, comparison.difference
    gates: list[Gate] = []
    if champ:
        d = diff["f1"]
        gates.append(Gate("f1_not_worse", d.hi >= -c.f1_margin, d.point, -c.f1_margin,
                          f"F1 {cand['f1'].point:.3f} vs champion {champ['f1'].point:.3f}: difference "
                          f"{d.render(True)} entirely below -{c.f1_margin:g} (significantly worse)", d))
        pct = f1_improvement_pct(cand["f1"].point, champ["f1"].point)
        if champ["f1"].point < c.champion_f1_floor:
            ok, why = True, f"waived: champion F1 {champ['f1'].point:.3f} < {c.champion_f1_floor:g}"
        elif few:
            ok, why = True, (f"not judged: {comparison.positives} holdout frauds < "
                             f"{c.min_positives_for_point} (non-inferiority decides)")
        else:
            ok, why = pct >= c.min_f1_improvement_pct, f"need >= {c.min_f1_improvement_pct:g} %"
        gates.append(Gate("f1_improvement_pct", ok, pct, c.min_f1_improvement_pct,
                          f"F1 {cand['f1'].point:.3f} vs champion {champ['f1'].point:.3f} "
                          f"({pct:+.1f} %; {why})"))
        b = diff["brier"]
        gates.append(Gate("brier_degradation", b.lo <= c.max_brier_degradation, b.point,
                          c.max_brier_degradation,
                          f"Brier {cand['brier'].point:.4f} vs champion {champ['brier'].point:.4f}: increase "
                          f"{b.render(True, 4)} entirely above +{c.max_brier_degradation:g}", b))
        r = diff["recall_at_1pct_fpr"].negated()
        gates.append(Gate("recall_at_1pct_fpr_drop", r.lo <= c.recall_tolerance, r.point, c.recall_tolerance,
                          f"recall at 1 % FPR {cand['recall_at_1pct_fpr'].point:.3f} vs champion "
                          f"{champ['recall_at_1pct_fpr'].point:.3f}: drop {r.render(True)} entirely above "
                          f"{c.recall_tolerance:g}", r))
    gates.append(_floor("auc", "AUC", cand["auc"], c.min_auc, few))
    gates.append(_floor("f1", "F1", cand["f1"], c.min_f1, few))
    gates.append(Gate("latency_p99_ms", latency_p99_ms <= c.max_p99_ms, latency_p99_ms, c.max_p99_ms,
                      f"one-row ONNX p99 {latency_p99_ms:.3f} ms (budget {c.max_p99_ms:g} ms)"))
    return GateVerdict(all(g.passed for g in gates), gates, comparison.n, comparison.positives,
                       comparison.confidence)
