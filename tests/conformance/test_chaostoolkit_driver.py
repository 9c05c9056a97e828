"""chaostoolkit-toxiproxy (``chaostoxi``), what the Chaos Toolkit experiments will call, end to end."""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit

import pytest
from chaostoxi.proxy import actions as proxy_actions
from chaostoxi.proxy import probes as proxy_probes
from chaostoxi.toxic import actions as toxic_actions

from tests.conformance._support import connect, round_trip

pytestmark = pytest.mark.integration


@pytest.fixture
def configuration(target, monkeypatch):
    url = urlsplit(target.api.url)
    config = {"toxiproxy_host": url.hostname, "toxiproxy_port": url.port}
    yield config
    for key in [k for k in os.environ if k.startswith("conf_ctk_")]:
        monkeypatch.delenv(key)  # create_proxy exports <name>_PORT into the environment


def test_create_proxy_with_the_drivers_defaults_then_latency_then_cleanup(configuration, target, upstreams):
    name = f"conf_ctk_{uuid.uuid4().hex[:8]}"
    # The driver listens on its default wildcard host unless told otherwise.
    kwargs = {"listen_host": target.listen_host} if target.ports is not None else {}
    assert proxy_actions.create_proxy(name, target.upstream_host, upstreams.ports["echo"],
                                      configuration=configuration, **kwargs) is True
    try:
        port = int(configuration[f"{name}_PORT"])
        assert port != 0
        assert proxy_probes.proxy_exist(name, configuration=configuration) is True
        assert proxy_probes.get_proxy_attribute(name, "enabled", configuration=configuration) is True
        assert toxic_actions.create_latency_toxic(name, "slow", latency=300,
                                                  configuration=configuration) is True
        sock = connect(target.connect_host, port)
        try:
            assert round_trip(sock, b"ctk")[0] >= 0.3
            assert toxic_actions.delete_toxic(name, "slow", configuration=configuration) is True
            assert round_trip(sock, b"ctk")[0] < 0.2
        finally:
            sock.close()
        assert proxy_actions.disable_proxy(name, configuration=configuration) is True
        assert proxy_probes.get_proxy_attribute(name, "enabled", configuration=configuration) is False
        assert proxy_actions.reset(configuration=configuration) is True
        assert proxy_probes.get_proxy_attribute(name, "enabled", configuration=configuration) is True
    finally:
        proxy_actions.delete_proxy(name, configuration=configuration)
    assert proxy_probes.proxy_exist(name, configuration=configuration) is False
