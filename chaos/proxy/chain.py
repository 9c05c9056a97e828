"""A proxy's toxics: one ordered chain per direction, applied to every open connection.

Mirrors Toxiproxy's ToxicCollection: names are unique across both directions, new toxics go
to the end of their direction's chain, and each change is applied to the live links of that
direction before the API call returns.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from chaos.proxy import jsonbody
from chaos.proxy.errors import INVALID_STREAM, INVALID_TOXIC_TYPE, TOXIC_ALREADY_EXISTS, TOXIC_NOT_FOUND
from chaos.proxy.toxics import TOXIC_TYPES, Direction, Toxic, parse_attributes

if TYPE_CHECKING:
    from chaos.proxy.link import Link
    from chaos.proxy.proxy import Proxy

_STRUCT = "toxics.ToxicWrapper"


def toxic_from_json(body: Any) -> Toxic:
    """A new toxic from a ``POST /proxies/{p}/toxics`` body, checked in Toxiproxy's order."""
    obj = jsonbody.require_object(body, _STRUCT)
    name = jsonbody.field_str(obj, "name", _STRUCT, "")
    type_name = jsonbody.field_str(obj, "type", _STRUCT, "")
    stream = jsonbody.field_str(obj, "stream", _STRUCT, "downstream")
    toxicity = jsonbody.field_float(obj, "toxicity", _STRUCT, 1.0)
    direction = Direction.parse(stream)
    if direction is None:
        raise INVALID_STREAM
    if not name:
        name = f"{type_name}_{stream}"
    if type_name not in TOXIC_TYPES:
        raise INVALID_TOXIC_TYPE
    return Toxic(name=name, type=type_name, stream=stream, direction=direction, toxicity=toxicity)


class ToxicChain:
    """The toxics of one proxy. Callers hold the proxy's lock around changes."""

    def __init__(self, proxy: Proxy) -> None:
        self._proxy = proxy
        self._chains: dict[Direction, list[Toxic]] = {d: [] for d in Direction}

    def chain(self, direction: Direction) -> list[Toxic]:
        """A copy of one direction's chain (a new connection starts with it)."""
        return list(self._chains[direction])

    def all(self) -> list[Toxic]:
        """Every toxic, upstream ones first, each direction in chain order (Toxiproxy's order)."""
        return self._chains[Direction.UPSTREAM] + self._chains[Direction.DOWNSTREAM]

    def find(self, name: str) -> Toxic:
        for toxic in self.all():
            if toxic.name == name:
                return toxic
        raise TOXIC_NOT_FOUND

    def to_json(self) -> list[dict[str, Any]]:
        return [t.to_json() for t in self.all()]

    def _links(self, direction: Direction) -> list[Link]:
        # Taken in the same step as the chain changes: a connection opened later starts from the
        # new chain, so no link gets a change twice or misses it.
        return [c.links[direction] for c in self._proxy.connections if direction in c.links]

    async def add(self, body: Any) -> Toxic:
        """Create a toxic from a JSON body and apply it to open connections."""
        toxic = toxic_from_json(body)
        if any(t.name == toxic.name for t in self.all()):
            raise TOXIC_ALREADY_EXISTS
        obj = body if isinstance(body, dict) else {}
        toxic.attributes = parse_attributes(toxic.type, jsonbody.lookup(obj, "attributes")[1])
        self._chains[toxic.direction].append(toxic)
        for link in self._links(toxic.direction):
            link.add_toxic(toxic)
        return toxic

    async def update(self, name: str, body: Any) -> Toxic:
        """Change a toxic's attributes and/or toxicity; other fields are ignored (as Toxiproxy)."""
        old = self.find(name)
        obj = jsonbody.require_object(body, _STRUCT)
        attributes = parse_attributes(old.type, jsonbody.lookup(obj, "attributes")[1], old.attributes)
        toxicity = jsonbody.field_float(obj, "toxicity", _STRUCT, old.toxicity)
        new = replace(old, attributes=attributes, toxicity=toxicity)
        chain = self._chains[old.direction]
        chain[next(i for i, t in enumerate(chain) if t is old)] = new
        await asyncio.gather(*(link.update_toxic(new) for link in self._links(new.direction)))
        return new

    async def remove(self, name: str) -> None:
        toxic = self.find(name)
        self._chains[toxic.direction].remove(toxic)
        await asyncio.gather(*(link.remove_toxic(name) for link in self._links(toxic.direction)))

    async def reset(self) -> None:
        """Remove every toxic (``POST /reset``)."""
        for toxic in self.all():
            await self.remove(toxic.name)
