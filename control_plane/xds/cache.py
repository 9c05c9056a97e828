"""SnapshotCache: what each node should run, and what each node has ACKed or NACKed.

The cache holds one Snapshot per node id and the per-node, per-type delivery status the ADS
server reports into it. It never talks to the network: the server (server.py) watches it.
All methods run on the event loop's thread.

Status semantics: a type's `acked_version` is the newest snapshot version the node is known to
run for that type. It moves on a real ACK, and also when a new snapshot leaves that type's
content unchanged (the node already runs it, so nothing is re-sent). A node has ACKed version V
when every type it subscribes to (always CDS and LDS) is at V or newer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from control_plane.xds.resources import CLUSTER, LISTENER, PUSH_ORDER, short
from control_plane.xds.snapshot import Snapshot

ALWAYS_SUBSCRIBED = (CLUSTER, LISTENER)  # every Envoy with ADS asks for these


def version_at_least(have: str | None, want: str) -> bool:
    """True when `have` is `want` or newer (numeric versions compare as numbers)."""
    if have is None:
        return False
    if have.isdigit() and want.isdigit():
        return int(have) >= int(want)
    return have == want


@dataclass(frozen=True)
class NackInfo:
    version: str  # our version that was rejected
    error_detail: str  # Envoy's message
    nonce: str
    at: float  # time.time()


@dataclass
class _TypeState:
    subscribed: bool = False
    names: frozenset[str] | None = None  # None: wildcard
    acked_version: str | None = None
    acked_digest: bytes | None = None
    envoy_version: str | None = None  # version_info in Envoy's last ACK
    nack: NackInfo | None = None
    nacked_digest: bytes | None = None
    pushed_version: str | None = None


@dataclass
class _NodeState:
    streams: int = 0
    connected_since: float | None = None
    last_disconnect: float | None = None
    types: dict[str, _TypeState] = field(default_factory=lambda: {t: _TypeState() for t in PUSH_ORDER})
    pushes: int = 0
    acks: int = 0
    nacks: int = 0


@dataclass(frozen=True)
class NodeStatus:
    """A read-only view of one node's xDS state (from `SnapshotCache.node_status()`)."""

    node: str
    connected: bool
    streams: int
    snapshot_version: str | None  # what the cache holds for the node
    acked_version: str | None  # the oldest per-type ACKed version, once every required type ACKed
    acked: dict[str, str | None]  # per type (cds/eds/lds/rds): newest version known to run
    envoy_versions: dict[str, str | None]  # per type: version_info of Envoy's last ACK
    nacked: dict[str, NackInfo]  # per type: the last rejection not superseded by a newer ACK
    nacked_version: str | None
    error_detail: str | None
    subscribed: tuple[str, ...]
    pushes: int
    acks: int
    nacks: int

    def state(self, version: str) -> str:
        """`ack`, `nack` or `pending` for `version` on this node."""
        return _state_of(self.acked, self.nacked, self.subscribed, version)

    def to_dict(self) -> dict[str, object]:
        return {
            "node": self.node, "connected": self.connected, "streams": self.streams,
            "snapshot_version": self.snapshot_version, "acked_version": self.acked_version,
            "acked": dict(self.acked), "envoy_versions": dict(self.envoy_versions),
            "nacked": {t: {"version": n.version, "error_detail": n.error_detail, "nonce": n.nonce,
                           "at": n.at} for t, n in self.nacked.items()},
            "nacked_version": self.nacked_version, "error_detail": self.error_detail,
            "subscribed": list(self.subscribed), "pushes": self.pushes, "acks": self.acks,
            "nacks": self.nacks,
        }


def _state_of(acked: dict[str, str | None], nacked: dict[str, NackInfo], subscribed: Iterable[str],
              version: str) -> str:
    required = {short(t) for t in ALWAYS_SUBSCRIBED} | set(subscribed)
    if any(t in nacked and nacked[t].version == version and not version_at_least(acked.get(t), version)
           for t in required):
        return "nack"
    if all(version_at_least(acked.get(t), version) for t in required):
        return "ack"
    return "pending"


@dataclass(eq=False)  # identity hash: waiters live in a set
class _Waiter:
    version: str
    pending: set[str]
    changed: set[str] = field(default_factory=set)
    event: asyncio.Event = field(default_factory=asyncio.Event)


class SnapshotCache:
    """Snapshots by node id plus delivery status; the ADS server streams from it."""

    def __init__(self) -> None:
        self._snapshots: dict[str, Snapshot] = {}
        self._nodes: dict[str, _NodeState] = {}
        self._watchers: dict[str, set[Callable[[], None]]] = {}
        self._waiters: set[_Waiter] = set()

    # ---- snapshots --------------------------------------------------------------------------
    def set_snapshot(self, node: str, snapshot: Snapshot) -> None:
        """Publish `snapshot` for `node` (raises InconsistentSnapshotError; nothing changes then)."""
        snapshot.check_consistency(node)
        self._snapshots[node] = snapshot
        state = self._node(node)
        for type_url, ts in state.types.items():
            digest = snapshot.digest(type_url, ts.names)
            if ts.acked_digest is not None and digest == ts.acked_digest:
                ts.acked_version = snapshot.version  # the node already runs this content
            if ts.nacked_digest is not None and digest == ts.nacked_digest and ts.nack is not None:
                ts.nack = NackInfo(snapshot.version, ts.nack.error_detail, ts.nack.nonce, ts.nack.at)
        self._changed(node)
        for wake in list(self._watchers.get(node, ())):
            wake()

    def snapshot(self, node: str) -> Snapshot | None:
        return self._snapshots.get(node)

    def clear_snapshot(self, node: str) -> None:
        """Forget a node (its status too); open streams keep what they have."""
        self._snapshots.pop(node, None)
        self._nodes.pop(node, None)

    def nodes(self) -> list[str]:
        """Node ids with a snapshot."""
        return sorted(self._snapshots)

    # ---- streams (called by the ADS server) -----------------------------------------------
    def watch(self, node: str, wake: Callable[[], None]) -> Callable[[], None]:
        """Call `wake()` whenever `node`'s snapshot changes; returns the function that stops it."""
        self._watchers.setdefault(node, set()).add(wake)
        return lambda: self._watchers.get(node, set()).discard(wake)

    def stream_opened(self, node: str) -> None:
        state = self._node(node)
        state.streams += 1
        if state.streams == 1:
            state.connected_since = time.time()
            # A new connection subscribes afresh; what it asks for is recorded as it asks.
            for ts in state.types.values():
                ts.subscribed = False
        self._changed(node)

    def stream_closed(self, node: str) -> None:
        state = self._node(node)
        state.streams = max(0, state.streams - 1)
        if state.streams == 0:
            state.connected_since = None
            state.last_disconnect = time.time()
        self._changed(node)

    def record_subscription(self, node: str, type_url: str, names: frozenset[str] | None,
                            subscribed: bool = True) -> None:
        ts = self._node(node).types[type_url]
        ts.subscribed, ts.names = subscribed, names
        self._changed(node)

    def record_push(self, node: str, type_url: str, version: str) -> None:
        state = self._node(node)
        state.pushes += 1
        state.types[type_url].pushed_version = version

    def record_ack(self, node: str, type_url: str, version: str, digest: bytes,
                   envoy_version: str) -> None:
        state = self._node(node)
        state.acks += 1
        ts = state.types[type_url]
        ts.acked_digest, ts.envoy_version = digest, envoy_version
        if not version_at_least(ts.acked_version, version):
            ts.acked_version = version
        current = self._snapshots.get(node)
        if (current is not None and current.digest(type_url, ts.names) == digest
                and not version_at_least(ts.acked_version, current.version)):
            ts.acked_version = current.version
        self._changed(node)

    def record_nack(self, node: str, type_url: str, version: str, digest: bytes, error_detail: str,
                    nonce: str) -> None:
        state = self._node(node)
        state.nacks += 1
        ts = state.types[type_url]
        ts.nacked_digest = digest
        ts.nack = NackInfo(version, error_detail, nonce, time.time())
        current = self._snapshots.get(node)
        if current is not None and current.digest(type_url, ts.names) == digest:
            ts.nack = NackInfo(current.version, error_detail, nonce, ts.nack.at)
        self._changed(node)

    def nacked_digest(self, node: str, type_url: str) -> bytes | None:
        """Content this node rejected for `type_url` (the server does not send it again)."""
        state = self._nodes.get(node)
        return state.types[type_url].nacked_digest if state else None

    # ---- status -----------------------------------------------------------------------------
    def node_status(self) -> dict[str, NodeStatus]:
        """Every known node (with a snapshot or a stream): connection, ACKs, NACKs."""
        return {node: self._status(node) for node in sorted(set(self._nodes) | set(self._snapshots))}

    def _status(self, node: str) -> NodeStatus:
        state = self._node(node)
        acked = {short(t): ts.acked_version for t, ts in state.types.items()}
        nacked = {short(t): ts.nack for t, ts in state.types.items()
                  if ts.nack is not None and not version_at_least(ts.acked_version, ts.nack.version)}
        subscribed = tuple(short(t) for t, ts in state.types.items() if ts.subscribed)
        required = {short(t) for t in ALWAYS_SUBSCRIBED} | set(subscribed)
        versions = [acked[t] for t in required]
        full = None
        if all(v is not None for v in versions):
            full = min(versions, key=lambda v: (int(v) if v and v.isdigit() else 0, v or ""))
        last_nack = max(nacked.values(), key=lambda n: n.at, default=None)
        snap = self._snapshots.get(node)
        return NodeStatus(
            node=node, connected=state.streams > 0, streams=state.streams,
            snapshot_version=snap.version if snap else None, acked_version=full, acked=acked,
            envoy_versions={short(t): ts.envoy_version for t, ts in state.types.items()},
            nacked=nacked, nacked_version=last_nack.version if last_nack else None,
            error_detail=last_nack.error_detail if last_nack else None, subscribed=subscribed,
            pushes=state.pushes, acks=state.acks, nacks=state.nacks)

    def state_of(self, node: str, version: str) -> str:
        """`ack`, `nack` or `pending` for one node and version."""
        state = self._nodes.get(node)
        if state is None:
            return "pending"
        result = "ack"
        for type_url, ts in state.types.items():  # hot path: one call per ACK while waiting
            if not ts.subscribed and type_url not in ALWAYS_SUBSCRIBED:
                continue
            if version_at_least(ts.acked_version, version):
                continue
            if ts.nack is not None and ts.nack.version == version:
                return "nack"
            result = "pending"
        return result

    async def wait_acked(self, version: str | int, nodes: Iterable[str] | None = None,
                         timeout: float = 5.0) -> dict[str, str]:  # noqa: ASYNC109 - API
        """Wait until every node ACKed or NACKed `version` (or `timeout` s passed).

        Returns node -> "ack" | "nack" | "pending". `nodes` defaults to every node with a snapshot.
        """
        version = str(version)
        wanted = sorted(self._snapshots) if nodes is None else list(nodes)
        result = {n: self.state_of(n, version) for n in wanted}
        waiter = _Waiter(version, {n for n, s in result.items() if s == "pending"})
        if not waiter.pending:
            return result
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        self._waiters.add(waiter)
        try:
            while waiter.pending:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(waiter.event.wait(), remaining)
                except TimeoutError:
                    break
                waiter.event.clear()
                changed, waiter.changed = waiter.changed, set()
                for n in changed:
                    result[n] = self.state_of(n, version)
                    if result[n] != "pending":
                        waiter.pending.discard(n)
        finally:
            self._waiters.discard(waiter)
        return result

    # ---- internals --------------------------------------------------------------------------
    def _node(self, node: str) -> _NodeState:
        state = self._nodes.get(node)
        if state is None:
            state = self._nodes[node] = _NodeState()
        return state

    def _changed(self, node: str) -> None:
        for waiter in self._waiters:
            if node in waiter.pending:
                waiter.changed.add(node)
                waiter.event.set()
