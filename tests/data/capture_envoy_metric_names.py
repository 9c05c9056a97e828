"""Regenerate tests/data/envoy_metric_names.txt from real Envoys of a running mesh.

    .venv/bin/python tests/data/capture_envoy_metric_names.py

Starts nats, the control plane, the edge Envoy, the heuristic server and its sidecar (no trained
model needed) in a temporary MESH_HOME on free ports, sends a bounded burst of predictions (the
xgboost/pytorch tiers are down, so retries, failover and outlier ejection all happen), reads
`/stats/prometheus` from the edge and the sidecar admin, writes the sorted metric names and stops
everything. Run it after an Envoy upgrade; tests/unit/test_monitoring.py accepts an `envoy_*` name
in an alert or a dashboard only when it is in that file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import fields
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from data_plane.netutil import free_port  # noqa: E402
from data_plane.settings import Ports  # noqa: E402

OUT = Path(__file__).with_name("envoy_metric_names.txt")
SERVICES = "nats,control-plane,edge,heuristic,sidecar-heuristic"
TXN = {"amount": 1500.0, "merchant_category": 7, "hour_of_day": 2, "day_of_week": 6,
       "distance_from_home": 150.0, "distance_from_last_txn": 80.0, "is_foreign": 1,
       "velocity_last_1h": 5, "velocity_last_24h": 12, "avg_amount_last_7d": 200.0, "card_age_days": 15}
NAME = re.compile(r"^# TYPE (envoy_[a-zA-Z0-9_:]+) (\w+)$")
SAMPLE = re.compile(r"^(envoy_[a-zA-Z0-9_:]+)(?:\{(.*)\})? ")
LABEL = re.compile(r'(\w+)="')


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def _post(url: str, body: dict[str, object]) -> int:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def names_of(exposition: str) -> dict[str, tuple[str, set[str]]]:
    """Metric family name -> (type, label names), from a Prometheus text exposition."""
    families: dict[str, tuple[str, set[str]]] = {}
    for line in exposition.splitlines():
        if m := NAME.match(line):
            families.setdefault(m.group(1), (m.group(2), set()))
        elif m := SAMPLE.match(line):
            name = m.group(1)
            if name not in families:
                name = re.sub(r"_(bucket|sum|count)$", "", name)
            if name in families:
                families[name][1].update(k for k in LABEL.findall(m.group(2) or "") if k != "le")
    return families


def main() -> int:
    home = Path(tempfile.mkdtemp(prefix="mesh-capture-"))
    env = dict(os.environ, MESH_HOME=str(home))
    ports = {f.name: free_port() for f in fields(Ports)}
    env.update({f"MESH_PORT_{name.upper()}": str(port) for name, port in ports.items()})
    meshctl = [sys.executable, "-m", "meshctl"]
    try:
        subprocess.run([*meshctl, "up", "-d", "--only", SERVICES], cwd=REPO, env=env, check=True,
                       timeout=180)
        edge = f"http://127.0.0.1:{ports['edge']}"
        deadline = time.monotonic() + 30
        while _post(f"{edge}/api/v1/predict", TXN) != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        statuses = [_post(f"{edge}/api/v1/predict", TXN) for _ in range(100)]
        _get(f"{edge}/api/v1/status")
        time.sleep(6)  # let Envoy flush its histograms (stats flush interval: 5 s)
        found: dict[str, tuple[str, set[str]]] = {}
        raw_dir = os.environ.get("CAPTURE_RAW_DIR")  # keep the full expositions to study labels
        for admin in ("edge_admin", "sidecar_admin_heuristic"):
            text = _get(f"http://127.0.0.1:{ports[admin]}/stats/prometheus")
            for name, (kind, labels) in names_of(text).items():
                found.setdefault(name, (kind, set()))[1].update(labels)
            if raw_dir:
                Path(raw_dir, f"{admin}.prom").write_text(text)
        if raw_dir:
            Path(raw_dir, "control_plane.prom").write_text(_get(f"http://127.0.0.1:{ports['operator']}/metrics"))
            Path(raw_dir, "heuristic.prom").write_text(_get(f"http://127.0.0.1:{ports['heuristic']}/metrics"))
        raw = subprocess.run([str(REPO / ".venv/bin/envoy"), "--version"], capture_output=True,
                             text=True, check=False).stdout
        version = m.group(1) if (m := re.search(r"/(\d+\.\d+\.\d+)/", raw)) else "unknown"
    finally:
        subprocess.run([*meshctl, "down"], cwd=REPO, env=env, check=False, timeout=60)
    header = [f"# Envoy {version} /stats/prometheus metric names (edge + sidecar), one per line:",
              "# name type label,label (label names seen on its samples; `le` left out).",
              "# Regenerate: .venv/bin/python tests/data/capture_envoy_metric_names.py",
              f"# Captured after {len(statuses)} predictions (status counts "
              f"{ {s: statuses.count(s) for s in sorted(set(statuses))} }) with xgboost/pytorch down."]
    rows = [f"{n} {t} {','.join(sorted(labels)) or '-'}" for n, (t, labels) in sorted(found.items())]
    OUT.write_text("\n".join([*header, *rows]) + "\n")
    print(f"wrote {len(found)} names to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
