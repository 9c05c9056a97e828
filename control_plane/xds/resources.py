"""xDS type URLs, their push order, and helpers to pack protos into `Any` deterministically."""

from __future__ import annotations

from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from google.protobuf.message import Message

_PREFIX = "type.googleapis.com/"

CLUSTER = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"

# The xDS ordering rules: clusters before their endpoints, listeners before their routes, and
# CDS/EDS before LDS/RDS so a new route never names a cluster Envoy has not seen yet.
PUSH_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
# Types Envoy subscribes to by wildcard (every resource) vs by name (what it asks for).
WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})
SHORT_NAMES = {CLUSTER: "cds", ENDPOINT: "eds", LISTENER: "lds", ROUTE: "rds"}
TYPE_BY_SHORT = {v: k for k, v in SHORT_NAMES.items()}


def short(type_url: str) -> str:
    """`cds`/`eds`/`lds`/`rds` for a known type URL, else the last dotted part."""
    return SHORT_NAMES.get(type_url, type_url.rsplit(".", 1)[-1])


def type_url_of(msg: Message) -> str:
    return _PREFIX + msg.DESCRIPTOR.full_name


def pack(msg: Message) -> any_pb2.Any:
    """Wrap `msg` in an Any with deterministic bytes (Struct maps serialise in a fixed order)."""
    return any_pb2.Any(type_url=type_url_of(msg), value=msg.SerializeToString(deterministic=True))


def unpack(anything: any_pb2.Any, cls: type[Message]) -> Message:
    """Decode an Any into a new `cls` message (raises ValueError on a type mismatch)."""
    msg = cls()
    if not anything.Unpack(msg):
        raise ValueError(f"expected {cls.DESCRIPTOR.full_name}, got {anything.type_url}")
    return msg


def seconds(value: float) -> duration_pb2.Duration:
    """A Duration from (possibly fractional) seconds."""
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(value * 1e9))
    return d


def u32(value: int) -> wrappers_pb2.UInt32Value:
    return wrappers_pb2.UInt32Value(value=value)
