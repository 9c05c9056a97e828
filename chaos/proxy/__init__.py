"""A Toxiproxy-compatible fault proxy (API and toxic semantics of Toxiproxy 2.12), on asyncio.

Start one with ``python -m chaos.proxy`` / ``meshctl chaos proxy`` or in-process::

    async with FaultProxyServer("127.0.0.1", 0) as server:
        ...  # drive it over HTTP at server.url, e.g. with toxiproxy-python

See docs/chaos-proxy.md for the API, the toxics and the known differences from Toxiproxy.
"""

from chaos.proxy.api import VERSION
from chaos.proxy.errors import ApiError, FaultProxyConfigError, ListenAddressError
from chaos.proxy.server import FaultProxyServer

__all__ = ["VERSION", "ApiError", "FaultProxyConfigError", "FaultProxyServer", "ListenAddressError"]
