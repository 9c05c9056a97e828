"""`meshctl score`: input parsing, value conversion, result flattening and the CLI's refusals."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from data_plane.contracts.schema import FEATURE_NAMES, parse_transaction
from meshctl import batch_score as bs
from meshctl.main import main

GOOD = {"amount": 12.5, "merchant_category": 3, "hour_of_day": 14, "day_of_week": 2,
        "distance_from_home": 1.5, "distance_from_last_txn": 0.5, "is_foreign": 0,
        "velocity_last_1h": 1, "velocity_last_24h": 4, "avg_amount_last_7d": 40.0, "card_age_days": 700}


def _csv(path: Path, rows: list[dict[str, object]], extra: tuple[str, ...] = ()) -> Path:
    header = [*FEATURE_NAMES, *extra]
    lines = [",".join(header)] + [",".join(str(r.get(h, "")) for h in header) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_rows_become_schema_valid_payloads_and_keep_extra_columns(tmp_path: Path) -> None:
    path = _csv(tmp_path / "t.csv", [{**GOOD, "merchant_category": "3.0", "card_id": "c-1", "ref": "A7"}],
                extra=("card_id", "ref"))
    columns, rows = bs.read_rows(path, "csv")
    (row,) = list(rows)
    assert columns[-2:] == ["card_id", "ref"]
    assert row.payload is not None and "ref" not in row.payload
    assert row.payload["merchant_category"] == 3 and isinstance(row.payload["merchant_category"], int)
    assert row.payload["card_id"] == "c-1"
    txn = parse_transaction(json.dumps(row.payload).encode())  # the server would accept it
    assert txn.amount == 12.5 and row.original["ref"] == "A7"


def test_non_numeric_and_empty_cells_are_sent_for_the_server_to_name(tmp_path: Path) -> None:
    path = _csv(tmp_path / "t.csv", [{**GOOD, "amount": "lots", "hour_of_day": ""}])
    _, rows = bs.read_rows(path, "csv")
    (row,) = list(rows)
    assert row.payload is not None
    assert row.payload["amount"] == "lots" and row.payload["hour_of_day"] is None


def test_jsonl_bad_lines_get_local_errors_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({**GOOD, "note": "x"}) + "\n\n{not json\n[1, 2]\n")
    assert bs.count_rows(path, "jsonl") == 3
    _, rows = bs.read_rows(path, "jsonl")
    good, not_json, not_object = list(rows)
    assert good.payload == GOOD and good.original["note"] == "x"
    assert not_json.payload is None and not_json.local_error["rule"] == "json"
    assert not_object.local_error["rule"] == "object" and "line 4" in not_object.local_error["message"]


@pytest.mark.parametrize(("name", "content", "needle"), [
    ("missing.csv", None, "no such file"),
    ("t.txt", "a,b\n", "unknown format"),
    ("t.csv", "", "empty file"),
    ("t.csv", "amount,hour_of_day\n1,2\n", "merchant_category"),
])
def test_unreadable_inputs_are_clear_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                name: str, content: str | None, needle: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    assert main(["score", str(path), "--url", "http://127.0.0.1:9/api/v1/predict/batch"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("meshctl score:") and needle in err and "Traceback" not in err


@pytest.mark.parametrize("size", ["0", "1001"])
def test_batch_size_outside_the_endpoint_limit_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          size: str) -> None:
    path = _csv(tmp_path / "t.csv", [GOOD])
    assert main(["score", str(path), "--batch-size", size]) == 1
    assert "1 to 1000" in capsys.readouterr().err


def test_remote_target_is_refused_without_allow_remote(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = _csv(tmp_path / "t.csv", [GOOD])
    assert main(["score", str(path), "--url", "http://example.com/api/v1/predict/batch"]) == 1
    assert "--allow-remote" in capsys.readouterr().err


def test_nothing_listening_exits_3_and_leaves_no_output(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from data_plane.netutil import free_port

    path = _csv(tmp_path / "t.csv", [GOOD])
    rc = main(["score", str(path), "--no-progress", "--url", f"http://127.0.0.1:{free_port()}/api/v1/predict/batch"])
    assert rc == 3
    assert "meshctl up" in capsys.readouterr().err
    assert not (tmp_path / "t.scored.csv").exists()


def test_whole_batch_failures_become_per_row_errors() -> None:
    failed = bs._item_results(503, {"error": "no model loaded"}, 2)
    assert len(failed) == 2 and failed[0]["error"]["rule"] == "http_503"
    assert failed[0]["error"]["message"] == "no model loaded"
    default = bs._item_results(200, {"model_type": "conservative_default", "is_fraud": True}, 1)
    assert "conservative default" in default[0]["error"]["message"]
    ok = bs._item_results(200, {"results": [
        {"index": 0, "status": 200, "prediction": {"fraud_probability": 0.1, "is_fraud": False,
                                                   "model_version": "heuristic_v1", "routed_to": "heuristic",
                                                   "fallback_reason": None}},
        {"index": 1, "status": 422, "error": {"field": "amount", "rule": "range"}}]}, 2)
    assert ok[0]["model_version"] == "heuristic_v1" and ok[1]["error"]["field"] == "amount"


def test_csv_writer_puts_result_columns_after_the_input_columns() -> None:
    out = io.StringIO()
    write = bs.writer_for(out, "csv", ["amount", "ref"])
    write(bs.Row({"amount": "1", "ref": "A"}, {}),
          {"status": 200, "fraud_probability": 0.25, "is_fraud": False, "model_version": "xgboost_v2",
           "routed_to": "xgboost", "fallback_reason": None})
    write(bs.Row({"amount": "x", "ref": "B"}, {}),
          {"status": 422, "error": {"field": "amount", "rule": "type", "message": "not a number"}})
    lines = out.getvalue().splitlines()
    assert lines[0] == ("amount,ref,status,fraud_probability,is_fraud,model_version,routed_to,"
                        "fallback_reason,error")
    assert lines[1] == "1,A,200,0.25,False,xgboost_v2,xgboost,,"
    assert lines[2] == "x,B,422,,,,,,amount: type: not a number"


def test_default_output_sits_next_to_the_input() -> None:
    assert bs.default_output(Path("/d/txns.csv"), "csv") == Path("/d/txns.scored.csv")
    assert bs.default_output(Path("/d/txns.jsonl"), "jsonl") == Path("/d/txns.scored.jsonl")
