"""Canary analysis: evidence of one phase (shadow or a canary step) -> verdict pass / fail / wait.

Pure: no I/O, no clock (the caller passes `elapsed_s`), so every rule is unit-testable.

Evidence per phase: prediction records of both arms keyed by request id (shadow: the champion's
primary record and the challenger's mirrored record of the *same* request; canary: the requests
each arm answered), the delayed labels that arrived for them, and the challenger cluster's
attempts/errors from the edge Envoy.

Rules, in order (the first failing one decides):
1. errors: challenger error rate > 10 % (seed rollback rule), once >= `min_error_attempts` attempts.
2. p95 latency of the challenger > 500 ms (seed rollback rule).
3. latency distribution: Mann-Whitney U (challenger slower, one-sided) with p < `mw_alpha` AND a
   median gap > `min_latency_gap_ms` (Kayenta: significance alone flags sub-millisecond noise).
4. quality: with >= 200 labelled challenger rows (MIN_SAMPLES_FOR_DECISION; in shadow: requests
   both arms scored) and >= `min_label_positives` frauds, a bootstrap interval of challenger F1 -
   champion F1 (each version flagging at its own threshold; `paired_stats.f1_difference`: paired
   in shadow, where both score the same requests, independent arms in the steps). Fail only when
   the whole interval lies below -`f1_tolerance` (the challenger is significantly worse), else
   pass: at 5-20 frauds a point-estimate rule rolled good challengers back on noise.
   Without enough labels, label-free proxies: shadow agreement (same is_fraud on the same request)
   >= `min_agreement`; canary: predicted fraud rate and mean score within `max_rate_shift` /
   `max_score_shift` of the champion's. After a drift the champion is the model that is wrong, so
   labels, when present, overrule the proxies (agreement is reported, not gated, then).
Pass needs every rule satisfied, >= `min_samples` challenger records and `min_duration_s` elapsed;
no verdict by `timeout_s` is a fail ("not enough evidence").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from control_plane.healing.paired_stats import F1Difference, f1_difference


@dataclass(frozen=True)
class PhaseRules:
    min_samples: int
    min_duration_s: float
    timeout_s: float
    label_wait_s: float = 0.0  # shadow: wait this long for labels before falling back to proxies


@dataclass(frozen=True)
class CanaryConfig:
    shadow_fraction: float = 0.5
    shadow: PhaseRules = PhaseRules(min_samples=200, min_duration_s=5.0, timeout_s=180.0, label_wait_s=30.0)
    step: PhaseRules = PhaseRules(min_samples=30, min_duration_s=12.0, timeout_s=120.0)
    steps: tuple[float, ...] = (0.10, 0.25, 0.50, 1.00)
    max_error_rate: float = 0.10
    min_error_attempts: int = 20
    max_p95_ms: float = 500.0
    mw_alpha: float = 0.01
    min_latency_gap_ms: float = 5.0
    min_label_samples: int = 200  # seed MIN_SAMPLES_FOR_DECISION
    min_label_positives: int = 5
    f1_tolerance: float = 0.05  # F1 loss tolerated before "significantly worse" (interval margin)
    label_confidence: float = 0.95  # two-sided bootstrap interval of the F1 difference
    bootstrap_rounds: int = 4000
    bootstrap_seed: int = 0
    min_agreement: float = 0.80
    max_rate_shift: float = 0.25
    max_score_shift: float = 0.25
    tick_s: float = 1.0


@dataclass(frozen=True)
class Observation:
    score: float
    is_fraud: bool
    latency_ms: float


@dataclass
class Evidence:
    """What one phase saw. Keys are request ids."""

    champion: dict[str, Observation] = field(default_factory=dict)
    challenger: dict[str, Observation] = field(default_factory=dict)
    labels: dict[str, bool] = field(default_factory=dict)
    attempts: int = 0  # challenger cluster attempts (edge Envoy), this phase
    errors: int = 0


@dataclass(frozen=True)
class Verdict:
    result: str  # pass | fail | wait
    rule: str
    reason: str
    numbers: dict[str, float] = field(default_factory=dict)


def warm_up() -> None:
    """Import scipy.stats now: its first import takes seconds on a busy machine, and inside the
    first verdict it would stall the control plane's event loop (API calls timed out meanwhile)."""
    import scipy.stats  # noqa: F401


def mann_whitney_slower(challenger_ms: list[float], champion_ms: list[float]) -> tuple[float, float]:
    """(p-value that the challenger's latencies are stochastically greater, median gap in ms)."""
    from scipy.stats import mannwhitneyu

    if len(challenger_ms) < 5 or len(champion_ms) < 5:
        return 1.0, 0.0
    res = mannwhitneyu(challenger_ms, champion_ms, alternative="greater")
    return float(res.pvalue), float(np.median(challenger_ms) - np.median(champion_ms))


def f1_of(obs: Mapping[str, Observation], labels: Mapping[str, bool]) -> tuple[float, int, int]:
    """(F1 of is_fraud vs labels, labelled rows, positives) over the observed requests with a label."""
    tp = fp = fn = n = pos = 0
    for rid, o in obs.items():
        if rid not in labels:
            continue
        y = labels[rid]
        n += 1
        pos += y
        tp += o.is_fraud and y
        fp += o.is_fraud and not y
        fn += (not o.is_fraud) and y
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return f1, n, pos


def numbers_of(ev: Evidence, shadow: bool) -> dict[str, float]:
    """The phase's numbers (also what the ledger records)."""
    ch, cp = list(ev.challenger.values()), list(ev.champion.values())
    out: dict[str, float] = {"challenger_n": len(ch), "champion_n": len(cp),
                             "attempts": ev.attempts, "errors": ev.errors,
                             "error_rate": ev.errors / ev.attempts if ev.attempts else 0.0}
    if ch:
        lat = np.asarray([o.latency_ms for o in ch])
        out["challenger_p95_ms"] = float(np.percentile(lat, 95))
        out["challenger_fraud_rate"] = float(np.mean([o.is_fraud for o in ch]))
        out["challenger_mean_score"] = float(np.mean([o.score for o in ch]))
    if cp:
        out["champion_p95_ms"] = float(np.percentile([o.latency_ms for o in cp], 95))
        out["champion_fraud_rate"] = float(np.mean([o.is_fraud for o in cp]))
        out["champion_mean_score"] = float(np.mean([o.score for o in cp]))
    if shadow:
        pairs = [(ev.champion[r], o) for r, o in ev.challenger.items() if r in ev.champion]
        out["paired"] = len(pairs)
        labelled = [ev.labels[r] for r in ev.challenger if r in ev.champion and r in ev.labels]
        out["paired_labelled"], out["paired_positives"] = len(labelled), sum(labelled)
        if pairs:
            out["agreement"] = float(np.mean([a.is_fraud == b.is_fraud for a, b in pairs]))
            if len(pairs) > 2:
                a = np.asarray([p[0].score for p in pairs])
                b = np.asarray([p[1].score for p in pairs])
                if a.std() > 0 and b.std() > 0:
                    out["score_correlation"] = float(np.corrcoef(a, b)[0, 1])
    f1c, nc, posc = f1_of(ev.challenger, ev.labels)
    f1p, npp, _ = f1_of(ev.champion, ev.labels)
    out.update({"challenger_labelled": nc, "challenger_positives": posc, "champion_labelled": npp})
    if nc:
        out["challenger_f1"] = f1c
    if npp:
        out["champion_f1"] = f1p
    return out


def judge(ev: Evidence, rules: PhaseRules, cfg: CanaryConfig, elapsed_s: float, *, shadow: bool) -> Verdict:
    """The phase's verdict now (module docstring)."""
    nums = numbers_of(ev, shadow)
    for check in (_errors, _p95, _latency_test):
        failed = check(ev, cfg, nums)
        if failed is not None:
            return failed
    n = nums["paired"] if shadow else nums["challenger_n"]
    if n < rules.min_samples or elapsed_s < rules.min_duration_s:
        return _wait_or_timeout(elapsed_s, rules, nums, f"{n:.0f}/{rules.min_samples} samples, "
                                f"{elapsed_s:.0f}/{rules.min_duration_s:g}s")
    if shadow:  # the paired comparison reads the requests both arms scored
        labelled = (nums["paired_labelled"] >= cfg.min_label_samples
                    and nums["paired_positives"] >= cfg.min_label_positives)
    else:
        labelled = (nums["challenger_labelled"] >= cfg.min_label_samples
                    and nums["challenger_positives"] >= cfg.min_label_positives
                    and nums["champion_labelled"] >= cfg.min_label_samples)
    if labelled:
        return _label_quality(cfg, nums, label_comparison(ev, cfg, shadow=shadow))
    if elapsed_s < rules.label_wait_s:
        return _wait_or_timeout(elapsed_s, rules, nums, f"waiting for labels: "
                                f"{nums['challenger_labelled']:.0f}/{cfg.min_label_samples}")
    return _proxy_quality(cfg, nums, shadow)


def _errors(ev: Evidence, cfg: CanaryConfig, nums: dict[str, float]) -> Verdict | None:
    if ev.attempts >= cfg.min_error_attempts and nums["error_rate"] > cfg.max_error_rate:
        return Verdict("fail", "error_rate", f"challenger error rate {nums['error_rate']:.1%} > "
                       f"{cfg.max_error_rate:.0%} ({ev.errors}/{ev.attempts})", nums)
    return None


def _p95(ev: Evidence, cfg: CanaryConfig, nums: dict[str, float]) -> Verdict | None:
    p95 = nums.get("challenger_p95_ms")
    if p95 is not None and nums["challenger_n"] >= 20 and p95 > cfg.max_p95_ms:
        return Verdict("fail", "p95_latency", f"challenger p95 {p95:.0f} ms > {cfg.max_p95_ms:g} ms", nums)
    return None


def _latency_test(ev: Evidence, cfg: CanaryConfig, nums: dict[str, float]) -> Verdict | None:
    ch = [o.latency_ms for o in ev.challenger.values()]
    cp = [o.latency_ms for o in ev.champion.values()]
    p, gap = mann_whitney_slower(ch, cp)
    nums["latency_mw_p"], nums["latency_median_gap_ms"] = p, gap
    if p < cfg.mw_alpha and gap > cfg.min_latency_gap_ms:
        return Verdict("fail", "latency_mann_whitney", f"challenger slower than the champion (Mann-Whitney "
                       f"p={p:.2g}, median +{gap:.1f} ms > {cfg.min_latency_gap_ms:g} ms)", nums)
    return None


def label_comparison(ev: Evidence, cfg: CanaryConfig, *, shadow: bool) -> F1Difference:
    """Challenger F1 - champion F1 on the labelled requests: paired in shadow, else per arm."""
    if shadow:
        rids = [r for r in ev.challenger if r in ev.champion and r in ev.labels]
        y = [ev.labels[r] for r in rids]
        return f1_difference((y, [ev.challenger[r].is_fraud for r in rids]),
                             (y, [ev.champion[r].is_fraud for r in rids]), paired=True,
                             rounds=cfg.bootstrap_rounds, seed=cfg.bootstrap_seed,
                             confidence=cfg.label_confidence)

    def arm(obs: Mapping[str, Observation]) -> tuple[list[bool], list[bool]]:
        rids = [r for r in obs if r in ev.labels]
        return [ev.labels[r] for r in rids], [obs[r].is_fraud for r in rids]

    return f1_difference(arm(ev.challenger), arm(ev.champion), paired=False, rounds=cfg.bootstrap_rounds,
                         seed=cfg.bootstrap_seed, confidence=cfg.label_confidence)


def _label_quality(cfg: CanaryConfig, nums: dict[str, float], cmp: F1Difference) -> Verdict:
    d = cmp.difference
    nums.update({"label_challenger_f1": cmp.challenger_f1, "label_champion_f1": cmp.champion_f1,
                 "label_f1_diff": d.point, "label_f1_diff_ci_lo": d.lo, "label_f1_diff_ci_hi": d.hi,
                 "label_n": cmp.n, "label_positives": cmp.positives, "label_paired": float(cmp.paired),
                 "label_margin": cfg.f1_tolerance, "label_confidence": cfg.label_confidence})
    how = (f"challenger F1 {cmp.challenger_f1:.3f} vs champion {cmp.champion_f1:.3f}, difference "
           f"{d.render(True)} ({cfg.label_confidence:.0%} {'paired ' if cmp.paired else ''}bootstrap) on "
           f"{cmp.n} labelled rows, {cmp.positives} frauds")
    if d.hi < -cfg.f1_tolerance:
        return Verdict("fail", "label_f1", f"significantly worse: {how}; upper bound below "
                       f"-{cfg.f1_tolerance:g}", nums)
    return Verdict("pass", "label_f1", f"not significantly worse: {how}", nums)


def _proxy_quality(cfg: CanaryConfig, nums: dict[str, float], shadow: bool) -> Verdict:
    if shadow:
        agreement = nums.get("agreement", 0.0)
        if agreement < cfg.min_agreement:
            return Verdict("fail", "agreement", f"agreement {agreement:.1%} < {cfg.min_agreement:.0%} "
                           "(too few labels to arbitrate)", nums)
        return Verdict("pass", "agreement", f"agreement {agreement:.1%} on {nums['paired']:.0f} requests",
                       nums)
    rate_shift = abs(nums.get("challenger_fraud_rate", 0.0) - nums.get("champion_fraud_rate", 0.0))
    score_shift = abs(nums.get("challenger_mean_score", 0.0) - nums.get("champion_mean_score", 0.0))
    if rate_shift > cfg.max_rate_shift or score_shift > cfg.max_score_shift:
        return Verdict("fail", "label_free_proxy", f"fraud rate shift {rate_shift:.2f} / mean score shift "
                       f"{score_shift:.2f} beyond {cfg.max_rate_shift:g} / {cfg.max_score_shift:g}", nums)
    return Verdict("pass", "label_free_proxy", f"fraud rate shift {rate_shift:.2f}, mean score shift "
                   f"{score_shift:.2f} (too few labels for F1)", nums)


def _wait_or_timeout(elapsed_s: float, rules: PhaseRules, nums: dict[str, float], why: str) -> Verdict:
    if elapsed_s >= rules.timeout_s:
        return Verdict("fail", "insufficient_evidence", f"no verdict after {elapsed_s:.0f}s: {why}", nums)
    return Verdict("wait", "collecting", why, nums)
