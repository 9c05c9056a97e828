"""Control-plane events on a real nats-server: ledger entries reach `mesh.decisions`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from control_plane.ledger import Ledger
from data_plane.contracts import subjects
from data_plane.contracts.events import Decision
from data_plane.eventbus import EventBus
from data_plane.netutil import free_port
from data_plane.procs import nats_server
from data_plane.settings import Settings

pytestmark = pytest.mark.integration


def _decision() -> Decision:
    return Decision(actor="operator", action="set_weights", rule="operator_request", reason="test")


async def test_entries_are_published_on_mesh_decisions(settings: Settings, tmp_path: Path) -> None:
    import nats

    port, monitor = free_port(), free_port()
    server = nats_server(port, monitor, tmp_path / "js", tmp_path / "nats.log").start()
    try:
        server.wait_port("127.0.0.1", port)
        url = f"nats://127.0.0.1:{port}"
        nc = await nats.connect(url)
        got: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
            await got.put(msg.data)

        await nc.subscribe(subjects.DECISIONS, cb=on_msg)
        await nc.flush()
        bus = EventBus(url, "ledger-test", flush_interval=0.01)
        await bus.start()
        ledger = Ledger(settings.state_dir, bus)
        d = ledger.append(_decision())
        ledger.update_ack(d.seq, True, {"edge": "ack"})
        first = msgspec.json.decode(await asyncio.wait_for(got.get(), 10), type=Decision)
        second = msgspec.json.decode(await asyncio.wait_for(got.get(), 10), type=Decision)
        assert (first.seq, first.acked) == (1, None)
        assert (second.seq, second.acked, second.nodes) == (1, True, {"edge": "ack"})
        await bus.close()
        await nc.drain()
    finally:
        server.stop()


async def test_clients_started_before_nats_connect_once_it_answers(tmp_path: Path) -> None:
    """Every long-lived client connects through `connect_forever`: it waits out a NATS that is not
    up yet (a restart racing it, an outage at start) and, once connected, reconnects on its own."""
    from data_plane.eventbus import connect_forever

    port, monitor = free_port(), free_port()
    url = f"nats://127.0.0.1:{port}"
    pending = asyncio.create_task(connect_forever(url, "late-starter"))
    await asyncio.sleep(0.8)
    assert not pending.done()  # retrying quietly, no exception escapes
    server = nats_server(port, monitor, tmp_path / "js", tmp_path / "nats.log").start()
    try:
        server.wait_port("127.0.0.1", port)
        nc = await asyncio.wait_for(pending, 10)
        assert nc.is_connected
        await nc.close()
    finally:
        pending.cancel()
        server.stop()
