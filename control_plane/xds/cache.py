"""SnapshotCache: what each node should run, and what each node has ACKed or NACKed.

The cache holds one Snapshot per node id and the per-node, per-type delivery status the ADS
server reports into it. It never talks to the network: the server (server.py) watches it.
All methods run on the event loop's thread.

Status semantics: a type's `acked_version` is the newest snapshot version the node is known to
run for that type. It moves on a real ACK, and also when a new snapshot leaves that type's
content unchanged (the node already runs it, so nothing is re-sent). A node has ACKed version V
when every type it subscribes to (always CDS and LDS) is at V or newer.

Roles: snapshots are keyed by node id or by role. A node gets the snapshot of its own id when
there is one, else the snapshot of its role (the `cluster` field of its Envoy node, recorded when
its stream opens). So several replicas of one Envoy (node id = pod name, node.cluster = `edge`)
share one Snapshot object, serialised once, while their ACKs, NACKs and connections are tracked
per node id. On one machine id and role coincide (`edge`, `sidecar-xgboost`). A role key nobody
connected under is listed in `node_status()` only until one of its replicas connects; a replica
served through its role is forgotten `forget_after_s` after its last stream closed (scaled down).
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
    seen: bool = False  # a stream opened under this node id at least once
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
    snapshot_version: str | None  # what the cache holds for the node (its own or its role's)
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
    role: str | None = None  # node.cluster of its Envoy (None until a stream said)
    served_as: str | None = None  # the snapshot key it gets: its own id or its role

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
            "nacks": self.nacks, "role": self.role, "served_as": self.served_as,
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

    def __init__(self, forget_after_s: float = 60.0) -> None:
        self.forget_after_s = forget_after_s
        self._snapshots: dict[str, Snapshot] = {}
        self._nodes: dict[str, _NodeState] = {}
        self._roles: dict[str, str] = {}  # node id -> role (node.cluster), when its Envoy sent one
        self._members: dict[str, set[str]] = {}  # role -> node ids that sent it
        self._watchers: dict[str, set[Callable[[], None]]] = {}
        self._waiters: set[_Waiter] = set()

    # ---- snapshots --------------------------------------------------------------------------
    def set_snapshot(self, node: str, snapshot: Snapshot) -> None:
        """Publish `snapshot` for `node`, a node id or a role (raises InconsistentSnapshotError;
        nothing changes then). Every node served by it is updated and woken."""
        snapshot.check_consistency(node)
        self._snapshots[node] = snapshot
        served = [node, *(n for n in self._members.get(node, ()) if n != node and n not in self._snapshots)]
        for member in served:
            state = self._node(member)
            for type_url, ts in state.types.items():
                digest = snapshot.digest(type_url, ts.names)
                if ts.acked_digest is not None and digest == ts.acked_digest:
                    ts.acked_version = snapshot.version  # the node already runs this content
                if ts.nacked_digest is not None and digest == ts.nacked_digest and ts.nack is not None:
                    ts.nack = NackInfo(snapshot.version, ts.nack.error_detail, ts.nack.nonce, ts.nack.at)
            self._changed(member)
        for member in served:
            for wake in list(self._watchers.get(member, ())):
                wake()

    def snapshot_key(self, node: str) -> str:
        """The key whose snapshot `node` gets: its own id if it has one, else its role's."""
        if node in self._snapshots:
            return node
        role = self._roles.get(node)
        return role if role is not None and role in self._snapshots else node

    def snapshot(self, node: str) -> Snapshot | None:
        """The snapshot `node` runs: its own, else its role's (None when neither is set)."""
        return self._snapshots.get(self.snapshot_key(node))

    def role_of(self, node: str) -> str | None:
        """The role (node.cluster) node `node` connected with, or None."""
        return self._roles.get(node)

    def replicas(self, key: str) -> list[str]:
        """Connected node ids served by snapshot key `key` (itself and the replicas of its role)."""
        candidates = {key, *self._members.get(key, ())}
        return sorted(n for n in candidates if n in self._nodes and self._nodes[n].streams > 0
                      and self.snapshot_key(n) == key)

    def clear_snapshot(self, node: str) -> None:
        """Forget a node (its status too); open streams keep what they have."""
        self._snapshots.pop(node, None)
        self._forget(node)

    def nodes(self) -> list[str]:
        """Snapshot keys: node ids and roles with a snapshot."""
        return sorted(self._snapshots)

    # ---- streams (called by the ADS server) -----------------------------------------------
    def watch(self, node: str, wake: Callable[[], None]) -> Callable[[], None]:
        """Call `wake()` whenever `node`'s snapshot changes; returns the function that stops it."""
        self._watchers.setdefault(node, set()).add(wake)
        return lambda: self._watchers.get(node, set()).discard(wake)

    def stream_opened(self, node: str, role: str | None = None) -> None:
        """A stream of `node` opened; `role` is its Envoy's node.cluster (empty: none)."""
        state = self._node(node)
        state.seen = True
        if role and self._roles.get(node) != role:
            self._members.get(self._roles.get(node, ""), set()).discard(node)
            self._roles[node] = role
            self._members.setdefault(role, set()).add(node)
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
        current = self.snapshot(node)
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
        current = self.snapshot(node)
        if current is not None and current.digest(type_url, ts.names) == digest:
            ts.nack = NackInfo(current.version, error_detail, nonce, ts.nack.at)
        self._changed(node)

    def nacked_digest(self, node: str, type_url: str) -> bytes | None:
        """Content this node rejected for `type_url` (the server does not send it again)."""
        state = self._nodes.get(node)
        return state.types[type_url].nacked_digest if state else None

    # ---- status -----------------------------------------------------------------------------
    def node_status(self) -> dict[str, NodeStatus]:
        """Every known node (with a snapshot or a stream): connection, ACKs, NACKs.

        A role key that no Envoy connected under is listed (disconnected) only while none of its
        replicas has connected; replicas gone longer than `forget_after_s` are dropped."""
        self._prune()
        keys = set(self._nodes) | set(self._snapshots)
        return {node: self._status(node) for node in sorted(keys) if not self._placeholder(node)}

    def _placeholder(self, key: str) -> bool:
        """A role key nobody connected under, whose replicas (connected under ids) stand for it."""
        state = self._nodes.get(key)
        if state is not None and state.seen:
            return False
        return any(n != key and self.snapshot_key(n) == key for n in self._members.get(key, ()))

    def _prune(self) -> None:
        """Forget replicas served through their role that have been gone for forget_after_s."""
        now = time.time()
        stale = [n for n, st in self._nodes.items()
                 if n not in self._snapshots and n in self._roles and st.streams == 0
                 and st.last_disconnect is not None and now - st.last_disconnect > self.forget_after_s]
        for node in stale:
            self._forget(node)

    def _forget(self, node: str) -> None:
        self._nodes.pop(node, None)
        role = self._roles.pop(node, None)
        if role is not None:
            self._members.get(role, set()).discard(node)

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
        key = self.snapshot_key(node)
        snap = self._snapshots.get(key)
        return NodeStatus(
            node=node, connected=state.streams > 0, streams=state.streams,
            snapshot_version=snap.version if snap else None, acked_version=full, acked=acked,
            envoy_versions={short(t): ts.envoy_version for t, ts in state.types.items()},
            nacked=nacked, nacked_version=last_nack.version if last_nack else None,
            error_detail=last_nack.error_detail if last_nack else None, subscribed=subscribed,
            pushes=state.pushes, acks=state.acks, nacks=state.nacks, role=self._roles.get(node),
            served_as=key if snap is not None else None)

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

        Returns node -> "ack" | "nack" | "pending". `nodes` defaults to every snapshot key, a role
        standing for its connected replicas (by node id) once it has any.
        """
        version = str(version)
        wanted = self._default_targets() if nodes is None else list(nodes)
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

    def _default_targets(self) -> list[str]:
        wanted: set[str] = set()
        for key in self._snapshots:
            # Nobody connected yet: the key itself stands in (pending), as a node id always did.
            wanted.update(self.replicas(key) or [key])
        return sorted(wanted)

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
