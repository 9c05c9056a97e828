"""k8s/: kustomizations build, manifests are consistent with each other and with the compose stack.

With `kubectl` on PATH the overlays are rendered by its built-in kustomize; without it, resources
are collected in Python (no patches or generators applied) and the same structural checks run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from control_plane.intent import RoutingIntent
from control_plane.topology import Topology
from control_plane.xds import build_snapshots, node_ids
from data_plane.settings import Hosts, Ports, Settings
from tests.unit.test_compose import SERVICES as COMPOSE_SERVICES
from tests.unit.test_compose import _check_python_module

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
BUILDS = ["overlays/local", "base", "jobs/train"]
PORT_OF = {f.name: getattr(Ports(), f.name) for f in fields(Ports)}
NAMESPACE = "fraud-mesh"
CLUSTER_SCOPED = {"Namespace"}


def kustomizations() -> list[Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def python_render(directory: Path) -> list[dict[str, Any]]:
    """Resources of a kustomization and its bases, without patches or generators."""
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    out: list[dict[str, Any]] = []
    for res in k.get("resources", []):
        target = (directory / res).resolve()
        out += python_render(target) if target.is_dir() else load_docs(target)
    for gen in k.get("configMapGenerator", []):
        meta = {"name": gen["name"], **({"namespace": gen["namespace"]} if "namespace" in gen else {})}
        data = {Path(f).name: (directory / f).read_text() for f in gen.get("files", [])}
        data.update(lit.split("=", 1) for lit in gen.get("literals", []))
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    for gen in k.get("secretGenerator", []):
        meta = {"name": gen["name"], **({"namespace": gen["namespace"]} if "namespace" in gen else {})}
        out.append({"apiVersion": "v1", "kind": "Secret", "metadata": meta,
                    "stringData": dict(lit.split("=", 1) for lit in gen.get("literals", []))})
    namespace = k.get("namespace")
    for obj in out:
        if namespace and obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"].setdefault("namespace", namespace)
    return out


def render(build: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return python_render(K8S / build)
    proc = subprocess.run([kubectl, "kustomize", str(K8S / build)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, f"kubectl kustomize {build}: {proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {build: render(build) for build in BUILDS}


def pod_specs(objs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for obj in objs:
        if obj["kind"] in {"Deployment", "StatefulSet", "Job"}:
            yield obj, obj["spec"]["template"]


def containers(objs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj, template in pod_specs(objs):
        for c in template["spec"]["containers"]:
            yield f"{obj['kind']}/{obj['metadata']['name']}/{c['name']}", c


# ---- files -------------------------------------------------------------------------------------------
def test_every_kustomization_references_existing_files() -> None:
    assert kustomizations(), "no kustomization.yaml under k8s/"
    for path in kustomizations():
        k = yaml.safe_load(path.read_text())
        for res in k.get("resources", []):
            target = path.parent / res
            assert target.is_file() or (target / "kustomization.yaml").is_file(), f"{path}: {res}"
        for gen in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
            for f in gen.get("files", []):
                assert (path.parent / f).is_file(), f"{path}: {f}"


def test_every_manifest_parses_and_names_its_kind() -> None:
    files = sorted(K8S.rglob("*.yaml"))
    assert len(files) > 10
    for path in files:
        docs = load_docs(path)
        assert docs, f"{path} is empty"
        if "envoy" in path.parts or path.name == "kustomization.yaml" or "prometheus-adapter" in path.parts:
            continue
        for doc in docs:
            assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), path


def test_envoy_bootstraps_are_the_compose_ones() -> None:
    """One source of truth: the ConfigMap files equal envoy/compose/ (validated by test_compose)."""
    ours = {p.name: p.read_text() for p in (K8S / "base" / "envoy").glob("*.yaml")}
    compose = {p.name: p.read_text() for p in (REPO / "envoy" / "compose").glob("*.yaml")}
    assert ours == compose, "copy envoy/compose/*.yaml to k8s/base/envoy/"


# ---- images and commands -----------------------------------------------------------------------------
def test_images_are_pinned_and_the_same_as_in_compose(rendered: dict[str, list[dict[str, Any]]]) -> None:
    compose_images = {svc["image"] for svc in COMPOSE_SERVICES.values()}
    for build, objs in rendered.items():
        for where, c in containers(objs):
            image = c["image"]
            tag = image.rpartition(":")[2]
            assert tag != "latest" and re.match(r"^v?\d+\.\d+", tag), f"{build} {where}: {image}"
            assert image in compose_images, f"{build} {where}: {image} differs from docker-compose.yml"


def test_project_commands_name_real_modules_and_meshctl_subcommands(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    from meshctl.main import build_parser

    for where, c in containers(rendered["overlays/local"] + rendered["jobs/train"]):
        if not c["image"].startswith("fraud-mesh:"):
            continue
        argv = c["command"] + c.get("args", [])
        if argv[:2] == ["python", "-m"]:
            _check_python_module(argv, where)
        else:
            assert argv[0] == "meshctl", where
            assert getattr(build_parser().parse_args(argv[1:]), "func", None), where


# ---- consistency of the rendered objects -------------------------------------------------------------
def test_objects_live_in_the_mesh_namespace(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for build, objs in rendered.items():
        for obj in objs:
            if obj["kind"] not in CLUSTER_SCOPED:
                assert obj["metadata"].get("namespace") == NAMESPACE, f"{build}: {obj['metadata']['name']}"


def test_workloads_select_their_pods_and_probe_declared_ports(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    for obj, template in pod_specs(rendered["overlays/local"]):
        name = obj["metadata"]["name"]
        labels = template["metadata"]["labels"]
        selector = obj["spec"].get("selector", {}).get("matchLabels", {})
        assert selector and selector.items() <= labels.items(), f"{name}: selector does not match its pods"
        for c in template["spec"]["containers"]:
            ports = {p["name"] for p in c.get("ports", [])}
            assert c["resources"]["requests"].get("cpu"), f"{name}/{c['name']}: no CPU request (HPA)"
            probe = c.get("readinessProbe")
            assert probe, f"{name}/{c['name']}: no readinessProbe"
            if "httpGet" in probe:
                port = probe["httpGet"]["port"]
                assert port in ports or isinstance(port, int), f"{name}/{c['name']}: probe port {port}"
            else:
                assert probe.get("exec", {}).get("command"), f"{name}/{c['name']}: probe checks nothing"


def test_services_route_to_declared_container_ports(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["overlays/local"]
    pods = [t for _, t in pod_specs(objs)]
    for svc in (o for o in objs if o["kind"] == "Service"):
        selected = [t for t in pods if svc["spec"]["selector"].items() <= t["metadata"]["labels"].items()]
        assert selected, f"Service {svc['metadata']['name']} selects no pods"
        names = {p["name"] for t in selected for c in t["spec"]["containers"] for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert isinstance(target, int) or target in names, \
                f"Service {svc['metadata']['name']}: targetPort {target} is not a container port"


def test_references_resolve(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["overlays/local"]
    by_kind: dict[str, set[str]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], set()).add(o["metadata"]["name"])
    for obj, template in pod_specs(objs):
        claim_templates = {t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"] for v in template["spec"].get("volumes", [])} | claim_templates
        for v in template["spec"].get("volumes", []):
            if "configMap" in v:
                assert v["configMap"]["name"] in by_kind["ConfigMap"], v
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in by_kind["PersistentVolumeClaim"], v
        for c in template["spec"]["containers"]:
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes, f"{obj['metadata']['name']}: mount {m['name']}"
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in by_kind["Secret"], f"{obj['metadata']['name']}: {ref['name']}"
    for hpa in (o for o in objs if o["kind"] == "HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] in by_kind["Deployment"]


def config_map(objs: list[dict[str, Any]], name: str) -> dict[str, str]:
    found = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name]
    assert len(found) == 1, f"ConfigMap {name}: {len(found)} found"
    return found[0].get("data", {})


def container_env(objs: list[dict[str, Any]], c: dict[str, Any]) -> dict[str, str]:
    """The plain environment of a container: envFrom ConfigMaps, then env values (no secrets)."""
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env.update(config_map(objs, source["configMapRef"]["name"]))
    env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
    return env


def test_env_uses_settings_variables_and_defines_before_use(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    known = set(re.findall(r'"(MESH_[A-Z_]+)"', (REPO / "data_plane" / "settings.py").read_text()))
    known |= {f"MESH_PORT_{f.upper()}" for f in PORT_OF}
    known |= {f"MESH_HOST_{f.name.upper()}" for f in fields(Hosts)}
    objs = rendered["overlays/local"] + rendered["jobs/train"]
    for where, c in containers(objs):
        defined: set[str] = set()
        for source in c.get("envFrom", []):
            for name in config_map(objs, source["configMapRef"]["name"]):
                assert not name.startswith("MESH_") or name in known, \
                    f"{where}: {name} (envFrom) is not read by data_plane.settings"
                defined.add(name)
        for e in c.get("env", []):
            if e["name"].startswith("MESH_"):
                assert e["name"] in known, f"{where}: {e['name']} is not read by data_plane.settings"
            for ref in re.findall(r"\$\((\w+)\)", e.get("value", "")):
                assert ref in defined, f"{where}: {e['name']} uses $({ref}) before it is defined"
            defined.add(e["name"])
        for ref in re.findall(r"\$\((\w+)\)", " ".join(c.get("command", []) + c.get("args", []))):
            assert ref in defined, f"{where}: command/args use $({ref}), not in env"
    # The addresses are valid for Settings (it refuses bad ones naming the variable).
    for _, c in containers(rendered["overlays/local"]):
        Settings.from_env(container_env(rendered["overlays/local"], c))


def test_ports_are_the_local_defaults(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = {o["metadata"]["name"]: o for o in rendered["base"] if o["kind"] in {"Deployment", "StatefulSet"}}
    expected = {
        "control-plane": {"ads", "operator"}, "edge": {"edge", "edge_admin"},
        "nats": {"nats", "nats_monitor"},
        "xgboost": {"xgboost", "xgboost_challenger", "sidecar_xgboost", "sidecar_xgboost_challenger",
                    "sidecar_admin_xgboost"},
        "pytorch": {"pytorch", "pytorch_challenger", "sidecar_pytorch", "sidecar_pytorch_challenger",
                    "sidecar_admin_pytorch"},
        "heuristic": {"heuristic", "sidecar_heuristic", "sidecar_admin_heuristic"},
    }
    for name, port_fields in expected.items():
        declared = {p["containerPort"] for c in objs[name]["spec"]["template"]["spec"]["containers"]
                    for p in c.get("ports", [])}
        assert declared == {PORT_OF[f] for f in port_fields}, name


def test_model_servers_have_an_envoy_sidecar_on_their_own_bootstrap(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    for kind in ("xgboost", "pytorch", "heuristic"):
        dep = next(o for o in rendered["base"] if o["kind"] == "Deployment" and o["metadata"]["name"] == kind)
        spec = dep["spec"]["template"]["spec"]
        server, envoy = spec["containers"]
        assert server["command"] == ["python", "-m", "model_servers", "--kind", kind]
        assert envoy["image"].startswith("envoyproxy/envoy:") and "--disable-hot-restart" in envoy["command"]
        mount = next(m for m in envoy["volumeMounts"] if m["mountPath"] == "/etc/envoy/bootstrap.yaml")
        assert mount["subPath"] == f"sidecar-{kind}.yaml"
        assert any(p["containerPort"] == PORT_OF[f"sidecar_admin_{kind}"] for p in envoy["ports"])


def test_hpas_scale_model_servers_on_cpu_and_requests_per_second(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    hpas = {o["metadata"]["name"]: o for o in rendered["base"] if o["kind"] == "HorizontalPodAutoscaler"}
    adapter = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    served = {r["name"]["as"] for r in adapter["rules"]["custom"]}
    for kind in ("xgboost", "pytorch", "heuristic"):
        metrics = hpas[kind]["spec"]["metrics"]
        assert {m["type"] for m in metrics} == {"Resource", "Pods"}, kind
        pods = next(m for m in metrics if m["type"] == "Pods")
        assert pods["pods"]["metric"]["name"] in served, "the adapter must serve the HPA's custom metric"
    assert (hpas["xgboost"]["spec"]["minReplicas"], hpas["xgboost"]["spec"]["maxReplicas"]) == (2, 10)
    assert (hpas["pytorch"]["spec"]["minReplicas"], hpas["pytorch"]["spec"]["maxReplicas"]) == (1, 5)


def test_python_render_agrees_with_kubectl_on_the_base() -> None:
    """The fallback renderer (no kubectl) sees the same objects as kustomize for the base."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl absent: the Python renderer is the only one (used by the other tests)")
    ours = {(o["kind"], o["metadata"]["name"]) for o in python_render(K8S / "base")}
    theirs = {(o["kind"], re.sub(r"-[a-z0-9]{10}$", "", o["metadata"]["name"])) for o in render("base")}
    assert ours == theirs


# ---- routing across pods -----------------------------------------------------------------------------
def _control_plane_topology(objs: list[dict[str, Any]]) -> Topology:
    dep = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "control-plane")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return Topology.from_settings(Settings.from_env(container_env(objs, c)))


def _flag(argv: list[str], flag: str) -> str:
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


def test_envoys_connect_as_their_pod_under_their_role(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Replicas get distinct node ids (the pod name) and the config of their role (node cluster)."""
    objs = rendered["overlays/local"]
    roles = set(node_ids(_control_plane_topology(objs)))
    boots = config_map(objs, next(o["metadata"]["name"] for o in objs if o["kind"] == "ConfigMap"
                                  and o["metadata"]["name"].startswith("envoy-bootstraps")))
    seen = set()
    for obj, template in pod_specs(objs):
        for c in template["spec"]["containers"]:
            if not c["image"].startswith("envoyproxy/envoy:"):
                continue
            where = f"{obj['metadata']['name']}/{c['name']}"
            argv = c["command"] + c.get("args", [])
            assert _flag(argv, "--service-node") == "$(POD_NAME)", where
            pod_name = next(e for e in c["env"] if e["name"] == "POD_NAME")
            assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", where
            role = _flag(argv, "--service-cluster")
            assert role in roles, f"{where}: node cluster {role!r} is none of the control plane's {roles}"
            mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/etc/envoy/bootstrap.yaml")
            boot = yaml.safe_load(boots[mount["subPath"]])
            assert boot["node"]["id"] == role, f"{where}: bootstrap {mount['subPath']} is another role's"
            seen.add(role)
    assert seen == roles == {"edge", "sidecar-xgboost", "sidecar-pytorch", "sidecar-heuristic"}


def test_the_control_plane_points_envoys_at_services_that_exist(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Build the real snapshots from the control plane's pod env: listeners bind every interface,
    each upstream is a DNS cluster on a Service of this namespace exposing that port, and a
    sidecar dials its model server inside its own pod."""
    objs = rendered["overlays/local"]
    topo = _control_plane_topology(objs)
    services = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Service"}
    snaps = build_snapshots(RoutingIntent(), topo, 1)
    edge = snaps["edge"]
    assert not edge.endpoints, "an EDS endpoint in a pod would be an IP the control plane cannot know"
    assert edge.listeners["edge"].address.socket_address.address == "0.0.0.0"
    for cluster in edge.clusters.values():
        if not cluster.load_assignment.endpoints:
            continue  # aggregate chains
        sock = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
        name, _, domain = sock.address.partition(".")
        assert domain == f"{NAMESPACE}.svc.cluster.local", f"{cluster.name}: {sock.address}"
        assert name in services, f"{cluster.name}: no Service {name}"
        assert sock.port_value in {p["port"] for p in services[name]["spec"]["ports"]}, \
            f"{cluster.name}: Service {name} has no port {sock.port_value}"
        if cluster.name != "operator":
            assert services[name]["spec"].get("clusterIP") == "None", f"{name}: make it headless"
    for kind in ("xgboost", "pytorch", "heuristic"):
        side = snaps[f"sidecar-{kind}"]
        dep = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == kind)
        server_ports = {p["containerPort"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
        for listener in side.listeners.values():
            assert listener.address.socket_address.address == "0.0.0.0", kind
        for cluster in side.clusters.values():
            sock = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
            assert sock.address == "127.0.0.1" and sock.port_value in server_ports, f"{kind}: {cluster.name}"
