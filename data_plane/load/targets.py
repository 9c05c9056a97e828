"""Target safety for generated load: loopback only unless asked, and every run bounded.

Load is a weapon pointed at a URL: by default it may only point at this machine
(127.0.0.0/8, ::1, ``localhost``), and a run cannot be unbounded in time, rate or size.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from data_plane.contracts.errors import MeshError
from data_plane.netutil import is_loopback_host

# Upper bounds for any single run (the CLI, the console and the benchmarks share them).
MAX_DURATION_S = 3600.0
MAX_RATE_RPS = 50_000.0
MAX_CONCURRENCY = 4096
MAX_REQUESTS = 10_000_000
MAX_CARDS = 100_000
MAX_TIMEOUT_S = 120.0
MAX_OUTSTANDING = 65_536



class LoadTargetError(MeshError):
    """A load target or run shape was refused (non-loopback, unbounded or malformed)."""


@dataclass(frozen=True)
class Target:
    """A checked load target."""

    url: str
    host: str
    port: int
    loopback: bool


def check_target(url: str, *, allow_remote: bool = False) -> Target:
    """Parse and vet `url`; raise LoadTargetError naming the problem and the fix."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise LoadTargetError(f"--url {url!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise LoadTargetError(
            f"--url {url!r} must start with http:// or https:// "
            "(e.g. http://127.0.0.1:8000/api/v1/predict)")
    host = parts.hostname or ""
    if not host:
        raise LoadTargetError(f"--url {url!r} has no host (e.g. http://127.0.0.1:8000/api/v1/predict)")
    loopback = is_loopback_host(host)
    if not loopback and not allow_remote:
        raise LoadTargetError(
            f"refusing to send load to {host!r}: only 127.0.0.1, localhost and ::1 are allowed by "
            "default. Pass --allow-remote if you own that host and mean to load it.")
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return Target(url=url.strip(), host=host, port=port, loopback=loopback)


def check_bounds(*, rate: float | None = None, duration: float | None = None,
                 concurrency: int | None = None, requests: int | None = None,
                 cards: int = 0, timeout: float = 5.0, max_outstanding: int | None = None) -> None:
    """Raise LoadTargetError when a run would be unbounded or outside the limits above."""
    if rate is not None and concurrency is not None:
        raise LoadTargetError("give either --rate (open loop) or --concurrency (closed loop), not both")
    if rate is None and concurrency is None:
        raise LoadTargetError("give --rate R --duration S (open loop) or --concurrency C with "
                              "--duration S or --requests N (closed loop)")
    if rate is not None:
        _in_range("--rate", rate, 0.0, MAX_RATE_RPS, "requests per second", exclusive_low=True)
        if duration is None:
            raise LoadTargetError("--rate needs --duration S (how long to send, at most "
                                  f"{MAX_DURATION_S:g} s)")
        if requests is not None:
            raise LoadTargetError("--requests is for closed loop (--concurrency); an open-loop run "
                                  "sends rate x duration requests")
    if concurrency is not None:
        _in_range("--concurrency", concurrency, 1, MAX_CONCURRENCY, "workers")
        if duration is None and requests is None:
            raise LoadTargetError("--concurrency needs --duration S or --requests N so the run ends")
    if duration is not None:
        _in_range("--duration", duration, 0.0, MAX_DURATION_S, "seconds", exclusive_low=True)
    if requests is not None:
        _in_range("--requests", requests, 1, MAX_REQUESTS, "requests")
    _in_range("--cards", cards, 0, MAX_CARDS, "card ids (0 = no card-id header)")
    _in_range("--timeout", timeout, 0.0, MAX_TIMEOUT_S, "seconds", exclusive_low=True)
    if max_outstanding is not None:
        _in_range("--max-outstanding", max_outstanding, 1, MAX_OUTSTANDING, "requests in flight")


def _in_range(flag: str, value: float, low: float, high: float, unit: str,
              *, exclusive_low: bool = False) -> None:
    bad_low = value <= low if exclusive_low else value < low
    if value != value or bad_low or value > high:  # value != value catches NaN
        lo = f"more than {low:g}" if exclusive_low else f"at least {low:g}"
        raise LoadTargetError(f"{flag} must be {lo} and at most {high:g} {unit} (got {value:g})")
