"""Errors of the fault proxy: API errors carry Toxiproxy's exact messages and status codes."""

from __future__ import annotations

from data_plane.contracts.errors import MeshError


class ApiError(MeshError):
    """An error the HTTP API returns as ``{"error": message, "status": status}``."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def joined(self, detail: str) -> ApiError:
        """This error with ``: detail`` appended, as Toxiproxy's joinError does."""
        return ApiError(f"{self.message}: {detail}", self.status)

    def to_json(self) -> dict[str, object]:
        return {"error": self.message, "status": self.status}


# The messages and codes below are Toxiproxy 2.12's (api.go); clients match on them.
BAD_REQUEST_BODY = ApiError("bad request body", 400)
MISSING_FIELD = ApiError("missing required field", 400)
PROXY_NOT_FOUND = ApiError("proxy not found", 404)
PROXY_ALREADY_EXISTS = ApiError("proxy already exists", 409)
INVALID_STREAM = ApiError("stream was invalid, can be either upstream or downstream", 400)
INVALID_TOXIC_TYPE = ApiError("invalid toxic type", 400)
TOXIC_ALREADY_EXISTS = ApiError("toxic already exists", 409)
TOXIC_NOT_FOUND = ApiError("toxic not found", 404)


class ListenAddressError(ApiError):
    """A proxy or API listen address was refused (malformed, or not loopback)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 400)


class ProxyStartError(ApiError):
    """The proxy could not bind its listener (Toxiproxy answers these with 500)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 500)


class FaultProxyConfigError(MeshError):
    """The fault proxy server itself was configured wrongly (e.g. a non-loopback API address)."""
