"""Toxiproxy 2.12 HTTP API: paths, methods, status codes, JSON shapes, defaults, error bodies."""

from __future__ import annotations

import re
import socket

import pytest

from data_plane.netutil import free_port
from tests.conformance._support import add_toxic, port_of, refuses

pytestmark = pytest.mark.integration

PROXY_KEYS = ["name", "listen", "upstream", "enabled", "toxics"]
TOXIC_KEYS = ["attributes", "name", "type", "stream", "toxicity"]


def error(reply) -> dict:
    return reply.json()


# ---- /version, routing -------------------------------------------------------------------------

def test_version_is_a_json_object_with_a_semver_string(api):
    reply = api.get("/version")
    assert reply.status == 200
    assert re.match(r"^\d+\.\d+\.\d+", reply.json()["version"])


def test_answers_carry_a_request_id(api):
    assert api.get("/proxies").headers.get("X-Toxiproxy-Request-Id")


def test_unknown_path_is_404_and_wrong_method_is_405(api):
    assert api.get("/nothing-here").status == 404
    assert api.call("PUT", "/proxies").status == 405
    assert api.call("DELETE", "/reset").status == 405


def test_browser_user_agents_are_refused_with_403(api):
    reply = api.call("GET", "/proxies", headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"})
    assert reply.status == 403


# ---- proxies -----------------------------------------------------------------------------------

def test_create_answers_201_with_the_proxy_and_defaults_to_enabled(api, target, upstreams, name):
    upstream = f"{target.upstream_host}:{upstreams.ports['echo']}"
    reply = api.post("/proxies", {"name": name, "listen": target.listen(), "upstream": upstream})
    try:
        assert reply.status == 201
        proxy = reply.json()
        # Toxiproxy 2.12 also emits "Logger": {} (an artefact of its Go struct); allowed, not required.
        assert [k for k in proxy if k != "Logger"] == PROXY_KEYS
        assert proxy["name"] == name and proxy["upstream"] == upstream
        assert proxy["enabled"] is True and proxy["toxics"] == []
        assert reply.headers["Content-Type"].startswith("application/json")
    finally:
        api.delete(f"/proxies/{name}")


def test_listen_on_port_zero_reports_the_bound_port_which_accepts_connections(make_proxy, target):
    proxy = make_proxy("echo", listen=f"{target.listen_host}:0")
    port = port_of(proxy["listen"])
    assert port != 0
    if target.ports is None:  # a port-mapped container cannot expose a random port
        assert not refuses(target.connect_host, port)


def test_create_without_name_or_upstream_is_400_missing_field(api, target, upstreams):
    reply = api.post("/proxies", {"listen": target.listen(), "upstream": "127.0.0.1:1"})
    assert reply.status == 400
    assert error(reply) == {"error": "missing required field: name", "status": 400}
    reply = api.post("/proxies", {"name": "conf_no_upstream", "listen": target.listen()})
    assert reply.status == 400
    assert error(reply) == {"error": "missing required field: upstream", "status": 400}


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]", b'{"name": 5, "upstream": "x:1"}',
                                 b'{"name": "a", "upstream": "x:1", "enabled": "yes"}'])
def test_create_with_a_bad_body_is_400_bad_request_body(api, raw):
    reply = api.post("/proxies", raw=raw)
    assert reply.status == 400
    body = error(reply)
    assert body["status"] == 400 and body["error"].startswith("bad request body")


def test_create_with_a_taken_name_is_409(api, make_proxy, target, upstreams):
    proxy = make_proxy()
    reply = api.post("/proxies", {"name": proxy["name"], "listen": target.listen(),
                                  "upstream": proxy["upstream"]})
    assert reply.status == 409
    assert error(reply) == {"error": "proxy already exists", "status": 409}


def test_create_disabled_does_not_listen(make_proxy, target):
    port = next(target.ports) if target.ports is not None else free_port()
    proxy = make_proxy("echo", listen=f"{target.listen_host}:{port}", enabled=False)
    assert proxy["enabled"] is False and port_of(proxy["listen"]) == port
    assert refuses(target.connect_host, port)


def test_index_is_an_object_keyed_by_name(api, make_proxy):
    a, b = make_proxy(), make_proxy()
    reply = api.get("/proxies")
    assert reply.status == 200
    proxies = reply.json()
    assert isinstance(proxies, dict)
    assert proxies[a["name"]] == a and proxies[b["name"]] == b


def test_show_returns_the_proxy_and_404_for_unknown(api, make_proxy):
    proxy = make_proxy()
    assert api.get(f"/proxies/{proxy['name']}").json() == proxy
    reply = api.get("/proxies/conf_no_such_proxy")
    assert reply.status == 404
    assert error(reply) == {"error": "proxy not found", "status": 404}


@pytest.mark.parametrize("method", ["PATCH", "POST"])
def test_update_disables_and_reenables_on_the_same_port(api, make_proxy, target, method):
    proxy = make_proxy()
    path = f"/proxies/{proxy['name']}"
    reply = api.call(method, path, {"enabled": False})
    assert reply.status == 200
    assert reply.json() == {**proxy, "enabled": False}
    assert refuses(target.connect_host, port_of(proxy["listen"]))
    reply = api.call(method, path, {"enabled": True})
    assert reply.json() == proxy
    assert not refuses(target.connect_host, port_of(proxy["listen"]))


def test_update_upstream_keeps_other_fields(api, make_proxy, upstreams, target):
    proxy = make_proxy("echo")
    upstream = f"{target.upstream_host}:{upstreams.ports['banner']}"
    reply = api.patch(f"/proxies/{proxy['name']}", {"upstream": upstream})
    assert reply.status == 200
    assert reply.json()["upstream"] == upstream and reply.json()["enabled"] is True


def test_update_unknown_is_404_and_bad_body_is_400(api, make_proxy):
    assert api.patch("/proxies/conf_no_such_proxy", {"enabled": False}).status == 404
    proxy = make_proxy()
    reply = api.patch(f"/proxies/{proxy['name']}", raw=b"{")
    assert reply.status == 400 and error(reply)["error"].startswith("bad request body")


def test_delete_answers_204_closes_the_listener_then_404(api, make_proxy, target):
    proxy = make_proxy()
    reply = api.delete(f"/proxies/{proxy['name']}")
    assert reply.status == 204 and reply.body == b""
    assert refuses(target.connect_host, port_of(proxy["listen"]))
    reply = api.delete(f"/proxies/{proxy['name']}")
    assert reply.status == 404
    assert error(reply) == {"error": "proxy not found", "status": 404}


# ---- toxics ------------------------------------------------------------------------------------

EXPECTED_ATTRIBUTES = {
    "latency": {"latency": 0, "jitter": 0},
    "bandwidth": {"rate": 0},
    "slow_close": {"delay": 0},
    "timeout": {"timeout": 0},
    "reset_peer": {"timeout": 0},
    "slicer": {"average_size": 0, "size_variation": 0, "delay": 0},
    "limit_data": {"bytes": 0},
}


@pytest.mark.parametrize("kind", sorted(EXPECTED_ATTRIBUTES))
def test_create_toxic_answers_200_with_defaults(api, make_proxy, kind):
    proxy = make_proxy()
    reply = api.post(f"/proxies/{proxy['name']}/toxics", {"type": kind})
    assert reply.status == 200
    toxic = reply.json()
    assert list(toxic) == TOXIC_KEYS
    assert toxic == {"attributes": EXPECTED_ATTRIBUTES[kind], "name": f"{kind}_downstream",
                     "type": kind, "stream": "downstream", "toxicity": 1}


def test_create_toxic_keeps_given_fields(api, make_proxy):
    proxy = make_proxy()
    toxic = add_toxic(api, proxy["name"], name="slow", type="latency", stream="upstream", toxicity=0.5,
                      attributes={"latency": 150, "jitter": 10, "unknown": 1})
    assert toxic == {"attributes": {"latency": 150, "jitter": 10}, "name": "slow", "type": "latency",
                     "stream": "upstream", "toxicity": 0.5}
    shown = api.get(f"/proxies/{proxy['name']}").json()
    assert shown["toxics"] == [toxic]


def test_stream_is_case_insensitive_and_echoed_as_given(api, make_proxy):
    proxy = make_proxy()
    toxic = add_toxic(api, proxy["name"], type="latency", stream="UpStream")
    assert toxic["stream"] == "UpStream" and toxic["name"] == "latency_UpStream"


def test_toxic_errors_have_toxiproxy_bodies(api, make_proxy):
    proxy = make_proxy()
    path = f"/proxies/{proxy['name']}/toxics"
    reply = api.post(path, {"type": "no_such_toxic"})
    assert reply.status == 400
    assert error(reply) == {"error": "invalid toxic type", "status": 400}
    reply = api.post(path, {"type": "no_such_toxic", "stream": "sideways"})
    assert reply.status == 400  # the stream is checked first
    assert error(reply) == {"error": "stream was invalid, can be either upstream or downstream",
                            "status": 400}
    add_toxic(api, proxy["name"], name="dup", type="latency")
    reply = api.post(path, {"name": "dup", "type": "timeout", "stream": "upstream"})
    assert reply.status == 409  # names are unique across both directions
    assert error(reply) == {"error": "toxic already exists", "status": 409}
    reply = api.post(path, {"type": "latency", "attributes": {"latency": "slow"}})
    assert reply.status == 400 and error(reply)["error"].startswith("bad request body")
    reply = api.post(path, raw=b"nope")
    assert reply.status == 400 and error(reply)["error"].startswith("bad request body")
    reply = api.post("/proxies/conf_no_such_proxy/toxics", {"type": "latency"})
    assert reply.status == 404
    assert error(reply) == {"error": "proxy not found", "status": 404}


def test_toxic_index_and_show(api, make_proxy):
    proxy = make_proxy()
    down = add_toxic(api, proxy["name"], type="latency", attributes={"latency": 5})
    up = add_toxic(api, proxy["name"], type="bandwidth", stream="upstream", attributes={"rate": 9})
    reply = api.get(f"/proxies/{proxy['name']}/toxics")
    assert reply.status == 200
    assert reply.json() == [up, down]  # upstream chain first, then downstream
    assert api.get(f"/proxies/{proxy['name']}/toxics/latency_downstream").json() == down
    reply = api.get(f"/proxies/{proxy['name']}/toxics/nope")
    assert reply.status == 404
    assert error(reply) == {"error": "toxic not found", "status": 404}


@pytest.mark.parametrize("method", ["PATCH", "POST"])
def test_toxic_update_merges_attributes_and_toxicity(api, make_proxy, method):
    proxy = make_proxy()
    add_toxic(api, proxy["name"], type="latency", attributes={"latency": 100, "jitter": 20})
    path = f"/proxies/{proxy['name']}/toxics/latency_downstream"
    reply = api.call(method, path, {"attributes": {"latency": 300}})
    assert reply.status == 200
    assert reply.json()["attributes"] == {"latency": 300, "jitter": 20}
    assert reply.json()["toxicity"] == 1
    reply = api.call(method, path, {"toxicity": 0.25, "name": "ignored", "stream": "upstream"})
    assert reply.json() == {"attributes": {"latency": 300, "jitter": 20}, "name": "latency_downstream",
                            "type": "latency", "stream": "downstream", "toxicity": 0.25}
    reply = api.call(method, f"/proxies/{proxy['name']}/toxics/nope", {"toxicity": 1})
    assert reply.status == 404
    assert error(reply) == {"error": "toxic not found", "status": 404}


def test_toxic_delete_answers_204_then_404(api, make_proxy):
    proxy = make_proxy()
    add_toxic(api, proxy["name"], type="latency")
    path = f"/proxies/{proxy['name']}/toxics/latency_downstream"
    reply = api.delete(path)
    assert reply.status == 204 and reply.body == b""
    assert api.get(f"/proxies/{proxy['name']}/toxics").json() == []
    reply = api.delete(path)
    assert reply.status == 404
    assert error(reply) == {"error": "toxic not found", "status": 404}


# ---- /populate, /reset ---------------------------------------------------------------------------

def test_populate_creates_keeps_unchanged_and_replaces_changed(api, target, upstreams):
    echo = f"{target.upstream_host}:{upstreams.ports['echo']}"
    banner = f"{target.upstream_host}:{upstreams.ports['banner']}"
    names = ["conf_pop_a", "conf_pop_b"]
    try:
        reply = api.post("/populate", [{"name": n, "listen": target.listen(), "upstream": echo}
                                       for n in names])
        assert reply.status == 201
        created = reply.json()
        assert list(created) == ["proxies"]
        assert [p["name"] for p in created["proxies"]] == names
        assert all(p["enabled"] and port_of(p["listen"]) != 0 for p in created["proxies"])
        a, b = created["proxies"]
        add_toxic(api, "conf_pop_a", type="latency")
        add_toxic(api, "conf_pop_b", type="latency")
        again = [{"name": "conf_pop_a", "listen": a["listen"], "upstream": echo},
                 {"name": "conf_pop_b", "listen": b["listen"], "upstream": banner}]
        reply = api.post("/populate", again)
        assert reply.status == 201
        kept, replaced = reply.json()["proxies"]
        assert len(kept["toxics"]) == 1 and kept["listen"] == a["listen"]  # same: untouched
        assert replaced["toxics"] == [] and replaced["upstream"] == banner  # changed: new proxy
    finally:
        for n in names:
            api.delete(f"/proxies/{n}")


def test_populate_can_create_disabled_proxies(api, target, upstreams):
    echo = f"{target.upstream_host}:{upstreams.ports['echo']}"
    try:
        reply = api.post("/populate", [{"name": "conf_pop_off", "listen": target.listen(),
                                        "upstream": echo, "enabled": False}])
        assert reply.status == 201
        assert reply.json()["proxies"][0]["enabled"] is False
    finally:
        api.delete("/proxies/conf_pop_off")


def test_populate_checks_every_entry_before_creating_any(api, target, upstreams):
    echo = f"{target.upstream_host}:{upstreams.ports['echo']}"
    reply = api.post("/populate", [{"name": "conf_pop_ok", "listen": target.listen(), "upstream": echo},
                                   {"listen": target.listen(), "upstream": echo}])
    assert reply.status == 400
    body = error(reply)
    assert body["error"] == "missing required field: name at proxy 2" and body["status"] == 400
    assert api.get("/proxies/conf_pop_ok").status == 404
    reply = api.post("/populate", {"name": "not-a-list"})
    assert reply.status == 400 and error(reply)["error"].startswith("bad request body")


def test_populate_stops_at_a_proxy_that_cannot_listen_and_reports_what_it_did(api, target, upstreams):
    if target.ports is not None:
        pytest.skip("a port busy on this host is not busy inside a port-mapped container")
    echo = f"{target.upstream_host}:{upstreams.ports['echo']}"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = f"127.0.0.1:{busy.getsockname()[1]}"
        try:
            reply = api.post("/populate", [
                {"name": "conf_pop_first", "listen": target.listen(), "upstream": echo},
                {"name": "conf_pop_busy", "listen": taken, "upstream": echo}])
            assert reply.status == 500
            body = error(reply)
            assert list(body) == ["error", "status", "proxies"]
            assert body["error"] == f"listen tcp {taken}: bind: address already in use"
            assert body["status"] == 500
            assert [p["name"] for p in body["proxies"]] == ["conf_pop_first"]
            assert api.get("/proxies/conf_pop_busy").status == 404
        finally:
            api.delete("/proxies/conf_pop_first")


def test_reset_reenables_proxies_and_drops_toxics(api, make_proxy, target):
    proxy = make_proxy()
    add_toxic(api, proxy["name"], type="latency", attributes={"latency": 100})
    add_toxic(api, proxy["name"], type="timeout", stream="upstream")
    api.patch(f"/proxies/{proxy['name']}", {"enabled": False})
    reply = api.post("/reset")
    assert reply.status == 204 and reply.body == b""
    after = api.get(f"/proxies/{proxy['name']}").json()
    assert after["enabled"] is True and after["toxics"] == [] and after["listen"] == proxy["listen"]
    assert not refuses(target.connect_host, port_of(proxy["listen"]))
