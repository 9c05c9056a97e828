"""Async client for the operator API (docs/operator-api.md): every call returns data or raises.

The console talks to the control plane through this module only. Errors form one small tree so
each pane can tell "unreachable" (retry), "not available on this control plane yet" (a 404 from a
route the control plane does not serve yet) and "the API refused this" (its own message) apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

__all__ = [
    "ApiError",
    "NotAvailableError",
    "OperatorClient",
    "OperatorError",
    "TokenError",
    "UnreachableError",
]

JSON = dict[str, Any]


class OperatorError(Exception):
    """Base of every error the client raises. `str()` is a message an operator can act on."""


class UnreachableError(OperatorError):
    """No answer from the control plane (refused, reset, timed out)."""


class NotAvailableError(OperatorError):
    """The route does not exist on this control plane yet (a generic 404/405)."""

    def __init__(self, method: str, path: str) -> None:
        super().__init__(f"{method} {path} is not available on this control plane yet")
        self.method = method
        self.path = path


class TokenError(OperatorError):
    """The operator token file is missing or empty, so no write can be sent."""


class ApiError(OperatorError):
    """The API answered with an error: its status and `{error, field, rule, message}` body."""

    def __init__(self, status: int, body: JSON) -> None:
        self.status = status
        self.body = body
        self.error = str(body.get("error") or f"http_{status}")
        self.field = body.get("field")
        self.rule = body.get("rule")
        self.message = str(body.get("message") or self.error)
        where = ", ".join(f"{k} {v}" for k, v in (("field", self.field), ("rule", self.rule)) if v)
        super().__init__(f"HTTP {status}: {self.message}" + (f" ({where})" if where else ""))


# aiohttp answers an unknown route with reason "Not Found"/"Method Not Allowed"; the operator API's
# error middleware turns that into this body. A handler's own 404 ("no run 7") says more.
_GENERIC_MISS = {"not found", "method not allowed"}


def _is_missing_route(status: int, body: JSON | None) -> bool:
    if status not in (404, 405):
        return False
    if body is None:
        return True
    return str(body.get("message") or "").strip().lower() in _GENERIC_MISS


class OperatorClient:
    """One aiohttp session against `base_url`; the bearer token is read from `token_file` per write.

    Reading the token on each write (not once) lets a console started before the control plane
    pick up the token the control plane creates at its first start.
    """

    def __init__(self, base_url: str, token_file: Path | None, *, timeout: float = 3.0,
                 token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token_file = token_file
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(1.0, timeout))
        self._session: aiohttp.ClientSession | None = None

    # ---- lifecycle ------------------------------------------------------------------------
    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily, inside the running loop that will use it (the app's loop).
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    def token(self) -> str:
        """The operator token, or TokenError saying where it was looked for."""
        if self._token:
            return self._token
        if self.token_file is None:
            raise TokenError("no operator token configured; pass the token file (MESH_HOME/operator-token)")
        try:
            token = self.token_file.read_text().strip()
        except FileNotFoundError:
            raise TokenError(f"no operator token at {self.token_file}: start the control plane "
                             "(meshctl up) or point MESH_HOME at its state folder") from None
        except OSError as exc:
            raise TokenError(f"cannot read the operator token {self.token_file}: "
                             f"{exc.strerror or exc}") from None
        if not token:
            raise TokenError(f"the operator token file {self.token_file} is empty")
        return token

    # ---- transport ------------------------------------------------------------------------
    async def request(self, method: str, path: str, body: Any = None,
                      params: dict[str, Any] | None = None) -> Any:
        """Send one request; the decoded JSON answer, or an OperatorError subclass."""
        headers = {"Accept": "application/json"}
        if method != "GET":
            headers["Authorization"] = f"Bearer {self.token()}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        url = self.base_url + path
        try:
            async with self._get_session().request(method, url, data=data, headers=headers,
                                                   params=params) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientConnectionError, TimeoutError, OSError) as exc:
            detail = str(exc) or type(exc).__name__
            raise UnreachableError(f"control plane unreachable at {self.base_url} ({detail})") from None
        except aiohttp.ClientError as exc:
            raise UnreachableError(f"control plane at {self.base_url} failed: {exc}") from None
        parsed = _decode(raw)
        if status >= 400:
            body_dict = parsed if isinstance(parsed, dict) else None
            if _is_missing_route(status, body_dict):
                raise NotAvailableError(method, path)
            raise ApiError(status, body_dict or {"error": f"http_{status}",
                                                 "message": raw[:200].decode(errors="replace")})
        if parsed is None and raw.strip():
            raise ApiError(status, {"error": "bad_response",
                                    "message": f"{method} {path} answered with something that is not JSON"})
        return parsed

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    # ---- reads ----------------------------------------------------------------------------
    async def health(self) -> Any:
        return await self.get("/health")

    async def status(self) -> Any:
        return await self.get("/api/v1/status")

    async def decisions(self, since: int = 0, limit: int = 100) -> Any:
        return await self.get("/api/v1/decisions", since=since, limit=limit)

    async def models(self) -> Any:
        return await self.get("/api/v1/models")

    async def canary(self) -> Any:
        return await self.get("/api/v1/canary")

    async def drift(self) -> Any:
        return await self.get("/api/v1/drift")

    async def traffic_summary(self, window: int = 60) -> Any:
        return await self.get("/api/v1/traffic/summary", window=window)

    async def load(self) -> Any:
        return await self.get("/api/v1/load")

    async def ab_stats(self) -> Any:
        return await self.get("/api/v1/ab-stats")

    async def chaos_experiments(self) -> Any:
        return await self.get("/api/v1/chaos/experiments")

    async def chaos_run(self, run_id: str) -> Any:
        return await self.get(f"/api/v1/chaos/runs/{quote(str(run_id), safe='')}")

    # ---- writes ---------------------------------------------------------------------------
    async def set_weights(self, weights: dict[str, float]) -> Any:
        return await self.request("POST", "/api/v1/traffic", weights)

    async def freeze(self, reason: str | None = None) -> Any:
        return await self.request("POST", "/api/v1/freeze", {"reason": reason} if reason else None)

    async def unfreeze(self, reason: str | None = None) -> Any:
        return await self.request("POST", "/api/v1/unfreeze", {"reason": reason} if reason else None)

    async def pin(self, kind: str, version: str) -> Any:
        return await self.request("POST", f"/api/v1/models/{quote(kind, safe='')}/pin",
                                  {"version": str(version)})

    async def unpin(self, kind: str) -> Any:
        return await self.request("DELETE", f"/api/v1/models/{quote(kind, safe='')}/pin")

    async def retrain(self, model: str, reason: str) -> Any:
        return await self.request("POST", "/api/v1/retrain", {"model": model, "reason": reason})

    async def promote(self, model: str) -> Any:
        return await self.request("POST", "/api/v1/canary/promote", {"model": model})

    async def rollback(self, model: str, reason: str) -> Any:
        return await self.request("POST", "/api/v1/canary/rollback", {"model": model, "reason": reason})

    async def load_start(self, rate: float, duration: float, scenario: str | None = None) -> Any:
        return await self.request("POST", "/api/v1/load/start",
                                  {"rate": rate, "duration": duration, "scenario": scenario})

    async def load_stop(self) -> Any:
        return await self.request("POST", "/api/v1/load/stop")

    async def chaos_start(self, name: str) -> Any:
        return await self.request("POST", "/api/v1/chaos/runs", {"name": name})

    async def chaos_abort(self, run_id: str) -> Any:
        return await self.request("POST", f"/api/v1/chaos/runs/{quote(str(run_id), safe='')}/abort")


def _decode(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
