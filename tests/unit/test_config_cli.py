"""`meshctl config` and data_plane.envconfig: one reader for every component's knobs, one listing of
them, documented, and bad values refused naming their variable."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from control_plane.ab_component import ABConfig
from control_plane.healing.canary_component import config_from_env
from control_plane.healing.config import HealingConfig
from control_plane.healing.retrain import RetrainConfig
from data_plane import envconfig
from data_plane.contracts.errors import ConfigError
from meshctl.commands.config import all_rows

ROOT = Path(__file__).resolve().parents[2]
CODE = ("control_plane", "data_plane", "model_servers", "chaos", "tui", "training", "meshctl")


def test_parse_accepts_what_people_write_and_names_the_variable_otherwise() -> None:
    assert envconfig.parse("K", "1e3", "int") == 1000 and envconfig.parse("K", " 300.0 ", "int") == 300
    assert envconfig.parse("K", "0.25", "float") == 0.25
    assert envconfig.parse("K", "Off", "bool") is False and envconfig.parse("K", "yes", "bool") is True
    for raw, kind, rule in (("1.5", "int", "integer"), ("ten", "float", "number"), ("nan", "float", "finite"),
                            ("inf", "float", "finite"), ("maybe", "bool", "one of")):
        with pytest.raises(ConfigError, match=rf"^K='{raw}' must .*{rule}"):
            envconfig.parse("K", raw, kind)


def test_components_read_their_knobs_through_one_reader() -> None:
    env = {"MESH_RETRAIN_COOLDOWN_S": "5", "MESH_RETRAIN_BUDGET_PER_HOUR": "7", "MESH_GATE_MIN_AUC": "0.9",
           "MESH_AB_MAX_RECORDS": "500", "MESH_CANARY_STEP_MIN_SAMPLES": "10", "MESH_HEALING_SCRAPE_S": "1",
           "MESH_HEALING_BURST": " "}
    retrain = RetrainConfig.from_env(env)
    assert (retrain.cooldown_s, retrain.budget_per_hour, retrain.gates.min_auc) == (5.0, 7, 0.9)
    assert ABConfig.from_env(env).max_records == 500
    assert config_from_env(env).step.min_samples == 10
    healing = HealingConfig.from_env(env)
    assert healing.scrape_interval_s == 1.0
    assert healing.governor == HealingConfig().governor  # a blank value is the default


BAD = [("MESH_RETRAIN_COOLDOWN_S", "soon"), ("MESH_GATE_MIN_AUC", "high"), ("MESH_AB_WINDOW_S", "15m"),
       ("MESH_CANARY_STEP_S", "x"), ("MESH_HEALING_DWELL_S", "nan"), ("MESH_DRIFT_WINDOW", "2k"),
       ("MESH_CANARY", "perhaps")]


@pytest.mark.parametrize(("var", "value"), BAD)
def test_a_bad_value_is_refused_with_the_variable_named(var: str, value: str) -> None:
    with pytest.raises(ConfigError, match=var):
        all_rows({var: value})


def test_meshctl_config_says_which_variable_is_wrong_without_a_traceback() -> None:
    var, value = BAD[0]
    env = {"PATH": "/usr/bin:/bin", "MESH_HOME": "/tmp/unused-mesh-home", var: value}
    out = subprocess.run([sys.executable, "-m", "meshctl", "config"], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode != 0 and var in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_the_listing_shows_values_defaults_sources_and_hides_secrets() -> None:
    rows = all_rows({"MESH_PORT_EDGE": "9000", "MESH_NATS_USER": "mesh", "MESH_NATS_PASSWORD": "hunter2",
                     "MESH_CANARY_TICK_S": "2"})
    by_var = {r["variable"]: r for r in rows}
    assert len(by_var) == len(rows)  # one row per variable
    assert by_var["MESH_PORT_EDGE"] | {} == {"section": "ports", "variable": "MESH_PORT_EDGE", "value": 9000,
                                              "default": 8000, "source": "env"}
    assert by_var["MESH_CANARY_TICK_S"]["value"] == 2.0 and by_var["MESH_CANARY_TICK_S"]["default"] == 1.0
    assert by_var["MESH_NATS_PASSWORD"]["value"] == "***" and "hunter2" not in json.dumps(rows)
    assert by_var["MESH_NATS_URL"]["value"].startswith("nats://mesh:***@")
    shown = all_rows({"MESH_NATS_URL": "nats://u:s3cret@nats:4222"})
    assert "s3cret" not in json.dumps(shown)
    assert by_var["MESH_GATE_MIN_AUC"]["source"] == "default"


def test_every_variable_the_code_reads_is_listed_and_documented() -> None:
    listed = {r["variable"] for r in all_rows({})}
    read = set()
    for pkg in CODE:
        for path in (ROOT / pkg).rglob("*.py"):
            read |= set(re.findall(r"\b(MESH_[A-Z0-9_]*[A-Z0-9])\b", path.read_text()))
    assert read - listed == set(), "read by the code but not shown by `meshctl config`"
    docs = (ROOT / "docs" / "operations.md").read_text()
    undocumented = []
    for var in sorted(listed):
        # Ports and hosts are documented by their <NAME> in the Ports table / the MESH_HOST_<NAME> row.
        short = var.removeprefix("MESH_PORT_").removeprefix("MESH_HOST_")
        if var not in docs and not (short != var and f"`{short}`" in docs):
            undocumented.append(var)
    assert undocumented == [], "add these to docs/operations.md's configuration reference"
