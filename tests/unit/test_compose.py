"""docker-compose.yml and the Dockerfile, checked statically (no container engine on this machine).

Pinned images that match the binaries the tests run (Envoy, NATS, MLflow), files that exist, ports
on 127.0.0.1 equal to the local defaults, commands that name real modules and meshctl subcommands,
healthchecks, dependencies, and Envoy bootstraps that validate and match the templates.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import re
import subprocess
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from string import Template
from typing import Any

import pytest
import yaml

from data_plane.settings import Ports, Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PORTS = Ports()
PORT_FIELDS = {f.name: getattr(PORTS, f.name) for f in fields(Ports)}
# Compose-only services without a local counterpart in Ports (documented in docs/operations.md).
EXTRA_PORTS = {"grafana": 3000, "mlflow": 5000}
# One-shot or tool services (no healthcheck needed) and the namespace holder (no tools inside).
NOT_LONG_RUNNING = {"train", "toxiproxy-conformance", "mesh"}
ENVOY_NODES = {"edge": "edge_admin", "sidecar-xgboost": "sidecar_admin_xgboost",
               "sidecar-pytorch": "sidecar_admin_pytorch", "sidecar-heuristic": "sidecar_admin_heuristic"}
VENV_BIN = REPO / ".venv" / "bin"
COMPOSE_VAR = re.compile(r"\$\{(\w+):-([^}]*)\}")


def interpolate(text: str, env: dict[str, str] | None = None) -> str:
    """Compose's `${NAME:-default}` with the defaults (or `env`)."""
    return COMPOSE_VAR.sub(lambda m: (env or {}).get(m.group(1), m.group(2)), text)


def project_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in SERVICES.items() if "build" in s}


def published(service: dict[str, Any]) -> list[str]:
    return [str(p) for p in service.get("ports", [])]


def version_of(binary: str, pattern: str) -> str:
    out = subprocess.run([str(VENV_BIN / binary), "--version"], capture_output=True, text=True,
                         timeout=60, check=True)
    match = re.search(pattern, out.stdout + out.stderr)
    assert match, out.stdout + out.stderr
    return match.group(1)


# ---- images ------------------------------------------------------------------------------------------
def test_every_image_is_pinned_to_an_exact_version() -> None:
    for name, svc in SERVICES.items():
        image = svc.get("image")
        assert image, f"{name}: no image"
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and re.match(r"^v?\d+\.\d+(\.\d+)?(-[a-z0-9.]+)?$", tag), \
            f"{name}: {image} is not pinned to an exact version"


def test_project_image_is_tagged_with_the_project_version() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    for name, svc in project_services().items():
        assert svc["image"] == f"fraud-mesh:{version}", name


def test_the_real_images_are_used_and_match_the_binaries_the_tests_run() -> None:
    images = {name: svc["image"] for name, svc in SERVICES.items()}
    envoy_version = version_of("envoy", r"/(\d+\.\d+\.\d+)/")
    assert {images[n] for n in ENVOY_NODES} == {f"envoyproxy/envoy:v{envoy_version}"}, \
        "edge and every sidecar run the Envoy the tests validate against"
    nats_version = version_of("nats-server", r"v(\d+\.\d+\.\d+)")
    assert images["nats"].startswith(f"nats:{nats_version}")
    assert images["mlflow"] == f"ghcr.io/mlflow/mlflow:v{importlib.metadata.version('mlflow')}", \
        "the MLflow server must speak the same sqlite schema as the project's client"
    assert images["toxiproxy"] == "ghcr.io/shopify/toxiproxy:2.12.0"
    assert images["prometheus"].startswith("prom/prometheus:v")
    assert images["grafana"].startswith("grafana/grafana:")


# ---- files -------------------------------------------------------------------------------------------
def test_every_referenced_file_exists() -> None:
    for name, svc in SERVICES.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in COMPOSE.get("volumes", {}), f"{name}: named volume {source} undeclared"
        if "build" in svc:
            build = svc["build"] if isinstance(svc["build"], dict) else {"context": svc["build"]}
            context = REPO / build["context"]
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name


# ---- ports -------------------------------------------------------------------------------------------
def _owner(field: str) -> str:
    return "nats" if field.startswith("nats") else "prometheus" if field == "prometheus" else "mesh"


def test_ports_are_on_127_0_0_1_and_equal_the_local_defaults() -> None:
    seen: dict[int, str] = {}
    for name, svc in SERVICES.items():
        for spec in published(svc):
            match = re.fullmatch(r"127\.0\.0\.1:(\d+):(\d+)", spec)
            assert match, f"{name}: {spec!r} must be published as 127.0.0.1:<port>:<port>"
            host, container = int(match.group(1)), int(match.group(2))
            assert host == container, f"{name}: {spec} maps to another port"
            assert host not in seen, f"port {host} published by {seen.get(host)} and {name}"
            seen[host] = name
    expected = {port: _owner(field) for field, port in PORT_FIELDS.items()}
    expected.update({port: name for name, port in EXTRA_PORTS.items()})
    assert seen == expected


def test_services_in_the_mesh_namespace_publish_nothing_themselves() -> None:
    for name, svc in SERVICES.items():
        mode = svc.get("network_mode", "")
        if mode.startswith("service:"):
            holder = mode.split(":", 1)[1]
            assert holder in SERVICES and "network_mode" not in SERVICES[holder], name
            assert not svc.get("ports"), f"{name}: publish on {holder}, which owns the namespace"
    aliases = SERVICES["mesh"]["networks"]["default"]["aliases"]
    assert "control-plane" in aliases, "the compose bootstraps find ADS at control-plane:18000"


# ---- commands ----------------------------------------------------------------------------------------
def _check_python_module(argv: list[str], where: str) -> None:
    module = argv[2]
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"{where}: no module {module}"
    main = f"{module}.__main__" if spec.submodule_search_locations is not None else module
    main_spec = importlib.util.find_spec(main)
    assert main_spec is not None and main_spec.origin, f"{where}: `python -m {module}` has no __main__"
    tree = ast.parse(Path(main_spec.origin).read_text())
    defines = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    if "build_parser" in defines:
        importlib.import_module(main).build_parser().parse_args(argv[3:])
    else:
        assert argv[3:] == [], f"{where}: {main} takes no arguments"


def test_project_commands_name_real_modules_and_meshctl_subcommands() -> None:
    from meshctl.main import build_parser

    for name, svc in project_services().items():
        argv = [interpolate(a) for a in svc["command"]]
        assert "entrypoint" not in svc, f"{name}: use `command` (the image has no entrypoint)"
        if argv[:2] == ["python", "-m"]:
            _check_python_module(argv, name)
        elif argv[0] == "meshctl":
            args = build_parser().parse_args(argv[1:])
            assert getattr(args, "func", None), f"{name}: `{' '.join(argv)}` runs no subcommand"
        else:
            pytest.fail(f"{name}: {argv} is neither `python -m <module>` nor `meshctl <command>`")


def test_model_servers_serve_their_kind() -> None:
    for kind in ("xgboost", "pytorch", "heuristic"):
        assert SERVICES[kind]["command"] == ["python", "-m", "model_servers", "--kind", kind]


def test_environment_uses_only_settings_variables_and_reaches_nats_with_its_credentials() -> None:
    known = set(re.findall(r'"(MESH_[A-Z_]+)"', (REPO / "data_plane" / "settings.py").read_text()))
    known |= {f"MESH_PORT_{f.upper()}" for f in PORT_FIELDS}
    nats_argv = [interpolate(a, {"MESH_NATS_PASSWORD": "s3cret"}) for a in SERVICES["nats"]["command"]]
    assert "-js" in nats_argv, "NATS needs JetStream"
    user, password = nats_argv[nats_argv.index("--user") + 1], nats_argv[nats_argv.index("--pass") + 1]
    for name, svc in project_services().items():
        env = {k: interpolate(str(v), {"MESH_NATS_PASSWORD": "s3cret"})
               for k, v in svc["environment"].items()}
        assert {k for k in env if k.startswith("MESH_")} <= known, f"{name}: unknown MESH_* variable"
        settings = Settings.from_env(env)
        assert settings.home == Path("/var/lib/mesh") and settings.host == "0.0.0.0"
        assert settings.nats_url == f"nats://{user}:{password}@nats:4222", name
        assert "/var/lib/mesh" in {v.split(":")[1] for v in svc["volumes"]}, f"{name}: state not mounted"


# ---- health and order --------------------------------------------------------------------------------
def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, svc in SERVICES.items():
        if name in NOT_LONG_RUNNING:
            continue
        test = svc.get("healthcheck", {}).get("test")
        assert test and test[0] in {"CMD", "CMD-SHELL"}, f"{name}: no healthcheck"


def test_healthchecks_probe_the_services_own_port() -> None:
    probes = {"control-plane": "operator", "xgboost": "xgboost", "pytorch": "pytorch",
              "heuristic": "heuristic", "nats": "nats_monitor", "prometheus": "prometheus",
              "toxiproxy": "chaos_api", **ENVOY_NODES}
    for name, field in probes.items():
        test = " ".join(SERVICES[name]["healthcheck"]["test"])
        port = PORT_FIELDS[field]
        assert f"127.0.0.1:{port}" in test or f"127.0.0.1/{port}" in test, f"{name}: probes {test}"


def test_depends_on_names_defined_services_with_valid_conditions() -> None:
    for name, svc in SERVICES.items():
        for target, cond in (svc.get("depends_on") or {}).items():
            assert target in SERVICES, f"{name} depends on undefined {target}"
            condition = cond["condition"]
            assert condition in {"service_started", "service_healthy", "service_completed_successfully"}
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{name} waits for {target}'s health; it has none"
            if condition == "service_completed_successfully":
                assert SERVICES[target].get("restart") == "no", f"{target} is not a one-shot"
    assert SERVICES["edge"]["depends_on"]["control-plane"]["condition"] == "service_healthy"


# ---- Envoy bootstraps --------------------------------------------------------------------------------
def _bootstrap(name: str) -> Path:
    svc = SERVICES[name]
    argv = svc["command"]
    assert argv[0] == "envoy" and "--disable-hot-restart" in argv, \
        f"{name}: Envoys share one network namespace; hot restart sockets would collide"
    target = argv[argv.index("-c") + 1]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
    return REPO / mounts[target]


def _normalised(doc: dict[str, Any]) -> dict[str, Any]:
    """Drop what the compose bootstraps change on purpose: admin address, the xds cluster's lookup."""
    doc["admin"]["address"]["socket_address"].pop("address")
    for cluster in doc["static_resources"]["clusters"]:
        if cluster["name"] == "xds":
            cluster.pop("type", None)
            cluster.pop("dns_lookup_family", None)
            ep = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            ep["address"]["socket_address"].pop("address")
    return doc


@pytest.mark.parametrize("name", sorted(ENVOY_NODES))
def test_compose_bootstraps_match_the_templates(name: str) -> None:
    compose = yaml.safe_load(_bootstrap(name).read_text())
    role = "edge" if name == "edge" else "sidecar"
    template = Template((REPO / "envoy" / f"{role}.yaml").read_text()).safe_substitute(
        node_id=name, node_cluster=role, admin_host="0.0.0.0", admin_port=PORT_FIELDS[ENVOY_NODES[name]],
        ads_host="control-plane", ads_port=PORTS.ads, xds_cluster_type="STRICT_DNS")
    assert compose["node"] == {"id": name, "cluster": role}
    assert compose["admin"]["address"]["socket_address"] == {
        "address": "0.0.0.0", "port_value": PORT_FIELDS[ENVOY_NODES[name]]}
    xds = next(c for c in compose["static_resources"]["clusters"] if c["name"] == "xds")
    assert xds["type"] in {"STRICT_DNS", "LOGICAL_DNS"}
    assert xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
        "socket_address"] == {"address": "control-plane", "port_value": PORTS.ads}
    assert _normalised(compose) == _normalised(yaml.safe_load(template)), \
        f"{name}: differs from envoy/{role}.yaml beyond the admin address and the xds lookup"


def test_compose_bootstraps_pass_envoy_validate() -> None:
    envoy = VENV_BIN / "envoy"
    paths = sorted({_bootstrap(n) for n in ENVOY_NODES} | set((REPO / "envoy" / "compose").glob("*.yaml")))

    def validate(path: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
        return path, subprocess.run([str(envoy), "--mode", "validate", "-c", str(path), "-l", "error",
                                     "--disable-hot-restart"], capture_output=True, text=True, timeout=120,
                                    check=False)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for path, proc in pool.map(validate, paths):
            assert proc.returncode == 0, f"{path}: {proc.stdout}{proc.stderr}"


# ---- Dockerfile --------------------------------------------------------------------------------------
DOCKERFILE = (REPO / "Dockerfile").read_text()


def test_dockerfile_names_no_package_index_and_pins_its_base() -> None:
    assert not re.search(r"https?://|\bindex-url\s*=?\s*\S+\.\w+", DOCKERFILE, flags=re.I), \
        "the Dockerfile must not name a package index (use the PIP_EXTRA_INDEX_URL build argument)"
    base = re.search(r"^FROM (\S+)", DOCKERFILE, flags=re.M)
    assert base and re.search(r":\d+\.\d+\.\d+", base.group(1)), "pin the base image's exact version"


def test_dockerfile_copies_every_project_package_and_the_build_context_admits_them() -> None:
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = {p.rstrip("*") for p in include["include"]}
    copied = {m.group(1) for m in re.finditer(r"^COPY (\S+) \1$", DOCKERFILE, flags=re.M)}
    assert packages | {"envoy"} <= copied
    for source in copied:
        assert (REPO / source).exists(), source
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignore and {f"!{p}/" for p in packages | {"envoy"}} <= set(ignore)
