"""All proxies of one fault-proxy server, by name (Toxiproxy's ProxyCollection and its API rules)."""

from __future__ import annotations

import asyncio
from typing import Any

from chaos.proxy import jsonbody
from chaos.proxy.errors import MISSING_FIELD, PROXY_ALREADY_EXISTS, PROXY_NOT_FOUND, ApiError
from chaos.proxy.proxy import Proxy

_STRUCT = "toxiproxy.Proxy"


class ProxyCollection:
    """Create, replace, find and delete proxies; names are unique."""

    def __init__(self) -> None:
        self.proxies: dict[str, Proxy] = {}
        self._lock = asyncio.Lock()

    def get(self, name: str) -> Proxy:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise PROXY_NOT_FOUND
        return proxy

    def to_json(self) -> dict[str, Any]:
        return {name: self.proxies[name].to_json() for name in sorted(self.proxies)}

    async def create(self, body: Any) -> Proxy:
        """``POST /proxies``: enabled unless told otherwise; 409 when the name is taken."""
        obj = jsonbody.require_object(body, _STRUCT)
        name = jsonbody.field_str(obj, "name", _STRUCT, "")
        listen = jsonbody.field_str(obj, "listen", _STRUCT, "")
        upstream = jsonbody.field_str(obj, "upstream", _STRUCT, "")
        enabled = jsonbody.field_bool(obj, "enabled", _STRUCT, True)
        if not name:
            raise MISSING_FIELD.joined("name")
        if not upstream:
            raise MISSING_FIELD.joined("upstream")
        async with self._lock:
            if name in self.proxies:
                raise PROXY_ALREADY_EXISTS
            proxy = Proxy(name, listen, upstream)
            if enabled:
                await proxy.start()
            self.proxies[name] = proxy
        return proxy

    async def update(self, name: str, body: Any) -> Proxy:
        """``PATCH /proxies/{name}``: omitted fields keep their current values."""
        proxy = self.get(name)
        obj = jsonbody.require_object(body, _STRUCT)
        listen = jsonbody.field_str(obj, "listen", _STRUCT, proxy.listen)
        upstream = jsonbody.field_str(obj, "upstream", _STRUCT, proxy.upstream)
        enabled = jsonbody.field_bool(obj, "enabled", _STRUCT, proxy.enabled)
        await proxy.update(listen, upstream, enabled)
        return proxy

    async def populate(self, body: Any) -> tuple[list[Proxy], ApiError | None]:
        """``POST /populate``: create or replace many; unchanged proxies (and their toxics) stay.

        Every entry is checked before any proxy changes. A proxy whose listen or upstream differs
        is stopped and replaced by a new one without toxics. Returns what was done before any error.
        """
        if not isinstance(body, list):
            raise jsonbody.type_error(body, "Go value", "[]struct { toxiproxy.Proxy; Enabled *bool }")
        wanted: list[tuple[str, str, str, bool]] = []
        for i, item in enumerate(body, start=1):
            obj = jsonbody.require_object(item, _STRUCT)
            name = jsonbody.field_str(obj, "name", _STRUCT, "")
            listen = jsonbody.field_str(obj, "listen", _STRUCT, "")
            upstream = jsonbody.field_str(obj, "upstream", _STRUCT, "")
            enabled = jsonbody.field_bool(obj, "enabled", _STRUCT, True)
            if not name:
                raise MISSING_FIELD.joined(f"name at proxy {i}")
            if not upstream:
                raise MISSING_FIELD.joined(f"upstream at proxy {i}")
            wanted.append((name, listen, upstream, enabled))
        done: list[Proxy] = []
        for name, listen, upstream, enabled in wanted:
            try:
                done.append(await self._add_or_replace(name, listen, upstream, enabled))
            except ApiError as exc:
                return done, exc
        return done, None

    async def _add_or_replace(self, name: str, listen: str, upstream: str, enabled: bool) -> Proxy:
        async with self._lock:
            existing = self.proxies.get(name)
            if existing is not None:
                if not await existing.differs(listen, upstream):
                    return existing
                await existing.stop()
            proxy = Proxy(name, listen, upstream)
            if enabled:
                await proxy.start()
            self.proxies[name] = proxy
            return proxy

    async def remove(self, name: str) -> None:
        """``DELETE /proxies/{name}``: close its listener and connections, then forget it."""
        async with self._lock:
            proxy = self.get(name)
            await proxy.stop()
            del self.proxies[name]

    async def reset(self) -> None:
        """``POST /reset``: enable every proxy and remove every toxic."""
        for proxy in list(self.proxies.values()):
            await proxy.reset()

    async def close(self) -> None:
        """Stop every proxy (server shutdown)."""
        async with self._lock:
            for proxy in self.proxies.values():
                await proxy.stop()
