"""The `toxiproxy-python` client (package ``toxiproxy``) against the server under test, unchanged."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from tests.conformance._support import connect, port_of, read_until_closed, refuses, round_trip

pytestmark = pytest.mark.integration

PAYLOAD = b"p" * 32


@pytest.fixture
def server(target) -> Iterator[Toxiproxy]:
    """A client pointed at the server under test; proxies it created are destroyed afterwards."""
    saved = APIConsumer.host, APIConsumer.port
    url = urlsplit(target.api.url)
    client = Toxiproxy()
    client.update_api_consumer(url.hostname, url.port)
    before = set(client.proxies())
    yield client
    for name, proxy in client.proxies().items():
        if name not in before:
            proxy.destroy()
    APIConsumer.host, APIConsumer.port = saved


@pytest.fixture
def echo(target, upstreams) -> str:
    return f"{target.upstream_host}:{upstreams.ports['echo']}"


def _name() -> str:
    return f"conf_py_{uuid.uuid4().hex[:8]}"


def test_running_and_version(server):
    assert server.running() is True
    assert b"version" in server.version()


def test_create_lists_and_gets_a_proxy(server, target, echo):
    name = _name()
    proxy = server.create(upstream=echo, name=name, listen=target.listen())
    assert proxy.name == name and proxy.upstream == echo and proxy.enabled is True
    assert port_of(proxy.listen) != 0
    assert name in server.proxies()
    fetched = server.get_proxy(name)
    assert fetched is not None and fetched.listen == proxy.listen
    assert server.get_proxy("conf_py_missing") is None


def test_create_defaults_listen_to_a_free_loopback_port(server, target, echo):
    if target.ports is not None:
        pytest.skip("the client's default listen (127.0.0.1:0) is not reachable in a port-mapped container")
    proxy = server.create(upstream=echo, name=_name())
    assert proxy.listen.startswith("127.0.0.1:") and port_of(proxy.listen) != 0


def test_duplicate_create_raises_proxy_exists(server, target, echo):
    name = _name()
    server.create(upstream=echo, name=name, listen=target.listen())
    with pytest.raises(ProxyExists):  # the client checks first
        server.create(upstream=echo, name=name, listen=target.listen())
    with pytest.raises(ProxyExists):  # and maps the server's 409
        APIConsumer.post("/proxies", json={"name": name, "upstream": echo, "listen": target.listen()})


def test_toxics_add_list_apply_and_destroy(server, target, echo):
    proxy = server.create(upstream=echo, name=_name(), listen=target.listen())
    proxy.add_toxic(type="latency", attributes={"latency": 300})
    toxics = proxy.toxics()
    assert list(toxics) == ["latency_downstream"]
    toxic = toxics["latency_downstream"]
    assert (toxic.type, toxic.stream, toxic.toxicity) == ("latency", "downstream", 1)
    assert toxic.attributes == {"latency": 300, "jitter": 0}
    sock = connect(target.connect_host, port_of(proxy.listen))
    try:
        assert round_trip(sock, PAYLOAD)[0] >= 0.3
        assert proxy.destroy_toxic("latency_downstream") is True
        assert round_trip(sock, PAYLOAD)[0] < 0.2
    finally:
        sock.close()
    assert proxy.get_toxic("latency_downstream") is None


def test_invalid_toxic_raises_invalid_toxic(server, target, echo):
    proxy = server.create(upstream=echo, name=_name(), listen=target.listen())
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="no_such_toxic")
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="latency", stream="sideways")


def test_down_context_disables_then_reenables(server, target, echo):
    proxy = server.create(upstream=echo, name=_name(), listen=target.listen())
    live = connect(target.connect_host, port_of(proxy.listen))
    try:
        assert round_trip(live, PAYLOAD)[1] == PAYLOAD
        with proxy.down():
            assert server.get_proxy(proxy.name).enabled is False
            assert read_until_closed(live, timeout=2).how in ("eof", "reset")
            assert refuses(target.connect_host, port_of(proxy.listen))
        assert server.get_proxy(proxy.name).enabled is True
    finally:
        live.close()
    again = connect(target.connect_host, port_of(proxy.listen))
    try:
        assert round_trip(again, PAYLOAD)[1] == PAYLOAD
    finally:
        again.close()


def test_destroy_then_destroy_again_raises_not_found(server, target, echo):
    proxy = server.create(upstream=echo, name=_name(), listen=target.listen())
    assert server.destroy(proxy) is True
    assert proxy.name not in server.proxies()
    with pytest.raises(NotFound):
        proxy.destroy()


def test_reset_clears_toxics_and_reenables(server, target, echo):
    proxy = server.create(upstream=echo, name=_name(), listen=target.listen())
    proxy.add_toxic(type="bandwidth", stream="upstream", attributes={"rate": 1})
    proxy.disable()
    assert server.reset() is True
    after = server.get_proxy(proxy.name)
    assert after.enabled is True and after.toxics() == {}


def test_populate_creates_missing_and_keeps_existing(server, target, echo):
    first = server.create(upstream=echo, name=_name(), listen=target.listen())
    second = {"name": _name(), "upstream": echo, "listen": target.listen()}
    created = server.populate([{"name": first.name, "upstream": echo, "listen": first.listen}, second])
    assert [p.name for p in created] == [second["name"]]
    assert {first.name, second["name"]} <= set(server.proxies())
