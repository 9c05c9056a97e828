"""`meshctl load` output: the progress line and the final report."""

from __future__ import annotations

import io
import json

from data_plane.load.results import LoadResult, Progress, Tally
from data_plane.load.transports import TRANSPORTS
from data_plane.synthetic import SCENARIOS
from meshctl.commands.load import SCENARIO_NAMES, TRANSPORT_CHOICES, ProgressLine, render

REPLY = b'{"fraud_probability":0.1,"is_fraud":false,"model_version":"xgboost_v3","model_type":"xgboost",' \
        b'"latency_ms":1.0,"routed_to":"heuristic","fallback_reason":"xgboost_unavailable"}'


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _result() -> LoadResult:
    t = Tally()
    for i in range(99):
        t.sent += 1
        t.response(200, REPLY, 2_000_000 + i * 1000)
    t.sent += 2
    t.response(503, b'{"error":"unavailable"}', 5_000_000)
    t.response(200, b"not json", 1_000_000)
    t.error("timeout")
    t.sent += 1
    return LoadResult.from_tally(t, elapsed_s=1.0, mode="open", url="http://127.0.0.1:8000/api/v1/predict",
                                 rate=100.0, concurrency=None, planned_duration_s=1.0, planned_requests=None)


def test_tally_sorts_outcomes() -> None:
    r = _result()
    assert (r.sent, r.responses, r.ok, r.errors, r.undecodable) == (102, 101, 100, 1, 1)
    assert r.by_status == {"200": 100, "503": 1}
    assert r.by_routed_to == {"heuristic": 99} and r.by_fallback_reason == {"xgboost_unavailable": 99}
    assert r.by_error == {"timeout": 1} and not r.unreachable
    assert json.loads(json.dumps(r.to_dict()))["latency_ms"]["p99.9"] > 0


def test_report_has_every_breakdown() -> None:
    text = render(_result())
    for word in ("open loop 100 rps", "p99.9", "routed_to", "heuristic", "fallback_reason",
                 "xgboost_unavailable", "model_version", "xgboost_v3", "503", "timeout", "late sends",
                 "undecodable"):
        assert word in text, word


def test_progress_redraws_one_line_on_a_terminal() -> None:
    out = _Tty()
    bar = ProgressLine(out)
    bar(Progress(1.0, 30.0, 1000, 990, 10, 1000.0, 3.25))
    bar(Progress(2.0, 30.0, 2000, 1990, 10, 1000.0, 3.5))
    bar.finish()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "[   2.0/30 s] sent 2,000" in text and "errors 10" in text and "p99 3.5 ms" in text


def test_progress_is_sparse_when_not_a_terminal() -> None:
    out = io.StringIO()
    bar = ProgressLine(out)
    for s in range(1, 11):
        bar(Progress(float(s), None, s * 10, s * 10, 0, 10.0, 1.0))
    bar.finish()
    assert "\r" not in out.getvalue() and out.getvalue().count("\n") == 2  # at 5 s and 10 s


def test_cli_choices_match_the_engine_and_the_generator() -> None:
    assert ("auto", *TRANSPORTS) == TRANSPORT_CHOICES
    assert set(SCENARIO_NAMES) == set(SCENARIOS)
