"""What each toxic does to real TCP traffic through the proxy, and live changes to open connections.

Timings use small delays (100-300 ms) and small transfers; lower bounds are what a toxic
guarantees, upper bounds are loose (shared CI machines are noisy).
"""

from __future__ import annotations

import http.client
import time

import pytest

from tests.conformance._support import (
    add_toxic,
    port_of,
    read_until_closed,
    recv_exactly,
    refuses,
    round_trip,
)

pytestmark = pytest.mark.integration

PAYLOAD = b"x" * 64


def test_without_toxics_bytes_pass_unchanged_and_fast(make_proxy, dial):
    sock = dial(make_proxy("echo"))
    payload = bytes(range(256)) * 64
    elapsed, reply = round_trip(sock, payload)
    assert reply == payload
    assert elapsed < 0.5


def test_latency_delays_each_round_trip_by_at_least_its_value(api, make_proxy, dial):
    proxy = make_proxy("echo")
    add_toxic(api, proxy["name"], type="latency", attributes={"latency": 150})
    sock = dial(proxy)
    for _ in range(2):
        elapsed, reply = round_trip(sock, PAYLOAD)
        assert reply == PAYLOAD
        assert 0.15 <= elapsed < 1.0


def test_latency_jitter_stays_within_its_band(api, make_proxy, dial):
    proxy = make_proxy("echo")
    add_toxic(api, proxy["name"], type="latency", attributes={"latency": 100, "jitter": 50})
    sock = dial(proxy)
    for _ in range(3):
        elapsed, _ = round_trip(sock, PAYLOAD)
        assert 0.05 <= elapsed < 0.9


def test_latency_on_http_upstream(api, make_proxy, target):
    proxy = make_proxy("http")
    add_toxic(api, proxy["name"], type="latency", attributes={"latency": 120})
    conn = http.client.HTTPConnection(target.connect_host, port_of(proxy["listen"]), timeout=5)
    try:
        for _ in range(2):  # keep-alive: the toxic applies to every response on the connection
            start = time.monotonic()
            conn.request("GET", "/")
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read() == b"ok"
            assert time.monotonic() - start >= 0.12
    finally:
        conn.close()


def test_direction_upstream_delays_requests_but_not_the_servers_banner(api, make_proxy, dial):
    proxy = make_proxy("banner")
    add_toxic(api, proxy["name"], type="latency", stream="upstream", attributes={"latency": 300})
    start = time.monotonic()
    sock = dial(proxy)
    assert recv_exactly(sock, 7) == b"banner\n"
    assert time.monotonic() - start < 0.25
    elapsed, reply = round_trip(sock, PAYLOAD)
    assert reply == PAYLOAD and elapsed >= 0.3


def test_direction_downstream_delays_the_servers_banner(api, make_proxy, dial):
    proxy = make_proxy("banner")
    add_toxic(api, proxy["name"], type="latency", attributes={"latency": 200})
    start = time.monotonic()
    sock = dial(proxy)
    assert recv_exactly(sock, 7) == b"banner\n"
    assert time.monotonic() - start >= 0.2


def test_bandwidth_limits_throughput(api, make_proxy, dial):
    proxy = make_proxy("echo")
    add_toxic(api, proxy["name"], type="bandwidth", attributes={"rate": 50})  # 50 KB/s
    sock = dial(proxy)
    payload = b"b" * 25_000  # 0.5 s at 50 KB/s
    elapsed, reply = round_trip(sock, payload, timeout=10)
    assert reply == payload
    assert 0.4 <= elapsed < 3.0


def test_slow_close_delays_the_close_not_the_data(api, make_proxy, dial):
    proxy = make_proxy("bye")
    add_toxic(api, proxy["name"], type="slow_close", attributes={"delay": 400})
    sock = dial(proxy)
    start = time.monotonic()
    assert recv_exactly(sock, 4) == b"bye\n"
    data_at = time.monotonic() - start
    end = read_until_closed(sock, timeout=5)
    closed_at = time.monotonic() - start
    assert end.how == "eof"
    assert closed_at >= 0.4 and closed_at - data_at >= 0.25  # data came at once, the FIN late


def test_timeout_swallows_data_and_closes_after_the_timeout(api, make_proxy, dial):
    proxy = make_proxy("echo")
    add_toxic(api, proxy["name"], type="timeout", attributes={"timeout": 200})
    sock = dial(proxy)
    sock.sendall(PAYLOAD)
    end = read_until_closed(sock, timeout=5)
    assert end.data == b"" and end.how in ("eof", "reset")
    assert 0.2 <= end.after < 2.0


def test_timeout_zero_holds_data_until_the_toxic_is_removed(api, make_proxy, dial):
    proxy = make_proxy("echo")
    add_toxic(api, proxy["name"], type="timeout", attributes={"timeout": 0})
    sock = dial(proxy)
    sock.sendall(PAYLOAD)
    held = read_until_closed(sock, timeout=0.5)
    assert held.how == "open" and held.data == b""
    # Removing a timeout toxic closes the connections it was holding (Toxiproxy's cleanup).
    assert api.delete(f"/proxies/{proxy['name']}/toxics/timeout_downstream").status == 204
    assert read_until_closed(sock, timeout=3).how in ("eof", "reset")


def test_reset_peer_resets_the_connection(api, make_proxy, dial):
    proxy = make_proxy("echo")
    add_toxic(api, proxy["name"], type="reset_peer", attributes={"timeout": 0})
    sock = dial(proxy)
    sock.sendall(PAYLOAD)
    end = read_until_closed(sock, timeout=3)
    assert end.how == "reset" and end.data == b""


def test_reset_peer_waits_its_timeout_after_the_first_data(api, make_proxy, dial):
    proxy = make_proxy("echo")
    add_toxic(api, proxy["name"], type="reset_peer", attributes={"timeout": 200})
    sock = dial(proxy)
    sock.sendall(PAYLOAD)
    end = read_until_closed(sock, timeout=3)
    assert end.how == "reset" and end.after >= 0.2


def test_slicer_splits_data_into_small_writes(api, make_proxy, dial):
    proxy = make_proxy("echo")
    add_toxic(api, proxy["name"], type="slicer",
              attributes={"average_size": 10, "size_variation": 0, "delay": 3000})
    sock = dial(proxy)
    payload = bytes(range(200))
    sock.sendall(payload)
    got, reads = b"", 0
    sock.settimeout(3)
    while len(got) < len(payload):
        part = sock.recv(4096)
        assert part
        got += part
        reads += 1
    assert got == payload
    assert reads >= 5  # 20 slices 3 ms apart; a plain copy arrives in one or two reads


def test_limit_data_closes_after_the_byte_limit(api, make_proxy, dial):
    proxy = make_proxy("echo")
    add_toxic(api, proxy["name"], type="limit_data", attributes={"bytes": 100})
    sock = dial(proxy)
    sock.sendall(bytes(300))
    end = read_until_closed(sock, timeout=3)
    assert end.data == bytes(100) and end.how in ("eof", "reset")


def test_limit_data_upstream_limits_what_the_server_receives(api, make_proxy, dial):
    proxy = make_proxy("echo")
    add_toxic(api, proxy["name"], type="limit_data", stream="upstream", attributes={"bytes": 50})
    sock = dial(proxy)
    assert round_trip(sock, bytes(range(30)))[1] == bytes(range(30))  # under the limit: echoed
    sock.sendall(bytes(range(100, 140)))
    # The server gets 20 more bytes, then the proxy closes both sockets; its echo may not make it.
    end = read_until_closed(sock, timeout=3)
    assert end.how in ("eof", "reset")
    assert bytes(range(100, 120)).startswith(end.data)


def test_toxicity_zero_never_applies(api, make_proxy, dial):
    proxy = make_proxy("echo")
    add_toxic(api, proxy["name"], type="latency", toxicity=0.0, attributes={"latency": 1000})
    for _ in range(3):  # toxicity is rolled per connection
        elapsed, _ = round_trip(dial(proxy), PAYLOAD)
        assert elapsed < 0.5


def test_toxic_changes_apply_to_an_open_connection(api, make_proxy, dial):
    proxy = make_proxy("echo")
    sock = dial(proxy)
    assert round_trip(sock, PAYLOAD)[0] < 0.2
    add_toxic(api, proxy["name"], type="latency", attributes={"latency": 250})
    assert round_trip(sock, PAYLOAD)[0] >= 0.25
    path = f"/proxies/{proxy['name']}/toxics/latency_downstream"
    assert api.patch(path, {"attributes": {"latency": 400}}).status == 200
    assert round_trip(sock, PAYLOAD)[0] >= 0.4
    assert api.delete(path).status == 204
    elapsed, reply = round_trip(sock, PAYLOAD)
    assert reply == PAYLOAD and elapsed < 0.2


def test_disabling_closes_live_connections_and_the_listener(api, make_proxy, dial, target):
    proxy = make_proxy("echo")
    sock = dial(proxy)
    assert round_trip(sock, PAYLOAD)[1] == PAYLOAD
    assert api.patch(f"/proxies/{proxy['name']}", {"enabled": False}).status == 200
    assert read_until_closed(sock, timeout=2).how in ("eof", "reset")
    assert refuses(target.connect_host, port_of(proxy["listen"]))
    api.patch(f"/proxies/{proxy['name']}", {"enabled": True})
    assert round_trip(dial(proxy), PAYLOAD)[1] == PAYLOAD


def test_deleting_closes_live_connections(api, make_proxy, dial):
    proxy = make_proxy("echo")
    sock = dial(proxy)
    assert round_trip(sock, PAYLOAD)[1] == PAYLOAD
    assert api.delete(f"/proxies/{proxy['name']}").status == 204
    assert read_until_closed(sock, timeout=2).how in ("eof", "reset")


def test_reset_removes_toxics_from_live_traffic(api, make_proxy, dial):
    proxy = make_proxy("echo")
    add_toxic(api, proxy["name"], type="latency", attributes={"latency": 300})
    sock = dial(proxy)
    assert round_trip(sock, PAYLOAD)[0] >= 0.3
    assert api.post("/reset").status == 204
    assert round_trip(sock, PAYLOAD)[0] < 0.2
