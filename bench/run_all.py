"""`make bench`: run every benchmark suite, then write one report (Markdown + JSON).

Each suite runs in its own process (a crash or timeout in one does not stop the rest), prints its
own table and writes bench/results/<topic>.json; this script gathers those into
bench/results/REPORT.md and bench/results/report.json. `--quick` uses each suite's CI-size mode.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench._report import RESULTS

# (module, arguments for a full run, arguments for a quick run, timeout seconds)
SUITES: list[tuple[str, list[str], list[str], int]] = [
    ("bench.bench_contracts", [], [], 300),
    ("bench.bench_scoring", [], ["--calls", "1000", "--rows", "10000"], 600),
    ("bench.bench_training", [], ["--rows", "20000"], 600),
    ("bench.bench_xds", [], ["--quick"], 900),
    ("bench.bench_apply", [], ["--quick"], 600),
    ("bench.bench_drift", [], ["--quick"], 900),
    ("bench.bench_chaos_proxy", [], ["--seconds", "1.5", "--rounds", "1"], 600),
    ("bench.bench_model_server", [], ["--rounds", "1", "--seconds", "2"], 600),
    ("bench.bench_loadgen", [], ["--quick"], 600),
    ("bench.bench_serving", [], ["--quick"], 1200),
    ("bench.bench_healing", [], ["--quick"], 900),
    ("bench.bench_footprint", [], ["--quick"], 900),
    ("bench.bench_lifecycle", [], ["--quick"], 900),
]


def _exists(module: str) -> bool:
    return (Path(__file__).resolve().parent.parent / (module.replace(".", "/") + ".py")).exists()


def run_suites(quick: bool, only: set[str] | None) -> list[dict[str, object]]:
    runs = []
    for module, full, fast, timeout in SUITES:
        short = module.rsplit(".", 1)[-1].removeprefix("bench_")
        if only and short not in only:
            continue
        if not _exists(module):
            runs.append({"suite": short, "status": "absent"})
            continue
        print(f"\n### {short} ({'quick' if quick else 'full'})", flush=True)
        t0 = time.monotonic()
        try:
            proc = subprocess.run([sys.executable, "-m", module, *(fast if quick else full)],
                                  timeout=timeout, check=False)
            status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
        except subprocess.TimeoutExpired:
            status = f"timeout after {timeout}s"
        runs.append({"suite": short, "status": status, "seconds": round(time.monotonic() - t0, 1)})
    return runs


def render(runs: list[dict[str, object]]) -> str:
    lines = ["# Benchmark report", "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; ratios are against a "
             "reference measured in the same run (see each suite).", ""]
    for run in runs:
        path = RESULTS / f"{run['suite']}.json"
        lines.append(f"## {run['suite']} ({run['status']})")
        if not path.exists() or run["status"] == "absent":
            lines += ["", "no results", ""]
            continue
        data = json.loads(path.read_text())
        rows = data.get("rows", [])
        headers: list[str] = []
        for r in rows:
            headers += [k for k in r if k not in headers]
        if headers:
            lines += ["", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
            lines += ["| " + " | ".join(_cell(r.get(h)) for h in headers) + " |" for r in rows]
        for k, v in data.get("notes", {}).items():
            lines.append(f"- {k}: {v}")
        lines.append("")
    return "\n".join(lines)


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return "" if v is None else str(v)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="each suite's CI-size mode")
    ap.add_argument("--only", default="", help="comma list of suite names (e.g. xds,serving)")
    args = ap.parse_args()
    only = {s.strip() for s in args.only.split(",") if s.strip()} or None
    runs = run_suites(args.quick, only)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "REPORT.md").write_text(render(runs))
    (RESULTS / "report.json").write_text(json.dumps({"runs": runs}, indent=2))
    print(f"\nreport: {RESULTS / 'REPORT.md'}")
    for run in runs:
        print(f"  {run['suite']:<14} {run['status']}")
    return 0 if all(r["status"] in ("ok", "absent") for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
