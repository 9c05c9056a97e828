"""Snapshot: one node's consistent, versioned set of xDS resources, serialised once per version.

A snapshot is immutable once built: the ADS server sends the same cached bytes to every
stream that asks for the same resources, so a push to 1,000 Envoys serialises each resource
once, not 1,000 times.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from control_plane.xds.clusters import aggregate_tiers, eds_service_name
from control_plane.xds.listeners import http_connection_manager
from control_plane.xds.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, pack, short
from control_plane.xds.routes import route_clusters
from data_plane.contracts.errors import MeshError

_NAME_FIELD = {CLUSTER: "name", ENDPOINT: "cluster_name", LISTENER: "name", ROUTE: "name"}
_CONTROL_PLANE = "fraud-mesh"


class InconsistentSnapshotError(MeshError, ValueError):
    """A snapshot names something it does not contain; it was not published."""

    def __init__(self, node: str, version: str, errors: list[str]) -> None:
        super().__init__(f"snapshot {version} for {node or 'a node'} is inconsistent: " + "; ".join(errors)
                         + ". Fix the intent (or the builders) and publish again.")
        self.node = node
        self.version = version
        self.errors = errors


@dataclass(frozen=True)
class Payload:
    """What a stream sends for one type: content digest + a serialised response minus its nonce."""

    digest: bytes
    body: bytes
    count: int


def _encode_nonce(nonce: str) -> bytes:
    """Field 5 (nonce) of DiscoveryResponse in wire format; appended to a cached body."""
    raw = nonce.encode()
    length, out = len(raw), bytearray([0x2A])  # (5 << 3) | length-delimited
    while True:
        byte = length & 0x7F
        length >>= 7
        if length:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out) + raw


def response_bytes(payload: Payload, nonce: str) -> bytes:
    """A complete serialised DiscoveryResponse: protobuf fields may come in any order."""
    return payload.body + _encode_nonce(nonce)


class Snapshot:
    """Resources of the four xDS types for one node at one version."""

    def __init__(self, version: str | int, clusters: Iterable[cluster_pb2.Cluster] = (),
                 endpoints: Iterable[endpoint_pb2.ClusterLoadAssignment] = (),
                 listeners: Iterable[listener_pb2.Listener] = (),
                 routes: Iterable[route_pb2.RouteConfiguration] = ()) -> None:
        self.version = str(version)
        self._duplicates: list[str] = []
        self._resources: dict[str, dict[str, Message]] = {}
        for type_url, items in ((CLUSTER, clusters), (ENDPOINT, endpoints), (LISTENER, listeners),
                                (ROUTE, routes)):
            by_name: dict[str, Message] = {}
            for msg in items:
                name = getattr(msg, _NAME_FIELD[type_url])
                if name in by_name:
                    self._duplicates.append(f"{short(type_url)} resource {name!r} appears twice")
                by_name[name] = msg
            self._resources[type_url] = by_name
        self._packed: dict[str, dict[str, any_pb2.Any]] = {}
        self._errors: list[str] | None = None
        self._payloads: dict[tuple[str, frozenset[str] | None], Payload] = {}

    def __repr__(self) -> str:
        counts = ", ".join(f"{short(t)}={len(self._resources[t])}" for t in PUSH_ORDER)
        return f"Snapshot(version={self.version!r}, {counts})"

    # ---- reading ----------------------------------------------------------------------------
    def resources(self, type_url: str) -> Mapping[str, Message]:
        """Resources of one type by name (do not mutate them: their bytes are cached)."""
        return self._resources.get(type_url, {})

    def names(self, type_url: str) -> frozenset[str]:
        return frozenset(self.resources(type_url))

    @property
    def clusters(self) -> Mapping[str, cluster_pb2.Cluster]:
        return self._resources[CLUSTER]  # type: ignore[return-value]

    @property
    def endpoints(self) -> Mapping[str, endpoint_pb2.ClusterLoadAssignment]:
        return self._resources[ENDPOINT]  # type: ignore[return-value]

    @property
    def listeners(self) -> Mapping[str, listener_pb2.Listener]:
        return self._resources[LISTENER]  # type: ignore[return-value]

    @property
    def routes(self) -> Mapping[str, route_pb2.RouteConfiguration]:
        return self._resources[ROUTE]  # type: ignore[return-value]

    # ---- consistency ------------------------------------------------------------------------
    def consistency_errors(self) -> list[str]:
        """Why Envoy would get a dangling reference from this snapshot ([] when consistent)."""
        if self._errors is None:  # immutable: check once, however many nodes share it
            self._errors = self._find_errors()
        return list(self._errors)

    def _find_errors(self) -> list[str]:
        errors = list(self._duplicates)
        clusters = self.clusters
        for cluster in clusters.values():
            for tier in aggregate_tiers(cluster):
                if tier not in clusters:
                    errors.append(f"aggregate cluster {cluster.name!r} names missing cluster {tier!r}")
            service = eds_service_name(cluster)
            if service is not None and service not in self.endpoints:
                errors.append(f"EDS cluster {cluster.name!r} has no ClusterLoadAssignment {service!r}")
        for config in self.routes.values():
            errors += self._missing_route_clusters(f"route config {config.name!r}", config)
        for listener in self.listeners.values():
            hcm = http_connection_manager(listener)
            if hcm is None:
                continue
            if hcm.HasField("rds"):
                if hcm.rds.route_config_name not in self.routes:
                    errors.append(f"listener {listener.name!r} uses missing route config "
                                  f"{hcm.rds.route_config_name!r}")
            elif hcm.HasField("route_config"):
                errors += self._missing_route_clusters(f"listener {listener.name!r}", hcm.route_config)
        return errors

    def _missing_route_clusters(self, where: str, config: route_pb2.RouteConfiguration) -> list[str]:
        return [f"{where} routes to missing cluster {name!r}"
                for name in sorted(route_clusters(config)) if name not in self.clusters]

    def check_consistency(self, node: str = "") -> None:
        """Raise InconsistentSnapshotError listing every dangling reference."""
        errors = self.consistency_errors()
        if errors:
            raise InconsistentSnapshotError(node, self.version, errors)

    # ---- serialisation (once per snapshot) --------------------------------------------------
    def packed(self, type_url: str) -> dict[str, any_pb2.Any]:
        """Resources of one type packed into Any, computed once."""
        cached = self._packed.get(type_url)
        if cached is None:
            cached = {name: pack(msg) for name, msg in sorted(self.resources(type_url).items())}
            self._packed[type_url] = cached
        return cached

    def payload(self, type_url: str, names: frozenset[str] | None = None) -> Payload:
        """The response for `type_url` (all resources, or those in `names`), cached per subset."""
        key = (type_url, names)
        cached = self._payloads.get(key)
        if cached is not None:
            return cached
        packed = self.packed(type_url)
        chosen = [packed[n] for n in sorted(packed) if names is None or n in names]
        digest = hashlib.blake2b(digest_size=16)
        for item in chosen:
            digest.update(len(item.value).to_bytes(4, "big"))
            digest.update(item.value)
        response = discovery_pb2.DiscoveryResponse(
            version_info=self.version, type_url=type_url, resources=chosen,
            control_plane=base_pb2.ControlPlane(identifier=_CONTROL_PLANE))
        cached = Payload(digest.digest(), response.SerializeToString(deterministic=True), len(chosen))
        self._payloads[key] = cached
        return cached

    def digest(self, type_url: str, names: frozenset[str] | None = None) -> bytes:
        """Content digest of what `payload(type_url, names)` carries (version excluded)."""
        return self.payload(type_url, names).digest
