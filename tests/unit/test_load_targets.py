"""Load may only point at this machine unless asked, and every run is bounded."""

from __future__ import annotations

import pytest

from data_plane.contracts.errors import MeshError
from data_plane.load import LoadPlan, fixed_payloads, synthetic_payloads
from data_plane.load.targets import (
    MAX_DURATION_S,
    MAX_RATE_RPS,
    LoadTargetError,
    check_bounds,
    check_target,
    is_loopback_host,
)
from meshctl.main import main as meshctl

URL = "http://127.0.0.1:8000/api/v1/predict"


@pytest.mark.parametrize("url", [URL, "http://localhost:8000/api/v1/predict", "http://[::1]:8000/x",
                                 "http://127.0.0.5:9/x", "https://LOCALHOST/api"])
def test_loopback_targets_are_accepted(url: str) -> None:
    t = check_target(url)
    assert t.loopback


@pytest.mark.parametrize("url", ["http://10.0.0.1:8000/api/v1/predict", "http://example.com/",
                                 "http://0.0.0.0:8000/", "http://[2001:db8::1]/",
                                 "http://localhost.example.com/"])
def test_remote_targets_are_refused_with_the_way_out(url: str) -> None:
    with pytest.raises(LoadTargetError, match="--allow-remote"):
        check_target(url)
    assert not check_target(url, allow_remote=True).loopback


@pytest.mark.parametrize(("url", "words"), [("ftp://127.0.0.1/x", "http://"), ("127.0.0.1:8000", "http://"),
                                            ("http:///path", "no host"),
                                            ("http://127.0.0.1:99999/", "not a valid URL")])
def test_malformed_urls_name_the_problem(url: str, words: str) -> None:
    with pytest.raises(LoadTargetError, match=words):
        check_target(url)


def test_the_error_is_a_mesh_error_so_the_cli_prints_it() -> None:
    assert issubclass(LoadTargetError, MeshError)
    assert is_loopback_host("[::1]") and not is_loopback_host("10.1.2.3")


@pytest.mark.parametrize(("kw", "words"), [
    ({}, "--rate R --duration S"),
    ({"rate": 10.0, "concurrency": 2, "duration": 1.0}, "not both"),
    ({"rate": 10.0}, "--rate needs --duration"),
    ({"rate": 10.0, "duration": 1.0, "requests": 5}, "--requests is for closed loop"),
    ({"rate": 0.0, "duration": 1.0}, "--rate must be more than 0"),
    ({"rate": MAX_RATE_RPS * 2, "duration": 1.0}, "at most 50000"),
    ({"rate": float("nan"), "duration": 1.0}, "--rate"),
    ({"rate": 10.0, "duration": MAX_DURATION_S + 1}, "--duration must be .* at most 3600"),
    ({"concurrency": 4}, "--duration S or --requests N"),
    ({"concurrency": 0, "requests": 5}, "--concurrency must be at least 1"),
    ({"concurrency": 4, "requests": 0}, "--requests must be at least 1"),
    ({"concurrency": 4, "requests": 5, "cards": -1}, "--cards"),
    ({"concurrency": 4, "requests": 5, "timeout": 0.0}, "--timeout"),
    ({"rate": 10.0, "duration": 1.0, "max_outstanding": 0}, "--max-outstanding"),
])
def test_unbounded_or_contradictory_runs_are_refused(kw: dict, words: str) -> None:
    with pytest.raises(LoadTargetError, match=words):
        check_bounds(**kw)


def test_bounded_runs_pass_and_plans_size_their_pool() -> None:
    check_bounds(rate=1000.0, duration=30.0)
    check_bounds(concurrency=32, requests=1000)
    check_bounds(concurrency=32, duration=5.0, cards=50)
    assert LoadPlan(url=URL, rate=3000.0, duration=1.0).outstanding_cap == 750
    assert LoadPlan(url=URL, rate=40_000.0, duration=1.0).outstanding_cap == 1024
    assert LoadPlan(url=URL, rate=10.0, duration=1.0).outstanding_cap == 64
    assert LoadPlan(url=URL, rate=10.0, duration=1.0, max_outstanding=5).outstanding_cap == 5
    assert LoadPlan(url=URL, concurrency=8, requests=10).outstanding_cap == 8
    with pytest.raises(LoadTargetError, match="--allow-remote"):
        LoadPlan(url="http://192.0.2.1/", rate=1.0, duration=1.0)


def test_payloads_are_schema_valid_and_carry_card_headers() -> None:
    from data_plane.contracts.schema import parse_transaction

    payloads = synthetic_payloads(seed=3, scenario="merchant_mix", cards=5, count=50)
    assert len(payloads) == 50
    cards = set()
    for p in payloads:
        txn = parse_transaction(p.body)
        assert p.headers["card-id"] == txn.card_id
        cards.add(txn.card_id)
    assert 1 < len(cards) <= 5
    assert "card-id" not in synthetic_payloads(seed=3, count=3)[0].headers
    assert synthetic_payloads(seed=3, count=5) == synthetic_payloads(seed=3, count=5)  # seeded
    with pytest.raises(LoadTargetError, match="covariate_shift"):
        synthetic_payloads(scenario="nope")
    with pytest.raises(LoadTargetError, match="at least one"):
        fixed_payloads([])


@pytest.mark.parametrize(("argv", "words"), [
    (["load", "--url", "http://10.9.8.7:8000/api/v1/predict", "--rate", "5", "--duration", "1"],
     "--allow-remote"),
    (["load", "--rate", "5"], "--rate needs --duration"),
    (["load", "--concurrency", "2", "--duration", "1", "--scenario", "bogus"], "unknown"),
    (["load", "--rate", "100000", "--duration", "1"], "at most 50000"),
])
def test_cli_refuses_bad_runs_with_a_message_and_no_traceback(
        argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert meshctl(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("meshctl load: ") and words in err and "Traceback" not in err
