"""ControlPlane.apply and restarts, without Envoy: versions, persistence, refusals, the state lock."""

from __future__ import annotations

import pytest

from control_plane.app import IntentFrozenError, SnapshotRefusedError, merge_intent
from control_plane.intent import RoutingIntent
from control_plane.store import StateLockedError, read_state
from data_plane.contracts.errors import ValidationError
from data_plane.settings import Settings
from tests.unit.cp_fixtures import control_plane, isolated_settings


async def test_restart_resumes_the_intent_under_a_higher_version(settings: Settings) -> None:
    s = isolated_settings(settings)
    cp = control_plane(s)
    await cp.start()
    decision = await cp.apply({"weights": {"xgboost": 0.4, "pytorch": 0.6}}, actor="operator",
                              rule="operator_request", reason="test")
    await cp.stop(grace=0.1)
    assert decision.xds_version == "2"

    again = control_plane(s)
    await again.start()
    try:
        assert again.store.intent.weights == {"xgboost": 0.4, "pytorch": 0.6}
        assert again.store.version == 3
        assert {snap.version for snap in map(again.cache.snapshot, again.cache.nodes())} == {"3"}
        actions = [d.action for d in again.ledger.read()]
        assert actions == ["resume", "set_weights", "resume"]
    finally:
        await again.stop(grace=0.1)


async def test_version_is_durable_before_the_push(settings: Settings) -> None:
    cp = control_plane(settings)
    await cp.start()
    try:
        await cp.apply({"frozen": True}, actor="operator", rule="operator_request", reason="test")
        on_disk = read_state(cp.settings)
        pushed = cp.cache.snapshot("edge")
        assert pushed is not None and on_disk.version == int(pushed.version) == 2
        assert on_disk.intent.frozen is True
    finally:
        await cp.stop(grace=0.1)


async def test_a_second_control_plane_on_the_same_home_is_refused(settings: Settings) -> None:
    s = isolated_settings(settings)
    first = control_plane(s)
    await first.start()
    try:
        with pytest.raises(StateLockedError, match="in use by pid"):
            await control_plane(s).start()
    finally:
        await first.stop(grace=0.1)


async def test_an_unbuildable_intent_is_refused_and_nothing_changes(settings: Settings) -> None:
    cp = control_plane(settings)
    await cp.start()
    try:
        before = (cp.store.version, cp.store.intent, cp.ledger.last_seq)
        with pytest.raises(SnapshotRefusedError, match="nothing was changed"):
            await cp.apply({"overrides": {"lightgbm": {"host": "127.0.0.1", "port": 9}}},
                           actor="chaos", rule="experiment", reason="test")
        assert (cp.store.version, cp.store.intent, cp.ledger.last_seq) == before
    finally:
        await cp.stop(grace=0.1)


def test_merge_intent_checks_fields_and_types() -> None:
    base = RoutingIntent()
    assert merge_intent(base, {"frozen": True}).frozen is True
    assert merge_intent(base, lambda i: RoutingIntent(weights={"xgboost": 1.0})).weights == {"xgboost": 1.0}
    with pytest.raises(ValidationError) as unknown:
        merge_intent(base, {"weigths": {}})
    assert (unknown.value.field, unknown.value.rule) == ("weigths", "unknown_field")
    with pytest.raises(ValidationError) as typed:
        merge_intent(base, {"frozen": "yes"})
    assert typed.value.field == "frozen" and typed.value.rule == "type"


async def test_automation_stands_still_while_frozen(settings: Settings) -> None:
    cp = control_plane(settings)
    await cp.start()
    try:
        await cp.apply({"frozen": True}, actor="operator", rule="operator_request", reason="incident")
        version = cp.store.version
        with pytest.raises(IntentFrozenError, match="unfreeze"):
            await cp.apply({"ejected": ["xgboost"]}, actor="reconciler", rule="ejection", reason="5xx")
        assert cp.store.version == version and cp.store.intent.ejected == []
        operator = await cp.apply({"weights": {"xgboost": 1.0, "pytorch": 0.0}}, actor="operator",
                                  rule="operator_request", reason="operators still act")
        assert operator.xds_version == str(version + 1)
    finally:
        await cp.stop(grace=0.1)


async def test_replicas_count_under_their_role_in_the_node_metrics(settings: Settings) -> None:
    cp = control_plane(isolated_settings(settings))
    await cp.start()
    try:
        gauge = cp.metrics.node_connected
        for pod in ("edge-7d9f-a", "edge-7d9f-b"):  # two edge pods, Envoy --service-cluster edge
            cp.cache.stream_opened(pod, role="edge")
            cp.on_stream_open(pod, 1)
        assert gauge.labels("edge")._value.get() == 1
        assert cp._label("edge-7d9f-a") == "edge" and cp._label("sim-0042") == "other"
        cp.cache.stream_closed("edge-7d9f-a")
        cp.on_stream_close("edge-7d9f-a", 1)
        assert gauge.labels("edge")._value.get() == 1  # one replica still holds a stream
        cp.cache.stream_closed("edge-7d9f-b")
        cp.on_stream_close("edge-7d9f-b", 1)
        assert gauge.labels("edge")._value.get() == 0
    finally:
        await cp.stop(grace=0.1)
