"""GET /api/v1/drift: the newest DriftReport per model (cache rules and the route's shape)."""

from __future__ import annotations

import msgspec
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from control_plane.components import COMPONENTS
from control_plane.drift_reports import DriftReports, DriftReportsComponent, drift_reports_component
from data_plane.contracts.events import DriftReport, FeatureDrift


def report(model: str, level: str, ts: float, psi: float = 0.3) -> bytes:
    feature = FeatureDrift(feature="amount", psi=psi, p_value=1e-9, test="ks", level=level, rejected=True)
    return msgspec.json.encode(DriftReport(model=model, model_version=f"{model}_v1", window_size=500,
                                           level=level, features=[feature], max_psi=psi, ts=ts))


def test_newest_report_per_model_wins_and_late_older_ones_are_ignored() -> None:
    cache = DriftReports()
    cache.add(report("xgboost", "none", ts=100.0, psi=0.01))
    cache.add(report("xgboost", "retrain", ts=110.0))
    cache.add(report("xgboost", "monitor", ts=105.0))  # arrives late: older than what we hold
    cache.add(report("pytorch", "monitor", ts=101.0, psi=0.15))
    view = cache.view()
    assert sorted(view) == ["pytorch", "xgboost"]
    assert view["xgboost"]["level"] == "retrain" and view["xgboost"]["ts"] == 110.0
    assert view["pytorch"]["features"][0]["feature"] == "amount"
    assert cache.received == 4


def test_undecodable_payloads_are_counted_not_kept() -> None:
    cache = DriftReports()
    assert cache.add(b"{not json") is None
    assert cache.add(b'{"model": "xgboost"}') is None  # required fields missing
    assert cache.latest == {} and cache.undecodable == 2 and cache.received == 0


async def test_route_answers_the_cached_reports() -> None:
    component = DriftReportsComponent("nats://127.0.0.1:1")  # never started: no connection
    component.reports.add(report("xgboost", "retrain", ts=5.0))
    app = web.Application()
    app.add_routes(component.routes())
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/api/v1/drift")
        assert resp.status == 200
        body = await resp.json()
    assert body["nats_connected"] is False and body["received"] == 1
    assert body["drift"]["xgboost"]["level"] == "retrain"
    assert body["drift"]["xgboost"]["max_psi"] == 0.3


def test_factory_is_registered_and_can_be_turned_off(monkeypatch) -> None:
    assert any(f.__name__ == "_drift_reports" for f in COMPONENTS)

    class FakeSettings:
        nats_url = "nats://127.0.0.1:4222"

    class FakeCp:
        settings = FakeSettings()

    assert isinstance(drift_reports_component(FakeCp()), DriftReportsComponent)  # type: ignore[arg-type]
    monkeypatch.setenv("MESH_DRIFT_REPORTS", "0")
    assert drift_reports_component(FakeCp()) is None  # type: ignore[arg-type]
