"""The HTTP API: Toxiproxy 2.12's paths, methods, status codes, JSON shapes and error bodies.

Fine points kept for client compatibility: errors are ``{"error": ..., "status": N}`` plus a
newline, served as text/plain like Go's http.Error; creating a toxic answers 200 (not 201);
``POST`` still updates proxies and toxics (deprecated for ``PATCH``); user agents starting with
``Mozilla/`` get 403 (Toxiproxy's guard against browser-driven requests); an unknown path is Go's
``404 page not found``, a known path with another method an empty 405; every answer of a known
route carries ``X-Toxiproxy-Request-Id``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from chaos.proxy.collection import ProxyCollection
from chaos.proxy.errors import ApiError
from chaos.proxy.jsonbody import decode_body

# The Toxiproxy release whose API this server implements; "+fraud-mesh" marks it as not Toxiproxy
# while still parsing as version 2.12.0.
VERSION = "2.12.0+fraud-mesh"

COLLECTION: web.AppKey[ProxyCollection] = web.AppKey("collection", ProxyCollection)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200) -> web.Response:
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return web.Response(text=body, status=status, content_type="application/json")


def _error(err: ApiError) -> web.Response:
    # Go's http.Error: text/plain, nosniff, body plus newline.
    resp = web.Response(text=json.dumps(err.to_json(), separators=(",", ":")) + "\n",
                        status=err.status, content_type="text/plain", charset="utf-8")
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


def _no_content() -> web.Response:
    return web.Response(status=204)


async def _body(request: web.Request) -> Any:
    return decode_body(await request.read())


@web.middleware
async def toxiproxy_compat(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Routing misses, browser guard, request ids and ApiError -> JSON error body."""
    miss = request.match_info.http_exception
    if isinstance(miss, web.HTTPMethodNotAllowed):
        return web.Response(status=405)
    if miss is not None:
        return web.Response(text="404 page not found\n", status=404, content_type="text/plain",
                            charset="utf-8")
    request_id = secrets.token_hex(10)
    if request.headers.get("User-Agent", "").startswith("Mozilla/"):
        resp: web.StreamResponse = web.Response(text="User agent not allowed\n", status=403,
                                                content_type="text/plain", charset="utf-8")
    else:
        try:
            resp = await handler(request)
        except ApiError as err:
            resp = _error(err)
    resp.headers["X-Toxiproxy-Request-Id"] = request_id
    return resp


async def version(request: web.Request) -> web.Response:
    return web.Response(text=f'{{"version": "{VERSION}"}}\n',
                        headers={"Content-Type": "application/json;charset=utf-8"})


async def reset(request: web.Request) -> web.Response:
    await request.app[COLLECTION].reset()
    return _no_content()


async def proxy_index(request: web.Request) -> web.Response:
    return _json(request.app[COLLECTION].to_json())


async def proxy_create(request: web.Request) -> web.Response:
    proxy = await request.app[COLLECTION].create(await _body(request))
    return _json(proxy.to_json(), status=201)


async def populate(request: web.Request) -> web.Response:
    proxies, err = await request.app[COLLECTION].populate(await _body(request))
    # Go marshals an empty result as null, and embeds the error's fields before "proxies".
    data: dict[str, Any] = err.to_json() if err is not None else {}
    data["proxies"] = [p.to_json() for p in proxies] or None
    return _json(data, status=err.status if err is not None else 201)


async def proxy_show(request: web.Request) -> web.Response:
    return _json(request.app[COLLECTION].get(request.match_info["proxy"]).to_json())


async def proxy_update(request: web.Request) -> web.Response:
    collection = request.app[COLLECTION]
    collection.get(request.match_info["proxy"])  # 404 before the body is read, as Toxiproxy
    proxy = await collection.update(request.match_info["proxy"], await _body(request))
    return _json(proxy.to_json())


async def proxy_delete(request: web.Request) -> web.Response:
    await request.app[COLLECTION].remove(request.match_info["proxy"])
    return _no_content()


async def toxic_index(request: web.Request) -> web.Response:
    return _json(request.app[COLLECTION].get(request.match_info["proxy"]).toxics.to_json())


async def toxic_create(request: web.Request) -> web.Response:
    proxy = request.app[COLLECTION].get(request.match_info["proxy"])
    body = await _body(request)
    async with proxy.lock:
        toxic = await proxy.toxics.add(body)
    return _json(toxic.to_json())


async def toxic_show(request: web.Request) -> web.Response:
    proxy = request.app[COLLECTION].get(request.match_info["proxy"])
    return _json(proxy.toxics.find(request.match_info["toxic"]).to_json())


async def toxic_update(request: web.Request) -> web.Response:
    proxy = request.app[COLLECTION].get(request.match_info["proxy"])
    proxy.toxics.find(request.match_info["toxic"])  # 404 before 400, as Toxiproxy
    body = await _body(request)
    async with proxy.lock:
        toxic = await proxy.toxics.update(request.match_info["toxic"], body)
    return _json(toxic.to_json())


async def toxic_delete(request: web.Request) -> web.Response:
    proxy = request.app[COLLECTION].get(request.match_info["proxy"])
    async with proxy.lock:
        await proxy.toxics.remove(request.match_info["toxic"])
    return _no_content()


def build_app(collection: ProxyCollection) -> web.Application:
    """The aiohttp application serving `collection` over Toxiproxy's API."""
    app = web.Application(middlewares=[toxiproxy_compat])
    app[COLLECTION] = collection
    routes: list[tuple[str, str, Handler]] = [
        ("POST", "/reset", reset),
        ("GET", "/proxies", proxy_index),
        ("POST", "/proxies", proxy_create),
        ("POST", "/populate", populate),
        ("GET", "/proxies/{proxy}", proxy_show),
        ("POST", "/proxies/{proxy}", proxy_update),
        ("PATCH", "/proxies/{proxy}", proxy_update),
        ("DELETE", "/proxies/{proxy}", proxy_delete),
        ("GET", "/proxies/{proxy}/toxics", toxic_index),
        ("POST", "/proxies/{proxy}/toxics", toxic_create),
        ("GET", "/proxies/{proxy}/toxics/{toxic}", toxic_show),
        ("POST", "/proxies/{proxy}/toxics/{toxic}", toxic_update),
        ("PATCH", "/proxies/{proxy}/toxics/{toxic}", toxic_update),
        ("DELETE", "/proxies/{proxy}/toxics/{toxic}", toxic_delete),
        ("GET", "/version", version),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    return app
