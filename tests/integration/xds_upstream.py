"""A stand-in model server in its own process (so a test can SIGKILL it mid-load).

`python -m tests.integration.xds_upstream --name xgboost --port 8001` answers every request with
JSON naming itself and the x-mesh-intended header it received.
"""

from __future__ import annotations

import argparse

from aiohttp import web


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"routed_to": args.name, "intended": request.headers.get("x-mesh-intended"),
                                  "path": request.path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
