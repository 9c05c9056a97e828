"""The operator-API client: data or a typed error, never a crash (over real HTTP to the fake)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from data_plane.netutil import free_port
from tests.tui.fake_api import TOKEN, FakeOperatorAPI, Write
from tui.client import ApiError, NotAvailableError, OperatorClient, TokenError, UnreachableError
from tui.poller import Poller


async def test_reads_return_the_documented_shapes(fake_api: FakeOperatorAPI, token_file: Path) -> None:
    client = OperatorClient(fake_api.url, token_file)
    try:
        status = await client.status()
        assert status["version"] == 42 and status["effective_weights"]["xgboost"] == 0.8
        page = await client.decisions(since=4, limit=10)
        assert [d["seq"] for d in page["decisions"]] == [5, 6] and page["last_seq"] == 6
        assert (await client.models())["models"]["xgboost"]["challenger"] == "4"
    finally:
        await client.close()


async def test_a_route_not_served_yet_is_not_available_but_a_handlers_404_is_an_api_error(
        token_file: Path) -> None:
    fake = await FakeOperatorAPI(routes="today").start()
    client = OperatorClient(fake.url, token_file)
    try:
        with pytest.raises(NotAvailableError, match="GET /api/v1/drift is not available on this control"):
            await client.drift()
        with pytest.raises(NotAvailableError, match="DELETE /api/v1/models/xgboost/pin"):
            await client.unpin("xgboost")
    finally:
        await client.close()
        await fake.stop()
    full = await FakeOperatorAPI().start()
    client = OperatorClient(full.url, token_file)
    try:
        with pytest.raises(ApiError, match="no chaos run run-9") as info:
            await client.chaos_run("run-9")
        assert info.value.status == 404 and info.value.error == "unknown_run"
    finally:
        await client.close()
        await full.stop()


async def test_a_refused_write_names_the_field_and_rule(fake_api: FakeOperatorAPI, token_file: Path) -> None:
    client = OperatorClient(fake_api.url, token_file)
    try:
        with pytest.raises(ApiError) as info:
            await client.set_weights({"xgboost": 0.9, "pytorch": 0.3})
        assert info.value.status == 422
        assert (info.value.field, info.value.rule) == ("$body", "sum")
        assert str(info.value) == "HTTP 422: weights must sum to 1 (got 1.2) (field $body, rule sum)"
        assert fake_api.writes == [Write("POST", "/api/v1/traffic", {"xgboost": 0.9, "pytorch": 0.3},
                                         f"Bearer {TOKEN}")]
    finally:
        await client.close()


async def test_token_trouble_is_a_clear_error(fake_api: FakeOperatorAPI, tmp_path: Path) -> None:
    missing = OperatorClient(fake_api.url, tmp_path / "operator-token")
    empty_file = tmp_path / "empty"
    empty_file.write_text("\n")
    empty = OperatorClient(fake_api.url, empty_file)
    wrong_file = tmp_path / "wrong"
    wrong_file.write_text("not-the-token\n")
    wrong = OperatorClient(fake_api.url, wrong_file)
    try:
        with pytest.raises(ApiError, match="HTTP 401: send the operator token") as info:
            await wrong.retrain("xgboost", "test")
        assert info.value.field == "Authorization"
        assert fake_api.writes[-1].authorization == "Bearer not-the-token"
        fake_api.writes.clear()
        assert (await missing.status())["frozen"] is False  # reads need no token
        with pytest.raises(TokenError, match=r"no operator token at .*operator-token: start the control"):
            await missing.freeze()
        with pytest.raises(TokenError, match="is empty"):
            await empty.freeze()
        assert fake_api.writes == []
    finally:
        for client in (missing, empty, wrong):
            await client.close()


async def test_nothing_listening_is_unreachable_and_the_poller_keeps_the_last_data(
        fake_api: FakeOperatorAPI, token_file: Path) -> None:
    gone = OperatorClient(f"http://127.0.0.1:{free_port()}", token_file, timeout=1.0)
    try:
        with pytest.raises(UnreachableError, match=r"control plane unreachable at http://127\.0\.0\.1:"):
            await gone.status()
    finally:
        await gone.close()

    client = OperatorClient(fake_api.url, token_file)
    poller = Poller(client)
    try:
        state = await poller.poll_once()
        assert state.reachable and state.models.ok and len(state.decisions) == 6
        revision = state.revision
        await poller.poll_once()
        assert state.revision == revision  # nothing changed: nothing to redraw
        await fake_api.stop()
        await poller.poll_once()
        assert state.reachable is False and "unreachable" in state.unreachable_reason
        assert state.status.data["version"] == 42  # the last good data stays
        assert state.revision == revision + 1
    finally:
        await client.close()


async def test_a_control_plane_that_hangs_is_unreachable_after_the_timeout(token_file: Path) -> None:
    """SIGSTOPped control plane: the port accepts, nothing answers; the read gives up, typed."""
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = OperatorClient(f"http://127.0.0.1:{port}", token_file, timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(UnreachableError, match="unreachable"):
            await client.status()
        assert time.monotonic() - started < 3
    finally:
        await client.close()
        server.close()
