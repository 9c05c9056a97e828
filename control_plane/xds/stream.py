"""One ADS stream's protocol state (state of the world): subscriptions, nonces, ACK/NACK.

Pure logic, no gRPC: `AdsStream.on_request()` and `on_snapshot_change()` return the serialised
responses to send, so the rules are testable without a network. server.py does the I/O.

Rules kept here (xDS protocol, Envoy 1.40):
- Every response gets a fresh nonce. A request echoing the latest nonce of its type with an
  `error_detail` is a NACK (its version_info is the old version); without one it is an ACK.
- Requests with a stale nonce only settle that older response; they change no subscription.
- CDS/LDS are wildcard; EDS/RDS carry the names Envoy wants (clusters warming, route configs
  its listeners use); an empty EDS/RDS list unsubscribes.
- On a new snapshot, types go out in the order CDS, EDS, LDS, RDS, and only those whose
  content changed; EDS follows any CDS push and RDS any LDS push, so re-created clusters and
  listeners finish warming.
- Content a node NACKed is not sent to it again (the node keeps its last good config).
- The node id names the node (ACK/NACK state); node.cluster names its role: a node without a
  snapshot of its own gets its role's (cache.py), so replicas need distinct ids, not configs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from control_plane.xds.cache import SnapshotCache
from control_plane.xds.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, WILDCARD_TYPES
from control_plane.xds.snapshot import response_bytes

log = logging.getLogger(__name__)


class XdsCallbacks:
    """Observability hooks the ADS server calls; every method is optional (default: nothing).

    Pass any object with some of these methods to `AdsServer(cache, callbacks)`.
    Exceptions raised in a callback are logged and never break a stream.
    """

    def on_stream_open(self, node: str, stream_id: int) -> None: ...

    def on_stream_close(self, node: str, stream_id: int) -> None: ...

    def on_push(self, node: str, type_url: str, version: str, nonce: str) -> None: ...

    def on_ack(self, node: str, type_url: str, version: str, nonce: str, latency_ms: float) -> None: ...

    def on_nack(self, node: str, type_url: str, version: str, nonce: str, error_detail: str) -> None: ...


def fire(callbacks: Any, name: str, *args: Any) -> None:
    """Call `callbacks.<name>(*args)` if it exists; log (never raise) what it raises."""
    method = getattr(callbacks, name, None) if callbacks is not None else None
    if method is None:
        return
    try:
        method(*args)
    except Exception:
        log.exception("xDS callback %s failed", name)


class StreamError(Exception):
    """The peer broke the protocol (e.g. no node id in its first request)."""


@dataclass
class _Sent:
    type_url: str
    version: str
    digest: bytes
    at: float


@dataclass
class _TypeSub:
    names: frozenset[str] | None = None
    subscribed: bool = False
    last_nonce: str | None = None
    sent_digest: bytes | None = None
    sent_version: str | None = None


class AdsStream:
    """The server side of one StreamAggregatedResources call."""

    def __init__(self, stream_id: int, cache: SnapshotCache, callbacks: Any = None) -> None:
        self.stream_id = stream_id
        self.cache = cache
        self.callbacks = callbacks
        self.node: str | None = None
        self.role: str | None = None  # node.cluster: replicas sharing it share the role's snapshot
        self._subs: dict[str, _TypeSub] = {t: _TypeSub() for t in PUSH_ORDER}
        self._inflight: dict[str, _Sent] = {}
        self._nonce = 0

    # ---- requests ---------------------------------------------------------------------------
    def on_request(self, req: discovery_pb2.DiscoveryRequest) -> list[bytes]:
        """Handle one DiscoveryRequest; return the responses to send (maybe none)."""
        if self.node is None:
            if not req.node.id:
                raise StreamError("the first DiscoveryRequest must carry node.id")
            self.node, self.role = req.node.id, req.node.cluster or None
            self.cache.stream_opened(self.node, self.role)
            fire(self.callbacks, "on_stream_open", self.node, self.stream_id)
        sub = self._subs.get(req.type_url)
        if sub is None:
            log.debug("node %s asked for unsupported type %s", self.node, req.type_url)
            return []
        if req.response_nonce:
            self._settle(req)
            if sub.last_nonce is not None and req.response_nonce != sub.last_nonce:
                return []  # stale: a newer response of this type is on its way
            # (a nonce we never issued on this stream, e.g. another server's: a fresh request)
        names = self._requested_names(req)
        if names is not None and not names and req.type_url not in WILDCARD_TYPES:
            sub.subscribed, sub.names = False, None  # Envoy dropped every resource of this type
            self.cache.record_subscription(self.node, req.type_url, None, subscribed=False)
            return []
        first = not sub.subscribed
        if first or names != sub.names:
            sub.subscribed, sub.names = True, names
            self.cache.record_subscription(self.node, req.type_url, names)
            out = self._respond(req.type_url, force=True, fresh_peer=not req.version_info)
            return [out] if out is not None else []
        return []

    @staticmethod
    def _requested_names(req: discovery_pb2.DiscoveryRequest) -> frozenset[str] | None:
        names = frozenset(req.resource_names)
        if req.type_url in WILDCARD_TYPES and (not names or "*" in names):
            return None
        return names

    def _settle(self, req: discovery_pb2.DiscoveryRequest) -> None:
        """Record the ACK or NACK of the response this request echoes (once per nonce)."""
        sent = self._inflight.pop(req.response_nonce, None)
        if sent is None or self.node is None:
            return  # unknown nonce (another server's, or already settled)
        if req.HasField("error_detail") and (req.error_detail.message or req.error_detail.code):
            detail = req.error_detail.message or f"code {req.error_detail.code}"
            self.cache.record_nack(self.node, sent.type_url, sent.version, sent.digest, detail,
                                   req.response_nonce)
            # Envoy's detail quotes the whole resource; the log keeps the head and the cause.
            brief = detail if len(detail) <= 600 else f"{detail[:200]} ... {detail[-300:]}"
            log.warning("node %s rejected %s version %s: %s", self.node, sent.type_url, sent.version, brief)
            fire(self.callbacks, "on_nack", self.node, sent.type_url, sent.version,
                 req.response_nonce, detail)
            return
        latency_ms = (time.perf_counter() - sent.at) * 1000.0
        self.cache.record_ack(self.node, sent.type_url, sent.version, sent.digest, req.version_info)
        fire(self.callbacks, "on_ack", self.node, sent.type_url, sent.version, req.response_nonce,
             latency_ms)

    def close(self) -> None:
        """The stream ended: the node counts as disconnected once its last stream closes."""
        if self.node is not None:
            self.cache.stream_closed(self.node)
            fire(self.callbacks, "on_stream_close", self.node, self.stream_id)

    # ---- pushes -----------------------------------------------------------------------------
    def on_snapshot_change(self) -> list[bytes]:
        """The node's snapshot changed: send each subscribed type whose content changed, in order."""
        out: list[bytes] = []
        pushed: set[str] = set()
        for type_url in PUSH_ORDER:
            if not self._subs[type_url].subscribed:
                continue
            force = (type_url == ENDPOINT and CLUSTER in pushed) or (type_url == ROUTE and LISTENER in pushed)
            response = self._respond(type_url, force=force, fresh_peer=False)
            if response is not None:
                out.append(response)
                pushed.add(type_url)
        return out

    def _respond(self, type_url: str, force: bool, fresh_peer: bool) -> bytes | None:
        """Serialised response for `type_url` from the current snapshot, or None to stay quiet."""
        if self.node is None:
            return None
        snap = self.cache.snapshot(self.node)
        if snap is None:
            return None  # nothing to say yet; set_snapshot wakes this stream
        sub = self._subs[type_url]
        payload = snap.payload(type_url, sub.names)
        if not force and payload.digest == sub.sent_digest:
            return None
        if not fresh_peer and payload.digest == self.cache.nacked_digest(self.node, type_url):
            # The node rejected exactly this content before: it keeps its last good config.
            sub.sent_digest = payload.digest
            return None
        self._nonce += 1
        nonce = f"{self.stream_id}-{self._nonce}"
        sub.last_nonce, sub.sent_digest, sub.sent_version = nonce, payload.digest, snap.version
        self._inflight[nonce] = _Sent(type_url, snap.version, payload.digest, time.perf_counter())
        if len(self._inflight) > 64:  # a peer that never answers must not grow this forever
            self._inflight.pop(next(iter(self._inflight)))
        self.cache.record_push(self.node, type_url, snap.version)
        fire(self.callbacks, "on_push", self.node, type_url, snap.version, nonce)
        return response_bytes(payload, nonce)
