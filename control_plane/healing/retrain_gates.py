"""Evaluation gates a retrained candidate must pass before it may become the `challenger`.

Pure functions over metric dictionaries (as `training.evaluate.evaluate` returns them), computed for
the candidate and the champion on the same out-of-time holdout: the latest slice of recent,
labelled live traffic, which neither model trained on.

| gate | rule (defaults) | source |
|---|---|---|
| f1_improvement | candidate F1 >= champion F1 * (1 + 2 %), OR champion F1 < 0.70 on the holdout | seed 001 |
| brier | candidate Brier <= champion Brier + 0.01 | seed 001 |
| auc_floor | candidate AUC >= 0.85 | seed 002 |
| f1_floor | candidate F1 >= 0.70 | seed 002 |
| recall_at_1pct_fpr | candidate >= champion - max(0.02, 1/holdout frauds) | fraud caught per alert budget |
| latency | ONNX one-row p99 <= 1 ms | the serving budget |

Why the "OR champion below the floor" clause: after a drift the champion can collapse (F1 0.2), and
any candidate that clears the absolute floors is then worth a canary even when the relative rule is
met trivially; when the champion is still good, only a real improvement justifies the churn.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class GateConfig:
    min_f1_improvement_pct: float = 2.0  # seed 001 MIN_F1_IMPROVEMENT_PCT
    max_brier_degradation: float = 0.01  # seed 001 MAX_BRIER_DEGRADATION
    min_auc: float = 0.85  # seed 002 THRESHOLDS roc_auc
    min_f1: float = 0.70  # seed 002 THRESHOLDS f1
    champion_f1_floor: float = 0.70  # champion below this on the holdout: no improvement needed
    recall_tolerance: float = 0.02
    max_p99_ms: float = 1.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GateConfig:
        """`MESH_GATE_<FIELD>` overrides, e.g. MESH_GATE_MAX_P99_MS=2."""
        env = os.environ if env is None else env
        kw = {}
        for name in cls.__dataclass_fields__:
            raw = env.get(f"MESH_GATE_{name.upper()}")
            if raw:
                kw[name] = float(raw)
        return cls(**kw)


@dataclass(frozen=True)
class Gate:
    name: str
    passed: bool
    value: float
    limit: float
    detail: str


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    gates: list[Gate] = field(default_factory=list)

    @property
    def failed(self) -> list[Gate]:
        return [g for g in self.gates if not g.passed]

    def numbers(self) -> dict[str, float]:
        """Flat numbers for a ledger Decision: `<gate>` value and `<gate>_limit`."""
        out: dict[str, float] = {}
        for g in self.gates:
            out[g.name] = float(g.value)
            out[f"{g.name}_limit"] = float(g.limit)
        return out

    def summary(self) -> str:
        if self.passed:
            return "all gates passed"
        return "; ".join(f"{g.name}: {g.detail}" for g in self.failed)


def f1_improvement_pct(candidate_f1: float, champion_f1: float) -> float:
    """Relative F1 change in percent (a champion at F1 0 counts any positive F1 as +100 %)."""
    if champion_f1 <= 0:
        return 100.0 if candidate_f1 > 0 else 0.0
    return (candidate_f1 - champion_f1) / champion_f1 * 100.0


def judge_candidate(candidate: Mapping[str, float], champion: Mapping[str, float] | None,
                    latency_p99_ms: float, config: GateConfig | None = None) -> GateVerdict:
    """Every gate of the module table; `champion` None (no champion) skips the relative gates."""
    c = config or GateConfig()
    gates: list[Gate] = []
    cf1, cauc, cbrier = candidate["f1"], candidate["auc"], candidate["brier"]
    if champion is not None:
        pct = f1_improvement_pct(cf1, champion["f1"])
        collapsed = champion["f1"] < c.champion_f1_floor
        ok = pct >= c.min_f1_improvement_pct or collapsed
        gates.append(Gate("f1_improvement_pct", ok, pct, c.min_f1_improvement_pct,
                          f"F1 {cf1:.3f} vs champion {champion['f1']:.3f} ({pct:+.1f} %, need "
                          f">= {c.min_f1_improvement_pct:g} % unless the champion is below "
                          f"{c.champion_f1_floor:g})"))
        worse = cbrier - champion["brier"]
        gates.append(Gate("brier_degradation", worse <= c.max_brier_degradation, worse,
                          c.max_brier_degradation,
                          f"Brier {cbrier:.4f} vs champion {champion['brier']:.4f} (+{worse:.4f}, "
                          f"limit +{c.max_brier_degradation:g})"))
        rdrop = champion["recall_at_1pct_fpr"] - candidate["recall_at_1pct_fpr"]
        # One fraud of the holdout is worth 1/positives of recall: with 15 positives a single
        # case moves it by 0.067, so a tolerance below that step would fail on one row of noise.
        positives = float(candidate.get("positives", 0.0))
        rlimit = max(c.recall_tolerance, 1.0 / positives) if positives > 0 else c.recall_tolerance
        gates.append(Gate("recall_at_1pct_fpr_drop", rdrop <= rlimit + 1e-9, rdrop, rlimit,
                          f"recall at 1 % FPR {candidate['recall_at_1pct_fpr']:.3f} vs champion "
                          f"{champion['recall_at_1pct_fpr']:.3f} (allowed drop {rlimit:.3f}: "
                          f"{c.recall_tolerance:g} or one of {positives:.0f} holdout frauds)"))
    gates.append(Gate("auc", cauc >= c.min_auc, cauc, c.min_auc, f"AUC {cauc:.3f} (floor {c.min_auc:g})"))
    gates.append(Gate("f1", cf1 >= c.min_f1, cf1, c.min_f1, f"F1 {cf1:.3f} (floor {c.min_f1:g})"))
    gates.append(Gate("latency_p99_ms", latency_p99_ms <= c.max_p99_ms, latency_p99_ms, c.max_p99_ms,
                      f"one-row ONNX p99 {latency_p99_ms:.3f} ms (budget {c.max_p99_ms:g} ms)"))
    return GateVerdict(all(g.passed for g in gates), gates)
