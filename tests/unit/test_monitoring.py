"""Prometheus config, alert rules and the Grafana dashboard: valid, and every metric they name exists.

Metric names are derived from the code (prometheus_client declarations found by scanning the
project's modules, cross-checked against what the metrics classes really render) and, for
`envoy_*`, from tests/data/envoy_metric_names.txt, captured from a real Envoy of the mesh.
promtool (Debian package `prometheus`) must be installed: `make setup` does it.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from data_plane.settings import Ports

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "monitoring" / "prometheus"
DASHBOARD = REPO / "monitoring" / "grafana" / "dashboards" / "fraud-mesh.json"
ENVOY_NAMES = REPO / "tests" / "data" / "envoy_metric_names.txt"
RULES_TEST = REPO / "tests" / "data" / "rules_test.yml"
PROJECT_PACKAGES = ("data_plane", "control_plane", "model_servers", "training", "chaos", "tui", "meshctl")
# Labels Prometheus or our scrape configs attach to every series.
TARGET_LABELS = {"job", "instance", "service", "mesh"}
SEED_ALERTS = {  # seed 000's table: name -> `for`
    "HighGatewayLatency": "2m", "HighErrorRate": "2m", "ServiceDown": "1m", "HighFallbackUsage": "5m"}
REQUIRED_ALERTS = {*SEED_ALERTS, "PredictionLatencyHigh", "FraudRateSpike", "NoPredictions", "XdsNack",
                   "XdsPushSlow"}
SEED_PANELS = {"Gateway RPS by model version", "Latency P50 / P95 / P99", "Error Rate",
               "Traffic Distribution", "Active Requests", "Service Health", "XGBoost Latency",
               "PyTorch Latency", "Prediction Classes", "Fallback Usage"}


# ---- metric names the code and Envoy export ---------------------------------------------------------
@dataclass(frozen=True)
class Family:
    samples: frozenset[str]  # sample names Prometheus stores (name_total, name_bucket, ...)
    labels: frozenset[str] | None  # None: not known statically (labels built at run time)


# constructor -> (sample suffixes, index of the positional label argument, its keyword)
_CTORS: dict[str, tuple[tuple[str, ...], int, str]] = {
    "Counter": (("_total", "_created"), 2, "labelnames"),
    "Gauge": (("",), 2, "labelnames"),
    "Histogram": (("_bucket", "_sum", "_count", "_created"), 2, "labelnames"),
    "Summary": (("", "_sum", "_count", "_created"), 2, "labelnames"),
    "Info": (("_info",), 2, "labelnames"),
    "Enum": (("",), 2, "labelnames"),
    "CounterMetricFamily": (("_total", "_created"), 3, "labels"),
    "GaugeMetricFamily": (("",), 3, "labels"),
    "HistogramMetricFamily": (("_bucket", "_sum", "_count"), 4, "labels"),
    "SummaryMetricFamily": (("_sum", "_count"), 4, "labels"),
    "InfoMetricFamily": (("_info",), 3, "labels"),
}


def _literal_strings(node: ast.AST | None) -> frozenset[str] | None:
    if isinstance(node, ast.List | ast.Tuple) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
        return frozenset(e.value for e in node.elts)  # type: ignore[attr-defined]
    return None


def scan_code_metrics() -> dict[str, Family]:
    """Every prometheus_client metric declared with a literal name in the project's modules."""
    found: dict[str, Family] = {}
    for package in PROJECT_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            source = path.read_text()
            if "prometheus_client" not in source:
                continue
            for node in ast.walk(ast.parse(source)):
                if not isinstance(node, ast.Call):
                    continue
                ctor = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
                if ctor not in _CTORS or not node.args or not isinstance(node.args[0], ast.Constant) \
                        or not isinstance(node.args[0].value, str):
                    continue
                suffixes, label_pos, label_kw = _CTORS[ctor]
                name = node.args[0].value
                base = name.removesuffix("_total") if "_total" in suffixes else name
                label_node = next((k.value for k in node.keywords if k.arg == label_kw), None)
                if label_node is None and len(node.args) > label_pos:
                    label_node = node.args[label_pos]
                labels = frozenset() if label_node is None else _literal_strings(label_node)
                if labels is not None and "_bucket" in suffixes:
                    labels = labels | {"le"}
                found[base] = Family(frozenset(base + s for s in suffixes), labels)
    return found


def envoy_metrics() -> dict[str, Family]:
    """Envoy's /stats/prometheus families, as captured from a real Envoy of the mesh."""
    found: dict[str, Family] = {}
    for line in ENVOY_NAMES.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, kind, labels = line.split()
        names = {name + s for s in ("_bucket", "_sum", "_count")} if kind == "histogram" else {name}
        label_set = set() if labels == "-" else set(labels.split(","))
        if kind == "histogram":
            label_set.add("le")
        found[name] = Family(frozenset(names), frozenset(label_set))
    return found


def known_series() -> dict[str, frozenset[str] | None]:
    """Sample name -> label names it may carry (None: unknown, any accepted)."""
    known: dict[str, frozenset[str] | None] = {"up": frozenset()}
    for family in (*scan_code_metrics().values(), *envoy_metrics().values()):
        for sample in family.samples:
            known[sample] = None if family.labels is None else family.labels | TARGET_LABELS
    known["up"] = frozenset(TARGET_LABELS)
    return known


# ---- PromQL: which series does an expression select ---------------------------------------------------
_AGG_MODIFIER = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"(?<![\w.$])([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?")
_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
          "offset", "inf", "nan", "Inf", "NaN"}


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names in its matcher) for every series selector in `expr`."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery durations ($__rate_interval...)
    text = _AGG_MODIFIER.sub(" ", text)
    out = []
    for m in _NAME.finditer(text):
        name, matcher = m.group(1), m.group(2)
        if name in _WORDS or (matcher is None and text[m.end():].lstrip().startswith("(")):
            continue  # keyword or function call
        labels = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matcher or ""))
        out.append((name, labels))
    return out


def check_selectors(expr: str, where: str, known: dict[str, frozenset[str] | None]) -> list[str]:
    problems = []
    for name, labels in selectors(expr):
        if name not in known:
            problems.append(f"{where}: metric {name!r} is exported by neither the code nor Envoy")
            continue
        allowed = known[name]
        if allowed is not None and not labels <= allowed:
            problems.append(f"{where}: {name} has no label(s) {sorted(labels - allowed)} "
                            f"(it has {sorted(allowed)})")
    return problems


def test_selector_parser_reads_names_labels_and_skips_functions() -> None:
    expr = ('histogram_quantile(0.95, sum by (kind, le) (rate(a_bucket{kind="x", le!=""}[5m]))) '
            '/ clamp_min(sum(b_total), 1e-9) > 0.1 and on () (c or vector(0))')
    assert selectors(expr) == [("a_bucket", {"kind", "le"}), ("b_total", set()), ("c", set())]


# ---- the rules ---------------------------------------------------------------------------------------
def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM_DIR / "rules.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool") or shutil.which("promtool", path=str(REPO / ".venv" / "bin"))
    if path is None:
        pytest.fail("promtool is not installed: run `make setup` (it installs Debian's `prometheus` "
                    "package, which provides /usr/bin/promtool), or `apt-get install prometheus`")
    return path


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("config", ["prometheus.yml", "local.yml"])
def test_prometheus_config_passes_promtool(promtool: str, config: str) -> None:
    proc = _run([promtool, "check", "config", config], PROM_DIR)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_kubernetes_config_passes_promtool_and_keeps_the_job_names(promtool: str, tmp_path: Path) -> None:
    """Debian's promtool is built without Kubernetes discovery: check everything else of the
    config (relabelling included) with the discovery swapped for a static target."""
    doc = yaml.safe_load((PROM_DIR / "kubernetes.yml").read_text())
    jobs = {job["job_name"] for job in doc["scrape_configs"]}
    assert jobs == set(_targets("prometheus.yml")), "same job names: rules and dashboard filter on them"
    for job in doc["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["static_configs"] = [{"targets": ["10.0.0.1:8001"]}]
    (tmp_path / "kubernetes.yml").write_text(yaml.safe_dump(doc))
    shutil.copy(PROM_DIR / "rules.yml", tmp_path / "rules.yml")
    proc = _run([promtool, "check", "config", "kubernetes.yml"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rules_pass_promtool(promtool: str) -> None:
    proc = _run([promtool, "check", "rules", "rules.yml"], PROM_DIR)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(_rules())} rules found" in proc.stdout


def test_alerts_fire_on_the_series_they_watch(promtool: str, tmp_path: Path) -> None:
    """tests/data/rules_test.yml against rules.yml without annotations (promtool compares them)."""
    doc = yaml.safe_load((PROM_DIR / "rules.yml").read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(doc))
    shutil.copy(RULES_TEST, tmp_path / "rules_test.yml")
    proc = _run([promtool, "test", "rules", "rules_test.yml"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULES_TEST.read_text()))
    assert tested == {r["alert"] for r in _rules()}, "every alert needs a promtool test case"


def test_alerts_cover_the_seeds_with_severity_summary_and_description() -> None:
    rules = {r["alert"]: r for r in _rules()}
    assert set(rules) >= REQUIRED_ALERTS
    for name, duration in SEED_ALERTS.items():
        assert rules[name]["for"] == duration, name
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        anchor = rule["annotations"]["runbook"].split("#")[1]
        assert anchor == name.lower(), f"{name}: runbook anchor {anchor!r}"


def test_every_runbook_anchor_exists_in_the_operations_guide() -> None:
    guide = (REPO / "docs" / "operations.md").read_text()
    headings = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", guide, flags=re.M)}
    for rule in _rules():
        anchor = rule["annotations"]["runbook"].split("#")[1]
        assert anchor in headings, f"docs/operations.md has no heading for {rule['alert']}"


def test_alert_expressions_use_exported_metrics_and_labels() -> None:
    known = known_series()
    problems = [p for r in _rules() for p in check_selectors(r["expr"], r["alert"], known)]
    assert not problems, "\n".join(problems)


# ---- the dashboard -----------------------------------------------------------------------------------
def _panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def test_dashboard_is_the_generators_output() -> None:
    generator = REPO / "monitoring" / "grafana" / "make_dashboard.py"
    spec = importlib.util.spec_from_file_location("make_dashboard", generator)
    assert spec is not None and spec.loader is not None
    make_dashboard = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_dashboard)
    assert json.loads(DASHBOARD.read_text()) == make_dashboard.dashboard(), \
        "edit monitoring/grafana/make_dashboard.py and run it; do not edit the JSON by hand"


def test_dashboard_has_the_seed_panels_and_control_plane_panels() -> None:
    panels = {p["title"]: p for p in _panels()}
    assert set(panels) >= SEED_PANELS
    gauge = panels["Error Rate"]
    assert gauge["type"] == "gauge"
    assert [s["color"] for s in gauge["fieldConfig"]["defaults"]["thresholds"]["steps"]] == \
        ["green", "yellow", "red"]
    assert panels["Traffic Distribution"]["type"] == "piechart"
    exprs = " ".join(t["expr"] for p in _panels() for t in p["targets"])
    for metric in ("mesh_xds_push_ack_seconds_bucket", "mesh_xds_nacks_total", "mesh_decisions_total"):
        assert metric in exprs
    ids = [p["id"] for p in json.loads(DASHBOARD.read_text())["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_queries_use_exported_metrics_and_labels() -> None:
    known = known_series()
    problems = []
    for panel in _panels():
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for t in panel["targets"]:
            problems += check_selectors(t["expr"], f"panel {panel['title']!r}", known)
    assert not problems, "\n".join(problems)


def test_grafana_datasource_and_dashboard_folder_match_the_dashboard_and_compose() -> None:
    prov = REPO / "monitoring" / "grafana" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    uids = {t["datasource"]["uid"] for p in _panels() for t in p["targets"]}
    assert uids == {ds["uid"]}
    provider = yaml.safe_load((prov / "dashboards" / "fraud-mesh.yml").read_text())["providers"][0]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = {v.split(":")[1] for v in compose["services"]["grafana"]["volumes"]}
    assert provider["options"]["path"] in mounts


# ---- scrape configs ----------------------------------------------------------------------------------
def _targets(config: str) -> dict[str, set[str]]:
    doc = yaml.safe_load((PROM_DIR / config).read_text())
    return {job["job_name"]: {t for sc in job["static_configs"] for t in sc["targets"]}
            for job in doc["scrape_configs"]}


def test_local_config_scrapes_127_0_0_1_on_the_default_ports() -> None:
    defaults = Ports()
    port_of = {f.name: getattr(defaults, f.name) for f in fields(Ports)}
    expected = {
        "prometheus": {"prometheus"}, "control-plane": {"operator"},
        "model-servers": {"xgboost", "pytorch", "heuristic"}, "envoy-edge": {"edge_admin"},
        "envoy-sidecars": {"sidecar_admin_xgboost", "sidecar_admin_pytorch", "sidecar_admin_heuristic"},
    }
    local = _targets("local.yml")
    assert local == {job: {f"127.0.0.1:{port_of[f]}" for f in names} for job, names in expected.items()}
    compose = _targets("prometheus.yml")
    assert set(compose) == set(local)
    for job, targets in local.items():
        if job != "prometheus":
            assert compose[job] == {t.replace("127.0.0.1:", "mesh:") for t in targets}, job


def test_static_scan_finds_every_metric_the_classes_render() -> None:
    """The code scan must not miss a family; compare with what the metrics classes expose."""
    from prometheus_client.parser import text_string_to_metric_families

    from control_plane.metrics import ControlPlaneMetrics
    from model_servers.metrics import ServerMetrics

    server = ServerMetrics("xgboost")
    server.watch_bus(lambda: (0, 0))
    rendered = ControlPlaneMetrics().render().decode() + server.render().decode()
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"),
                "summary": ("_sum", "_count"), "info": ("_info",)}
    scanned = {s for f in scan_code_metrics().values() for s in f.samples}
    families = list(text_string_to_metric_families(rendered))
    assert families
    missing = {f.name + s for f in families for s in suffixes.get(f.type, ("",))} - scanned
    assert not missing, f"metrics rendered but not found by the scan: {sorted(missing)}"


def test_envoy_metric_list_matches_the_installed_envoy() -> None:
    header = ENVOY_NAMES.read_text().splitlines()[0]
    envoy = REPO / ".venv" / "bin" / "envoy"
    if not envoy.exists():
        pytest.fail("no .venv/bin/envoy: run `make setup`")
    version = re.search(r"/(\d+\.\d+\.\d+)/", subprocess.run(
        [str(envoy), "--version"], capture_output=True, text=True, check=True, timeout=60).stdout)
    assert version and f"Envoy {version.group(1)} " in header, \
        "Envoy changed: run `.venv/bin/python tests/data/capture_envoy_metric_names.py`"
    assert len(envoy_metrics()) > 100
