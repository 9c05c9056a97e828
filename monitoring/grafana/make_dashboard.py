"""Write monitoring/grafana/dashboards/fraud-mesh.json (the dashboard is code: edit here, then run).

    .venv/bin/python monitoring/grafana/make_dashboard.py

Row 1 holds the seed's ten panels (seed 000: gateway RPS by model version, latency percentiles,
error rate, traffic distribution, active requests, service health, XGBoost and PyTorch latency,
prediction classes, fallback usage); row 2 the self-healing machinery (xDS push -> ACK, NACKs,
decisions, snapshot convergence, Envoy nodes, ejections, failover, load shedding, event loss, and
the healing loop: detect -> ACK time, changes, held-back proposals, services judged sick).
tests/unit/test_monitoring.py checks that the JSON is this script's output and that every metric
a query names exists (project code or tests/data/envoy_metric_names.txt).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "fraud-mesh.json"
DS = {"type": "prometheus", "uid": "prometheus"}
EDGE = 'job="envoy-edge", envoy_http_conn_manager_prefix="edge"'
PREDICT = 'endpoint=~"predict|predict_batch"'
SERVICES = 'job=~"control-plane|model-servers|envoy-edge|envoy-sidecars"'

Panel = dict[str, Any]


def target(expr: str, legend: str = "", instant: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto",
                         "range": not instant, "instant": instant}
    return t


def panel(kind: str, title: str, desc: str, targets: list[dict[str, Any]], unit: str = "short",
          **extra: Any) -> Panel:
    p: Panel = {"type": kind, "title": title, "description": desc, "datasource": DS,
                "targets": [dict(t, refId=chr(ord("A") + i)) for i, t in enumerate(targets)],
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}, "options": {}}
    p.update(extra)
    return p


def timeseries(title: str, desc: str, targets: list[dict[str, Any]], unit: str = "short",
               bars: bool = False) -> Panel:
    p = panel("timeseries", title, desc, targets, unit)
    p["fieldConfig"]["defaults"]["custom"] = {"drawStyle": "bars" if bars else "line",
                                              "fillOpacity": 60 if bars else 10, "lineWidth": 1}
    p["options"] = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}}
    return p


def latency_quantiles(kind: str) -> list[dict[str, Any]]:
    own = (f'rate(model_server_request_latency_seconds_bucket{{kind="{kind}", endpoint="predict"}}'
           "[$__rate_interval])")
    sidecar = (f'rate(envoy_cluster_upstream_rq_time_bucket{{job="envoy-sidecars", '
               f'envoy_cluster_name="local-{kind}"}}[$__rate_interval])')
    return [
        target(f"histogram_quantile(0.50, sum by (slot, le) ({own}))", "P50 server {{slot}}"),
        target(f"histogram_quantile(0.95, sum by (slot, le) ({own}))", "P95 server {{slot}}"),
        # Envoy times are milliseconds; the panel is in seconds.
        target(f"histogram_quantile(0.95, sum by (le) ({sidecar})) / 1000", "P95 via sidecar"),
    ]


def seed_panels() -> list[Panel]:
    error_rate = (f'sum(rate(envoy_http_downstream_rq_xx{{{EDGE}, envoy_response_code_class="5"}}[5m]))'
                  f" / clamp_min(sum(rate(envoy_http_downstream_rq_completed{{{EDGE}}}[5m])), 1e-9)")
    gauge = panel("gauge", "Error Rate", "Share of edge responses that were 5xx (last 5 min). "
                  "Model failures are absorbed by failover and the conservative default; "
                  "alert HighErrorRate at 5 %.", [target(error_rate, "5xx", instant=True)],
                  unit="percentunit")
    gauge["fieldConfig"]["defaults"].update({"min": 0, "max": 0.2, "thresholds": {
        "mode": "absolute", "steps": [{"color": "green", "value": None},
                                      {"color": "yellow", "value": 0.01},
                                      {"color": "red", "value": 0.05}]}})
    gauge["options"] = {"showThresholdMarkers": True, "showThresholdLabels": False}
    pie = panel("piechart", "Traffic Distribution", "Predictions answered per model server over the "
                "dashboard's time range (the heuristic is the fallback tier).",
                [target(f'sum by (kind) (increase(model_server_requests_total{{{PREDICT}, status="200"}}'
                        "[$__range]))", "{{kind}}", instant=True)])
    pie["options"] = {"pieType": "donut", "displayLabels": ["name", "percent"],
                      "legend": {"displayMode": "list", "placement": "right", "showLegend": True},
                      "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
    active = panel("stat", "Active Requests", "In flight now: at the edge Envoy and inside the "
                   "model servers' handlers.",
                   [target(f"sum(envoy_http_downstream_rq_active{{{EDGE}}})", "edge", instant=True),
                    target("sum(model_server_in_flight_requests)", "model servers", instant=True)])
    active["options"] = {"colorMode": "value", "graphMode": "area", "textMode": "value_and_name",
                         "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
    health = panel("stat", "Service Health", "UP/DOWN per scraped service (Prometheus `up`).",
                   [target(f"up{{{SERVICES}}}", "{{service}}", instant=True)])
    health["fieldConfig"]["defaults"]["mappings"] = [{"type": "value", "options": {
        "0": {"text": "DOWN", "color": "red", "index": 0},
        "1": {"text": "UP", "color": "green", "index": 1}}}]
    health["fieldConfig"]["defaults"]["thresholds"] = {"mode": "absolute", "steps": [
        {"color": "red", "value": None}, {"color": "green", "value": 1}]}
    health["options"] = {"colorMode": "background", "graphMode": "none", "textMode": "value_and_name",
                         "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
    quantile = f"sum by (le) (rate(envoy_http_downstream_rq_time_bucket{{{EDGE}}}[$__rate_interval]))"
    return [
        timeseries("Gateway RPS by model version", "Requests per second each model version answered "
                   "(shadow copies count on the challenger's version), and everything the edge took.",
                   [target(f"sum by (model_version) (rate(model_server_requests_total{{{PREDICT}}}"
                           "[$__rate_interval]))", "{{model_version}}"),
                    target(f"sum(rate(envoy_http_downstream_rq_total{{{EDGE}}}[$__rate_interval]))",
                           "edge (all routes)")], unit="reqps"),
        timeseries("Latency P50 / P95 / P99", "End-to-end time through the edge Envoy "
                   "(alert HighGatewayLatency: P95 > 500 ms for 2 min).",
                   [target(f"histogram_quantile({q}, {quantile})", f"P{int(q * 100)}")
                    for q in (0.5, 0.95, 0.99)], unit="ms"),
        gauge, pie, active, health,
        timeseries("XGBoost Latency", "Handler time of the xgboost server per slot, and the time "
                   "its sidecar saw.", latency_quantiles("xgboost"), unit="s"),
        timeseries("PyTorch Latency", "Handler time of the pytorch server per slot, and the time "
                   "its sidecar saw.", latency_quantiles("pytorch"), unit="s"),
        timeseries("Prediction Classes", "Fraud vs legit predictions per second (all servers).",
                   [target("sum by (prediction) (rate(model_server_predictions_total[$__rate_interval]))",
                           "{{prediction}}")], unit="reqps"),
        timeseries("Fallback Usage", "Answers given for a cluster Envoy could not reach, by reason, "
                   "and the heuristic tier's request rate (alert HighFallbackUsage: > 1/s for 5 min).",
                   [target("sum by (reason) (rate(model_server_fallback_served_total[$__rate_interval]))",
                           "{{reason}}"),
                    target(f'sum(rate(model_server_requests_total{{kind="heuristic", {PREDICT}}}'
                           "[$__rate_interval]))", "heuristic requests")], unit="reqps"),
    ]


def healing_panels() -> list[Panel]:
    ack = "sum by (type, le) (rate(mesh_xds_push_ack_seconds_bucket[$__rate_interval]))"
    nodes = panel("stat", "Envoy nodes on ADS", "1 while the node holds an ADS stream to the control plane.",
                  [target("mesh_xds_node_connected", "{{node}}", instant=True)])
    nodes["fieldConfig"]["defaults"]["mappings"] = [{"type": "value", "options": {
        "0": {"text": "disconnected", "color": "red", "index": 0},
        "1": {"text": "connected", "color": "green", "index": 1}}}]
    nodes["options"] = {"colorMode": "background", "graphMode": "none", "textMode": "value_and_name",
                        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
    sick = panel("stat", "Judged sick by the healing loop", "1 while the reconciler judges the service "
                 "sick (after hysteresis and dwell time) and keeps it ejected.",
                 [target("max by (service) (mesh_service_sick)", "{{service}}", instant=True)])
    sick["fieldConfig"]["defaults"]["mappings"] = [{"type": "value", "options": {
        "0": {"text": "healthy", "color": "green", "index": 0},
        "1": {"text": "sick", "color": "red", "index": 1}}}]
    sick["options"] = nodes["options"]
    detect = "sum by (le) (rate(mesh_healing_detect_to_ack_seconds_bucket[$__rate_interval]))"
    return [
        timeseries("Healing: detect -> ACK", "From the healing round that judged a service sick (or "
                   "healthy again) to the routing change ACKed by every Envoy.",
                   [target(f"histogram_quantile({q}, {detect})", f"P{int(q * 100)}") for q in (0.5, 0.99)],
                   unit="s"),
        timeseries("Healing: changes and held-back proposals", "Ejections and restores the reconciler "
                   "applied, and proposals it held back (cooldown, budget, freeze, chaos lock...).",
                   [target("sum by (service, action) "
                           "(increase(mesh_healing_changes_total[$__rate_interval]))",
                           "{{action}} {{service}}"),
                    target("sum by (why) (increase(mesh_healing_suppressed_total[$__rate_interval]))",
                           "held back: {{why}}")], bars=True),
        sick,
        timeseries("xDS push -> ACK latency", "Time from pushing a resource to a node until it ACKed "
                   "it, per resource type (alert XdsPushSlow: P99 > 1 s).",
                   [target(f"histogram_quantile({q}, {ack})", f"P{int(q * 100)} {{{{type}}}}")
                    for q in (0.5, 0.99)], unit="s"),
        timeseries("xDS NACKs and refused changes", "Updates an Envoy rejected (alert XdsNack) and "
                   "intent changes refused before any push.",
                   [target("sum by (node, type) (increase(mesh_xds_nacks_total[$__rate_interval]))",
                           "NACK {{node}} {{type}}"),
                    target("sum(increase(mesh_intent_changes_refused_total[$__rate_interval]))", "refused")],
                   bars=True),
        timeseries("Decisions", "Ledger entries by actor and action (GET /api/v1/decisions says why).",
                   [target("sum by (actor, action) (increase(mesh_decisions_total[$__rate_interval]))",
                           "{{actor}}: {{action}}")], bars=True),
        timeseries("Snapshot versions", "Newest snapshot handed out vs newest every connected Envoy "
                   "ACKed (alert XdsNotConverged when they differ for 2 min).",
                   [target("max(mesh_xds_snapshot_version)", "handed out"),
                    target("max(mesh_xds_last_good_version)", "ACKed by all")]),
        nodes,
        timeseries("Edge: ejected and healthy endpoints", "Outlier detection ejections and healthy "
                   "hosts per cluster at the edge (alert UpstreamEjected).",
                   [target('sum by (envoy_cluster_name) (envoy_cluster_outlier_detection_ejections_active'
                           '{job="envoy-edge"})', "ejected {{envoy_cluster_name}}"),
                    target('sum by (envoy_cluster_name) (envoy_cluster_membership_healthy{job="envoy-edge", '
                           'envoy_cluster_name=~"xgboost|pytorch|heuristic|.*-challenger"})',
                           "healthy {{envoy_cluster_name}}")]),
        timeseries("Edge: retries and no-healthy-upstream", "Retries down the failover chains, and "
                   "requests that found no healthy upstream (answered with the conservative default).",
                   [target('sum by (envoy_cluster_name) (rate(envoy_cluster_upstream_rq_retry'
                           '{job="envoy-edge"}[$__rate_interval]))', "retry {{envoy_cluster_name}}"),
                    target('sum by (envoy_cluster_name) (rate(envoy_cluster_upstream_cx_none_healthy'
                           '{job="envoy-edge"}[$__rate_interval]))', "none healthy {{envoy_cluster_name}}")],
                   unit="reqps"),
        timeseries("Sidecars: load shed", "Requests a sidecar refused at once because its circuit "
                   "breaker was full (the edge then fails over).",
                   [target('sum by (service) (rate(envoy_cluster_upstream_rq_pending_overflow'
                           '{job="envoy-sidecars"}[$__rate_interval]))', "{{service}}")], unit="reqps"),
        timeseries("Events and prediction records lost", "Control-plane events the bus dropped "
                   "(NATS down or full) and prediction records the model servers dropped "
                   "(alert PredictionRecordsDropped).",
                   [target("sum(delta(mesh_events_dropped[$__rate_interval]))", "control-plane events"),
                    target('sum by (kind) (increase(model_server_prediction_log_records_total'
                           '{outcome="dropped"}[$__rate_interval]))', "records {{kind}}")], bars=True),
    ]


def layout(panels: list[Panel], y: int, ids: list[int]) -> list[Panel]:
    """Three panels per row (8 wide, 8 high); `ids` supplies increasing panel ids."""
    out = []
    for i, p in enumerate(panels):
        ids[0] += 1
        out.append(dict(p, id=ids[0], gridPos={"h": 8, "w": 8, "x": (i % 3) * 8, "y": y + (i // 3) * 8}))
    return out


def row(title: str, y: int, ids: list[int]) -> Panel:
    ids[0] += 1
    return {"type": "row", "title": title, "id": ids[0], "collapsed": False, "panels": [],
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}}


def dashboard() -> dict[str, Any]:
    ids = [0]
    seed, healing = seed_panels(), healing_panels()
    panels = [row("Serving (seed panels)", 0, ids), *layout(seed, 1, ids)]
    y = 1 + 8 * ((len(seed) + 2) // 3)
    panels += [row("Self-healing and control plane", y, ids), *layout(healing, y + 1, ids)]
    return {
        "uid": "fraud-mesh", "title": "Fraud mesh", "tags": ["fraud-mesh", "envoy", "xds"],
        "timezone": "browser", "editable": False, "graphTooltip": 1, "schemaVersion": 39, "version": 1,
        "refresh": "5s", "time": {"from": "now-30m", "to": "now"},
        "annotations": {"list": []}, "templating": {"list": []}, "links": [], "panels": panels,
    }


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
