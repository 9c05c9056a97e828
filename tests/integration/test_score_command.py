"""`meshctl score` against a real model server process (`python -m model_servers --kind heuristic`)."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from data_plane.contracts.schema import FEATURE_NAMES
from data_plane.netutil import free_port
from data_plane.procs import ManagedProcess
from data_plane.synthetic import generate
from meshctl.main import main

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def batch_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("score-home")
    port = free_port()
    proc = ManagedProcess("model-server-heuristic", [
        sys.executable, "-m", "model_servers", "--kind", "heuristic", "--port", str(port), "--no-nats"],
        home / "heuristic.log", env={"MESH_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT).start()
    try:
        proc.wait_port("127.0.0.1", port, timeout=30)
        yield f"http://127.0.0.1:{port}/api/v1/predict/batch"
    finally:
        proc.stop()


def _transactions(n: int) -> list[dict[str, object]]:
    bodies = generate(n, seed=7).request_bodies()
    return [{k: v for k, v in body.items() if k in FEATURE_NAMES} for body in bodies]


def test_csv_file_is_scored_in_batches_with_bad_rows_reported(tmp_path: Path, batch_url: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    txns = _transactions(1203)
    txns[5]["amount"] = -3           # out of range
    txns[700]["hour_of_day"] = "noon"  # not a number
    src = tmp_path / "txns.csv"
    with src.open("w", newline="") as fh:
        w = csv.DictWriter(fh, [*FEATURE_NAMES, "card_id", "ref"])
        w.writeheader()
        for i, t in enumerate(txns):
            w.writerow({**t, "card_id": f"card-{i % 50}", "ref": f"r{i}"})
    rc = main(["score", str(src), "--url", batch_url, "--batch-size", "500", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["rows"] == 1203 and summary["failed"] == 2 and summary["scored"] == 1201
    assert summary["batches"] == 3 and summary["by_model_version"] == {"heuristic_v1": 1201}
    assert "1,203/1,203 rows" in captured.err  # the progress bar reached the end
    with (tmp_path / "txns.scored.csv").open(newline="") as fh:
        out = list(csv.DictReader(fh))
    assert [r["ref"] for r in out] == [f"r{i}" for i in range(1203)]  # every row, in input order
    assert out[5]["status"] == "422" and out[5]["error"].startswith("amount:")
    assert out[700]["error"].startswith("hour_of_day:") and out[700]["fraud_probability"] == ""
    good = out[0]
    assert good["status"] == "200" and good["model_version"] == "heuristic_v1"
    assert 0.0 <= float(good["fraud_probability"]) <= 1.0 and good["is_fraud"] in ("True", "False")
    assert summary["flagged_fraud"] == sum(r["is_fraud"] == "True" for r in out)


def test_jsonl_file_is_scored_to_jsonl_with_per_line_errors(tmp_path: Path, batch_url: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    txns = _transactions(20)
    src = tmp_path / "in.jsonl"
    lines = [json.dumps(t) for t in txns]
    lines.insert(3, "{broken")
    lines.insert(10, json.dumps({**txns[0], "amount": 1e12}))
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "result.jsonl"
    rc = main(["score", str(src), "--url", batch_url, "--out", str(out), "--batch-size", "7",
               "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0 and "heuristic_v1" in text and "failed" in text
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(results) == 22
    assert results[3]["error"]["rule"] == "json" and results[3]["status"] == 400
    assert results[10]["error"]["field"] == "amount" and results[10]["status"] == 422
    assert sum("fraud_probability" in r for r in results) == 20
    assert results[0]["amount"] == txns[0]["amount"] and results[0]["routed_to"] == "heuristic"
