"""Benchmark output: one printed table and one JSON file per suite (bench/results/<topic>.json)."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 1000 else f"{v:,.0f}"
    return "-" if v is None else str(v)


def write_report(topic: str, rows: list[dict[str, Any]], notes: dict[str, Any] | None = None) -> Path:
    """Print `rows` as a table and write them (with machine facts and notes) as JSON."""
    headers: list[str] = []
    for r in rows:
        headers += [k for k in r if k not in headers]
    cells = [[_fmt(r.get(h)) for h in headers] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headers)]
    print(f"\n== {topic} ==")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for c in cells:
        print("  ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)))
    for k, v in (notes or {}).items():
        print(f"  {k}: {v}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{topic}.json"
    out.write_text(json.dumps({
        "topic": topic, "rows": rows, "notes": notes or {},
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }, indent=2, default=str))
    print(f"  -> {out}")
    return out
