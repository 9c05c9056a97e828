"""The xDS core: builders (intent -> Envoy protos), snapshots, the snapshot cache, the ADS server.

API (stable; used by control_plane/app.py and meshctl):

    snapshots = build_snapshots(intent, topo, version)      # {node id: Snapshot}, consistent
    cache = SnapshotCache()
    cache.set_snapshot(node, snapshot)                      # raises InconsistentSnapshotError
    states = await cache.wait_acked(str(version), nodes, timeout)   # {node: "ack"|"nack"|"pending"}
    cache.node_status()                                     # {node: NodeStatus}
    server = AdsServer(cache, callbacks)                    # callbacks: any object with some of
    port = await server.start(host, port)                   #   XdsCallbacks' methods (port 0 ok)
    await server.stop(grace=1.0)
    render_bootstrap(role, node_id, admin_port, ads_host, ads_port, out_path) -> Path

Snapshot keys (roles): `edge`, and `sidecar-xgboost` / `sidecar-pytorch` / `sidecar-heuristic`
when `topo.sidecars` is on (with sidecars off, build_snapshots returns only `edge`). An Envoy
whose node id has no snapshot of its own gets the one of its node.cluster: on one machine node id
= role; Kubernetes replicas connect as `--service-node <pod name> --service-cluster <role>`, each
tracked (ACK/NACK, connection) under its own id. `cache.replicas(role)` lists the connected ones.
`build_snapshots` raises ValueError naming the intent field it cannot build (unknown service,
weight out of range, override host neither an IP nor a DNS name); InconsistentSnapshotError is a
ValueError too.

Addresses (control_plane/topology.py, from Settings): Envoy listeners bind `topo.bind_host`;
upstreams are dialled at their advertised hosts (MESH_HOST_<NAME>). An IP host keeps a model
cluster on EDS; a DNS name (a Kubernetes Service) makes it STRICT_DNS, with no EDS resource.

NodeStatus fields: `role`, `served_as` (the snapshot key it gets),
`connected`, `acked_version` (the version the node fully runs), `acked` and
`envoy_versions` per type (`cds`/`eds`/`lds`/`rds`), `nacked` per type (NackInfo: version,
error_detail), `nacked_version` + `error_detail` (the latest rejection), `state(version)`.

Callback signatures (positional): on_stream_open(node, stream_id), on_stream_close(node,
stream_id), on_push(node, type_url, version, nonce), on_ack(node, type_url, version, nonce,
latency_ms), on_nack(node, type_url, version, nonce, error_detail). `version` is always the
control plane's version that was sent (for a NACK: the rejected one, not Envoy's old one).

A type whose content did not change between versions is not re-sent; the node counts as
running the new version for it (its `acked` moves on), so wait_acked works per version.
Content a node NACKed is never re-sent to it (a newer version with different content is).
Delta xDS is not served (Envoy gets UNIMPLEMENTED); bootstraps use state-of-the-world ADS.

Threading: call the cache and server from the event loop that runs the server (set_snapshot
decides each open stream's pushes synchronously; the streams then write them).

Edge behaviour worth knowing (details in builders.py, fallback.py, routes.py):
- Predict bodies above 64 KiB (batch: 1 MiB) get 413 from the edge.
- When no tier answers, the predict routes return 200 with the conservative default; this covers
  Envoy's own failures (local_reply_config) and a last tier's own 502/503/504 (custom response).
- A mirrored request's Host gets "-shadow" before the port: `127.0.0.1-shadow:8000`.
- Sticky split: with `intent.sticky`, the hash of the `card-id` header picks the weighted cluster
  (requests without it are split at random); the body's `card_id` is not looked at by Envoy.
- render_bootstrap accepts a host name for ads_host (compose: `control-plane`), admin_host="0.0.0.0".
"""

from control_plane.xds.bootstrap import render_bootstrap, validate_bootstrap
from control_plane.xds.builders import (
    EDGE_NODE,
    build_snapshots,
    edge_snapshot,
    node_ids,
    sidecar_node,
    sidecar_snapshot,
)
from control_plane.xds.cache import NackInfo, NodeStatus, SnapshotCache
from control_plane.xds.clusters import BuildOptions
from control_plane.xds.server import AdsServer
from control_plane.xds.snapshot import InconsistentSnapshotError, Snapshot
from control_plane.xds.stream import XdsCallbacks

__all__ = [
    "EDGE_NODE",
    "AdsServer",
    "BuildOptions",
    "InconsistentSnapshotError",
    "NackInfo",
    "NodeStatus",
    "Snapshot",
    "SnapshotCache",
    "XdsCallbacks",
    "build_snapshots",
    "edge_snapshot",
    "node_ids",
    "render_bootstrap",
    "sidecar_node",
    "sidecar_snapshot",
    "validate_bootstrap",
]
