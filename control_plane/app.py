"""The control-plane process core: durable intent -> consistent snapshots -> Envoys, with a ledger.

`ControlPlane.apply()` is the one path every change takes, operator or automation:
build and check the snapshots (refuse an inconsistent one before anything changes), persist intent
and version, push, wait (bounded) for the connected Envoys' ACKs, record the decision with the xDS
version and per-node ACK state. A NACK becomes an event and a ledger entry, and the mesh goes back
to the last good intent once (never a loop of re-pushes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from control_plane.intent import RoutingIntent
from control_plane.ledger import Ledger
from control_plane.metrics import ControlPlaneMetrics
from control_plane.service_health import ServiceProbe
from control_plane.store import StateStore
from control_plane.streams import ensure_streams_when_nats_answers
from control_plane.topology import Topology
from control_plane.xds import (
    AdsServer,
    InconsistentSnapshotError,
    NodeStatus,
    Snapshot,
    SnapshotCache,
    build_snapshots,
    node_ids,
)
from control_plane.xds.resources import short
from data_plane.contracts import subjects
from data_plane.contracts.errors import MeshError, ValidationError
from data_plane.contracts.events import Decision, XdsEvent
from data_plane.eventbus import EventBus
from data_plane.settings import Settings

log = logging.getLogger(__name__)

IntentChange = RoutingIntent | Mapping[str, Any] | Callable[[RoutingIntent], RoutingIntent]
SnapshotBuilder = Callable[[RoutingIntent, Topology, int], Mapping[str, Snapshot]]
ACK_TIMEOUT_S = 2.0
MAX_PENDING = 100
SETTLE_DELAY_S = 0.05
# Actors that stand still while the intent is frozen (RoutingIntent.frozen); operators never do.
FROZEN_ACTORS = frozenset({"reconciler", "canary"})


class IntentFrozenError(MeshError):
    """Automation proposed a change while the operator has frozen it."""


class SnapshotRefusedError(MeshError):
    """The snapshots built from a proposed intent are inconsistent; nothing was changed."""

    def to_dict(self) -> dict[str, object]:
        return {"error": "snapshot_refused", "field": "$intent", "rule": "snapshot_consistency",
                "message": str(self)}


def merge_intent(current: RoutingIntent, change: IntentChange) -> RoutingIntent:
    """Apply a change (whole intent, field mapping or function) to `current`, validating types."""
    if isinstance(change, RoutingIntent):
        return change
    if callable(change):
        result = change(current)
        if not isinstance(result, RoutingIntent):
            raise TypeError("an intent change function must return a RoutingIntent")
        return result
    data = msgspec.to_builtins(current)
    for key in change:
        if key not in data:
            raise ValidationError(key, "unknown_field", f"{key} is not a routing-intent field; use one "
                                  f"of {', '.join(sorted(data))}")
    data.update(msgspec.to_builtins(dict(change)))
    try:
        return msgspec.convert(data, RoutingIntent)
    except msgspec.ValidationError as exc:
        text = str(exc)
        field = text.rsplit("at `$.", 1)[-1].rstrip("`") if "at `$." in text else "$intent"
        raise ValidationError(field, "type", text) from None


def changed_fields(before: RoutingIntent, after: RoutingIntent) -> list[str]:
    a, b = msgspec.to_builtins(before), msgspec.to_builtins(after)
    return sorted(k for k in b if a.get(k) != b[k])


class ControlPlane:
    """Owns the state store, ledger, snapshot cache and ADS server of one MESH_HOME."""

    def __init__(self, settings: Settings, *, ack_timeout: float = ACK_TIMEOUT_S,
                 bus: EventBus | None = None, build: SnapshotBuilder = build_snapshots) -> None:
        self.settings = settings
        self._build_snapshots = build  # the xDS builders; tests inject faulty ones to prove refusals
        self.topology = Topology.from_settings(settings)
        self.ack_timeout = ack_timeout
        self.store = StateStore(settings)
        self.bus = bus or EventBus(settings.nats_url, "control-plane")
        self.ledger = Ledger(settings.state_dir, self.bus)
        self.metrics = ControlPlaneMetrics()
        self.probe = ServiceProbe(settings)
        self.cache = SnapshotCache()
        self.ads = AdsServer(self.cache, self)
        self.ads_port: int | None = None
        self.started_monotonic = time.monotonic()
        self._apply_lock = asyncio.Lock()
        # Decisions whose ACKs were still pending when apply() returned: version -> (seq, nodes).
        self._pending: dict[str, tuple[int, list[str]]] = {}
        self._nacked: set[tuple[str, str]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._settle_scheduled = False
        self._known_nodes = frozenset(node_ids(self.topology))
        self._running = False

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Lock the state, resume the persisted intent under a new version, serve ADS."""
        self.store.lock()
        try:
            self.ledger.open()  # after the lock: only the owner may repair a torn tail
            await self.bus.start()
            await self._resume()
            self.ads_port = await self.ads.start(self.settings.bind_host, self.settings.ports.ads)
        except BaseException:
            await self._close_bus(1.0)
            self.store.unlock()
            raise
        self._running = True
        self._spawn(ensure_streams_when_nats_answers(self.settings.nats_url), "jetstream-streams")
        log.info("control plane up: ADS on %s:%s, intent version %s", self.settings.host,
                 self.ads_port, self.store.version)

    async def _resume(self) -> None:
        # A fresh version for the same intent: every Envoy that reconnects sees a number higher than
        # anything a previous incarnation pushed, so nothing it holds looks newer than our snapshot.
        intent = self.store.intent
        snapshots = self._build(intent, self.store.version + 1)
        version = self.store.commit(intent)
        self._push(snapshots)
        decision = self.ledger.append(Decision(
            actor="control_plane", action="resume", rule="startup",
            reason="control plane started; the persisted intent was republished under a new version",
            xds_version=str(version), acked=None, nodes={}))
        self._remember_pending(str(version), decision.seq, [])
        self._count_decision(decision)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def stop(self, grace: float = 2.0) -> None:
        """End the ADS streams cleanly, drain the event bus, release the state lock."""
        self._running = False
        for task in list(self._background):
            task.cancel()
        if self._background:
            # Bounded: a task inside nats-py's connect() may not honour a cancel at once.
            await asyncio.wait(list(self._background), timeout=grace)
        try:
            await self.ads.stop(grace)
        finally:
            await self._close_bus(grace + 1.0)
            self.store.persist()
            self.store.unlock()

    async def _close_bus(self, within: float) -> None:
        """Drain the event bus, bounded: nats-py's connect() can sit on a cancel for a while."""
        closing = asyncio.create_task(self.bus.close())
        done, _ = await asyncio.wait({closing}, timeout=within)
        if not done:
            log.warning("the event bus did not close within %.1fs; unsent events are dropped", within)

    # ---- the one change path -----------------------------------------------------------------
    async def apply(self, intent_change: IntentChange, *, actor: str, rule: str, reason: str,
                    trigger_ids: list[str] | None = None, numbers: Mapping[str, float] | None = None,
                    action: str | None = None) -> Decision:
        """Change the intent, push it, wait for ACKs (bounded) and record the decision."""
        async with self._apply_lock:
            decision = await self._apply_locked(intent_change, actor=actor, rule=rule, reason=reason,
                                                trigger_ids=trigger_ids, numbers=numbers, action=action)
            if decision.acked is False and action != "revert":
                await self._revert_after_nack(decision)
            return decision

    async def _apply_locked(self, intent_change: IntentChange, *, actor: str, rule: str, reason: str,
                            trigger_ids: list[str] | None, numbers: Mapping[str, float] | None,
                            action: str | None) -> Decision:
        current = self.store.intent
        if current.frozen and actor in FROZEN_ACTORS:
            raise IntentFrozenError(f"automation is frozen by the operator, so the {actor} changes "
                                    "nothing; POST /api/v1/unfreeze to let it act again")
        intent = merge_intent(current, intent_change)
        action = action or ("set_" + "+".join(changed_fields(current, intent)) if
                            changed_fields(current, intent) else "republish")
        expected = self.store.version + 1
        snapshots = self._build(intent, expected)  # refuses before anything changes
        connected = self._connected_nodes()
        # Durable before any Envoy can see the version; fsync in a worker so streams keep flowing.
        version = await asyncio.to_thread(self.store.commit, intent)
        if version != expected:  # only apply() commits, under its lock: this would be a bug
            raise RuntimeError(f"state version moved from {expected - 1} to {version} during a change")
        self._push(snapshots)
        states = await self._wait_acks(str(version), connected)
        acked = _overall(states)
        decision = self.ledger.append(Decision(
            actor=actor, action=action, rule=rule, reason=reason, trigger_ids=list(trigger_ids or []),
            numbers={k: float(v) for k, v in (numbers or {}).items()}, xds_version=str(version),
            acked=acked, nodes=states))
        self._count_decision(decision)
        if acked:
            self._mark_good(version, intent)
        elif acked is None:
            self._remember_pending(str(version), decision.seq, connected)
        return decision

    def _mark_good(self, version: int, intent: RoutingIntent) -> None:
        # Memory now, disk with the next commit or at shutdown: no extra fsync per change. After a
        # kill -9 the file's last good lags by at most one change, and the restart's first ACK
        # marks a newer one anyway.
        self.store.mark_good(version, intent, durable=False)

    def _remember_pending(self, version: str, seq: int, nodes: list[str]) -> None:
        self._pending[version] = (seq, nodes)
        while len(self._pending) > MAX_PENDING:  # Envoys that never come back: forget the oldest
            del self._pending[next(iter(self._pending))]

    async def _revert_after_nack(self, nacked: Decision) -> None:
        good = self.store.last_good
        if good is None:
            log.warning("version %s was NACKed and there is no last good intent to go back to",
                        nacked.xds_version)
            return
        await self._apply_locked(
            good.intent, actor="control_plane", rule="nack_revert",
            reason=f"an Envoy rejected version {nacked.xds_version} (decision {nacked.seq}); back to "
                   f"the intent of last good version {good.version}",
            trigger_ids=[nacked.id], numbers={"nacked_version": float(nacked.xds_version or 0)},
            action="revert")

    def _build(self, intent: RoutingIntent, version: int) -> Mapping[str, Snapshot]:
        try:
            snapshots = self._build_snapshots(intent, self.topology, version)
            for node, snap in snapshots.items():
                snap.check_consistency(node)
        except InconsistentSnapshotError as exc:
            self.metrics.refused.inc()
            log.warning("refused an intent change: %s", exc)
            raise SnapshotRefusedError(f"refused: {exc} Nothing was changed.") from None
        except (ValueError, KeyError, TypeError) as exc:
            self.metrics.refused.inc()
            log.warning("refused an intent change: %s", exc)
            raise SnapshotRefusedError(f"refused: this intent cannot be built into a consistent snapshot "
                                       f"({exc}); nothing was changed") from None
        return snapshots

    def _push(self, snapshots: Mapping[str, Snapshot]) -> None:
        for node, snap in snapshots.items():
            self.cache.set_snapshot(node, snap)
        self.metrics.snapshot_version.set(self.store.version)

    async def _wait_acks(self, version: str, nodes: list[str]) -> dict[str, str]:
        if not nodes:
            return {}
        return dict(await self.cache.wait_acked(version, nodes, self.ack_timeout))

    def _connected_nodes(self) -> list[str]:
        return sorted(node for node, st in self.cache.node_status().items() if st.connected)

    def _count_decision(self, decision: Decision) -> None:
        self.metrics.decisions.labels(decision.actor, decision.action).inc()

    # ---- xDS callbacks (control_plane.xds.stream.XdsCallbacks; never raise into a stream) -------
    def _label(self, node: str) -> str:
        # Known roles only (a replica counts under its role, e.g. pod edge-7d9f under `edge`): a fleet
        # of simulated streams must not explode metric cardinality.
        role = self.cache.snapshot_key(node)
        return role if role in self._known_nodes else "other"

    def _refresh_connected(self) -> None:
        # A role is connected while at least one of its replicas holds a stream.
        for role in self._known_nodes:
            self.metrics.node_connected.labels(role).set(1 if self.cache.replicas(role) else 0)

    def on_stream_open(self, node: str, stream_id: int) -> None:
        self._refresh_connected()

    def on_stream_close(self, node: str, stream_id: int) -> None:
        self._refresh_connected()

    def on_push(self, node: str, type_url: str, version: str, nonce: str) -> None:
        self.metrics.pushes.labels(self._label(node), short(type_url)).inc()
        self.bus.publish(subjects.xds("pushed"), XdsEvent(node=node, type_url=type_url, version=version,
                                                          nonce=nonce))

    def on_ack(self, node: str, type_url: str, version: str, nonce: str, latency_ms: float) -> None:
        self.metrics.push_ack_seconds.labels(self._label(node), short(type_url)).observe(latency_ms / 1000)
        self.bus.publish(subjects.xds("acked"), XdsEvent(node=node, type_url=type_url, version=version,
                                                         nonce=nonce, latency_ms=latency_ms))
        self._schedule_settle()

    def on_nack(self, node: str, type_url: str, version: str, nonce: str, error_detail: str) -> None:
        """A rejected push: an event, a counter, and one ledger entry per node and version."""
        self.metrics.nacks.labels(self._label(node), short(type_url)).inc()
        self.bus.publish(subjects.xds("nacked"), XdsEvent(node=node, type_url=type_url, version=version,
                                                          nonce=nonce, error=error_detail))
        key = (node, version)
        if key in self._nacked:
            return
        self._nacked.add(key)
        detail = " ".join(error_detail.split())  # Envoy's message spans lines
        decision = self.ledger.append(Decision(
            actor="envoy", action="nack", rule="envoy_rejected_config",
            reason=f"{node} rejected {short(type_url)} of version {version}: {detail}",
            xds_version=version, acked=False, nodes={node: "nack"}))
        self._count_decision(decision)
        self._schedule_settle()

    def _schedule_settle(self) -> None:
        # Coalesced: one status sweep per 50 ms however many streams ACK (1,000 simulated nodes).
        if self._pending and not self._settle_scheduled:
            self._settle_scheduled = True
            asyncio.get_running_loop().call_later(SETTLE_DELAY_S, self._settle_pending)

    def _settle_pending(self) -> None:
        """Late ACKs: a decision recorded as pending becomes acked once its nodes ACKed it."""
        self._settle_scheduled = False
        status = self.cache.node_status()
        for version, (seq, nodes) in list(self._pending.items()):
            watch = nodes or sorted(n for n, st in status.items() if st.connected)
            if not watch:
                continue
            states = {n: _node_state(status.get(n), version) for n in watch}
            overall = _overall(states)
            if overall is None:
                continue
            del self._pending[version]
            self.ledger.update_ack(seq, overall, states)
            if overall and int(version) == self.store.version:
                self._mark_good(int(version), self.store.intent)

    # ---- reading -------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Intent, effective weights, versions and per-node xDS state (services are added by the API)."""
        intent = self.store.intent
        good = self.store.last_good
        nodes = {}
        for node, st in self.cache.node_status().items():
            nodes[node] = _node_view(st, str(self.store.version))
        return {
            "intent": msgspec.to_builtins(intent),
            "effective_weights": intent.effective_weights(),
            "frozen": intent.frozen,
            "version": self.store.version,
            "last_good_version": good.version if good else None,
            "nodes": nodes,
            "ledger": {"last_seq": self.ledger.last_seq},
            "events": {"connected": self.bus.connected, "published": self.bus.published,
                       "dropped": self.bus.dropped},
            "ads": {"host": self.settings.host, "port": self.ads_port},
        }

    def refresh_metrics(self) -> None:
        self.metrics.snapshot_version.set(self.store.version)
        good = self.store.last_good
        self.metrics.last_good_version.set(good.version if good else 0)
        self._refresh_connected()
        self.metrics.events_dropped.set(self.bus.dropped)
        self.metrics.events_published.set(self.bus.published)


# ---- node status helpers ------------------------------------------------------------------------
def _node_state(st: NodeStatus | None, version: str) -> str:
    return "pending" if st is None else st.state(version)


def _node_view(st: NodeStatus, version: str) -> dict[str, Any]:
    view = st.to_dict()
    view.pop("node", None)
    view["state"] = st.state(version)
    view["error"] = st.error_detail
    return view


def _overall(states: Mapping[str, str]) -> bool | None:
    """True: every node ACKed; False: any NACKed; None: none to ask or some still pending."""
    if not states:
        return None
    if any(s == "nack" for s in states.values()):
        return False
    if all(s == "ack" for s in states.values()):
        return True
    return None
