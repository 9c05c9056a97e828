"""Toxic semantics without sockets: pure helpers, attribute parsing, and each pipe on real queues."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaos.proxy.errors import ApiError
from chaos.proxy.jsonbody import decode_body
from chaos.proxy.toxics import (
    TOXIC_TYPES,
    Chunk,
    Direction,
    Toxic,
    latency_delay_s,
    parse_attributes,
    run_toxic,
    slice_bounds,
)


class RecordingStage:
    """A chain position whose output is recorded with arrival times (the pipes' only seam)."""

    def __init__(self) -> None:
        self.input: asyncio.Queue[Chunk | None] = asyncio.Queue()
        self.state: dict[str, int] = {}
        self.out: list[tuple[float, bytes | None]] = []
        self.dropped = 0
        self.resets = 0
        self.t0 = time.monotonic()

    def emit(self, chunk: Chunk | None) -> None:
        self.out.append((time.monotonic() - self.t0, None if chunk is None else chunk.data))

    def drop(self, nbytes: int) -> None:
        self.dropped += nbytes

    def reset_connection(self) -> None:
        self.resets += 1

    def send(self, data: bytes | None, age: float = 0.0) -> None:
        self.input.put_nowait(None if data is None else Chunk(data, time.monotonic() - age))

    @property
    def data(self) -> bytes:
        return b"".join(d for _, d in self.out if d)

    @property
    def closed(self) -> bool:
        return any(d is None for _, d in self.out)


def toxic(kind: str, toxicity: float = 1.0, **attrs: int) -> Toxic:
    return Toxic(name=kind, type=kind, stream="downstream", direction=Direction.DOWNSTREAM,
                 toxicity=toxicity, attributes=parse_attributes(kind, attrs))


def start(t: Toxic, stage: RecordingStage, active: bool = True) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(run_toxic(t, stage, random.Random(7), active))


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.wait([task])


# ---- pure helpers ------------------------------------------------------------------------------

def test_latency_delay_without_jitter_is_exact():
    assert latency_delay_s(150, 0, random.Random(1)) == 0.15


def test_latency_jitter_stays_in_the_half_open_band():
    rng = random.Random(3)
    delays = [latency_delay_s(100, 20, rng) for _ in range(2000)]
    assert min(delays) >= 0.080 and max(delays) < 0.120
    assert max(delays) - min(delays) > 0.03  # it really varies


@given(size=st.integers(0, 5000), average=st.integers(-2, 300), variation=st.integers(-2, 400),
       seed=st.integers(0, 2**16))
def test_slice_bounds_cover_the_chunk_with_non_empty_ordered_slices(size, average, variation, seed):
    bounds = slice_bounds(size, average, variation, random.Random(seed))
    assert [b for b in bounds if b[0] >= b[1]] == []
    flat = [0] + [x for b in bounds for x in b] + [size]
    assert flat == sorted(flat)
    assert sum(end - start for start, end in bounds) == size


def test_slice_bounds_are_near_the_average_without_variation():
    sizes = [end - start for start, end in slice_bounds(1000, 10, 0, random.Random(0))]
    assert all(5 <= s <= 10 for s in sizes)


def test_to_json_prints_integral_toxicity_as_an_integer():
    assert toxic("latency", latency=5).to_json() == {
        "attributes": {"latency": 5, "jitter": 0}, "name": "latency", "type": "latency",
        "stream": "downstream", "toxicity": 1}
    assert toxic("latency", toxicity=0.5).to_json()["toxicity"] == 0.5


# ---- attribute and body decoding ------------------------------------------------------------------

def test_attributes_default_to_zero_ignore_unknown_keys_and_match_case_insensitively():
    assert parse_attributes("slicer", {"Average_Size": 7, "bogus": "x"}) == {
        "average_size": 7, "size_variation": 0, "delay": 0}
    assert parse_attributes("noop", {"anything": 1}) == {}


def test_attribute_null_keeps_the_current_value():
    assert parse_attributes("latency", {"latency": None, "jitter": 4}, {"latency": 100, "jitter": 1}) == {
        "latency": 100, "jitter": 4}
    assert parse_attributes("latency", None, {"latency": 100, "jitter": 1}) == {"latency": 100, "jitter": 1}


@pytest.mark.parametrize("bad", [1.5, 100.0, "100", True, [1], 2**63])
def test_non_integer_attributes_are_400_naming_the_field(bad):
    with pytest.raises(ApiError) as err:
        parse_attributes("latency", {"latency": bad})
    assert err.value.status == 400
    assert err.value.message.startswith("bad request body: json: cannot unmarshal")
    assert "latency" in err.value.message


def test_attributes_must_be_an_object():
    with pytest.raises(ApiError, match="bad request body"):
        parse_attributes("latency", [1, 2])


def test_body_decoding_reads_the_first_value_like_go():
    assert decode_body(b' {"a": 1} trailing junk') == {"a": 1}
    with pytest.raises(ApiError, match=r"^bad request body: EOF$"):
        decode_body(b"  ")
    with pytest.raises(ApiError, match=r"^bad request body: "):
        decode_body(b"{oops")


def test_every_toxiproxy_type_is_registered_with_its_attributes():
    assert {k: v.attributes for k, v in TOXIC_TYPES.items()} == {
        "noop": (), "latency": ("latency", "jitter"), "bandwidth": ("rate",), "slow_close": ("delay",),
        "timeout": ("timeout",), "reset_peer": ("timeout",),
        "slicer": ("average_size", "size_variation", "delay"), "limit_data": ("bytes",)}


# ---- pipes -------------------------------------------------------------------------------------

async def test_latency_holds_each_chunk_for_its_delay_counted_from_when_it_was_read():
    stage = RecordingStage()
    task = start(toxic("latency", latency=100), stage)
    stage.send(b"fresh")
    stage.send(b"old", age=0.06)  # read 60 ms ago: only ~40 ms left to wait
    stage.send(None)
    await asyncio.wait_for(task, 2)
    (t1, d1), (t2, d2), (_, end) = stage.out
    assert (d1, d2, end) == (b"fresh", b"old", None)
    assert t1 >= 0.1 and t2 - t1 < 0.05


async def test_latency_passes_held_data_on_when_interrupted():
    stage = RecordingStage()
    task = start(toxic("latency", latency=10_000), stage)
    stage.send(b"held")
    await asyncio.sleep(0.02)
    await stop(task)
    assert stage.data == b"held"


async def test_inactive_toxic_passes_data_untouched():
    stage = RecordingStage()
    task = start(toxic("latency", toxicity=0.0, latency=10_000), stage, active=False)
    stage.send(b"quick")
    stage.send(None)
    await asyncio.wait_for(task, 1)
    assert stage.out[0][0] < 1.0 and stage.data == b"quick"


async def test_bandwidth_paces_to_the_rate_in_100ms_pieces():
    stage = RecordingStage()
    task = start(toxic("bandwidth", rate=100), stage)  # 100 KB/s = 10,000 bytes per 100 ms
    stage.send(b"z" * 25_000)
    stage.send(None)
    await asyncio.wait_for(task, 3)
    sizes = [len(d) for _, d in stage.out if d]
    assert sizes == [10_000, 10_000, 5_000]
    assert stage.out[-2][0] >= 0.24  # 25,000 bytes at 100,000 B/s


async def test_zero_bandwidth_holds_data_until_the_toxic_changes():
    stage = RecordingStage()
    task = start(toxic("bandwidth", rate=0), stage)
    stage.send(b"stuck")
    await asyncio.sleep(0.1)
    assert stage.out == []
    await stop(task)
    assert stage.data == b"stuck"


async def test_slow_close_delays_only_the_close():
    stage = RecordingStage()
    task = start(toxic("slow_close", delay=300), stage)
    stage.send(b"data")
    stage.send(None)
    await asyncio.wait_for(task, 2)
    (t_data, _), (t_end, end) = stage.out
    assert end is None and t_data < 0.15 and t_end >= 0.3


async def test_timeout_swallows_data_and_closes_after_quiet_time():
    stage = RecordingStage()
    task = start(toxic("timeout", timeout=100), stage)
    stage.send(b"gone")
    await asyncio.sleep(0.06)
    stage.send(b"also gone")  # data restarts the timer
    await asyncio.wait_for(task, 2)
    assert stage.out[-1][1] is None and stage.data == b""
    assert stage.out[-1][0] >= 0.16 and stage.dropped == len(b"gonealso gone")


async def test_timeout_zero_never_closes_by_itself():
    stage = RecordingStage()
    task = start(toxic("timeout", timeout=0), stage)
    stage.send(b"held")
    await asyncio.sleep(0.15)
    assert not task.done() and stage.out == []
    await stop(task)


async def test_reset_peer_resets_its_timeout_after_the_first_data():
    stage = RecordingStage()
    task = start(toxic("reset_peer", timeout=80), stage)
    await asyncio.sleep(0.05)
    assert stage.resets == 0  # nothing happens before data
    stage.send(b"trigger")
    started = time.monotonic()
    await asyncio.wait_for(task, 2)
    assert stage.resets == 1 and time.monotonic() - started >= 0.08 and stage.data == b""


async def test_slicer_splits_and_keeps_every_byte_in_order():
    stage = RecordingStage()
    task = start(toxic("slicer", average_size=8, size_variation=3, delay=100), stage)
    payload = bytes(range(200))
    stage.send(payload)
    stage.send(None)
    await asyncio.wait_for(task, 2)
    pieces = [d for _, d in stage.out if d]
    assert b"".join(pieces) == payload and len(pieces) >= 200 // 12


async def test_slicer_passes_the_rest_on_when_interrupted():
    stage = RecordingStage()
    task = start(toxic("slicer", average_size=10, size_variation=0, delay=200_000), stage)
    stage.send(bytes(100))
    await asyncio.sleep(0.05)
    await stop(task)
    assert stage.data == bytes(100)


async def test_limit_data_cuts_at_the_limit_and_keeps_count_across_restarts():
    stage = RecordingStage()
    limit = toxic("limit_data", bytes=10)
    task = start(limit, stage)
    stage.send(b"123456")
    await asyncio.sleep(0.01)
    await stop(task)  # an update restarts the pipe: the count must survive
    task = start(limit, stage)
    stage.send(b"789abcdef")
    await asyncio.wait_for(task, 1)
    assert stage.data == b"123456789a" and stage.closed and stage.dropped == 5


def test_nan_and_infinity_are_not_json():
    for raw in (b'{"toxicity": NaN}', b'{"toxicity": Infinity}'):
        with pytest.raises(ApiError, match="bad request body"):
            decode_body(raw)


async def test_absurdly_long_int64_delays_hold_instead_of_crashing_the_loop():
    stage = RecordingStage()
    task = start(toxic("latency", latency=2**62), stage)
    stage.send(b"held")
    await asyncio.sleep(0.05)
    assert not task.done() and stage.out == []
    await stop(task)
    assert stage.data == b"held"
