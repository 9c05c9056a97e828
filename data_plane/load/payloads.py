"""Pre-encoded request payloads for the load engine (bodies from data_plane.synthetic).

Encoding happens once before the run, so the hot loop only picks the next (body, headers) pair.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from data_plane.load.targets import MAX_CARDS, LoadTargetError

DEFAULT_PAYLOADS = 1024
_JSON = {"Content-Type": "application/json"}
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class Payload:
    """One request: the JSON body bytes and the headers sent with it."""

    body: bytes
    headers: Mapping[str, str] = field(default_factory=lambda: dict(_JSON))


def scenario_names() -> tuple[str, ...]:
    """The drift scenarios the generator knows."""
    from data_plane.synthetic import SCENARIOS

    return tuple(SCENARIOS)


def synthetic_payloads(seed: int = 0, scenario: str | None = None, cards: int = 0,
                       count: int = DEFAULT_PAYLOADS) -> list[Payload]:
    """`count` encoded transactions for `seed` (and drift `scenario`).

    With `cards` > 0 the bodies draw their `card_id` from a pool of `cards` ids and each request
    also carries it as the `card-id` header (sticky A/B routing keys on it).
    """
    from data_plane.synthetic import SCENARIOS, iter_transactions

    if scenario is not None and scenario not in SCENARIOS:
        raise LoadTargetError(f"--scenario {scenario!r} is unknown; choose one of: "
                              f"{', '.join(SCENARIOS)} (or leave it out for undrifted traffic)")
    if not 0 <= cards <= MAX_CARDS:
        raise LoadTargetError(f"--cards must be between 0 and {MAX_CARDS} (got {cards})")
    if count < 1:
        raise LoadTargetError(f"payload count must be at least 1 (got {count})")
    kw: dict[str, Any] = {"cards": cards} if cards else {}
    bodies = itertools.islice(iter_transactions(seed, scenario, **kw), count)
    return [_payload(b, with_card_header=cards > 0) for b in bodies]


def fixed_payloads(bodies: Iterable[bytes | Mapping[str, Any]],
                   headers: Mapping[str, str] | None = None) -> list[Payload]:
    """Payloads from given bodies (bytes are sent as-is, mappings are JSON-encoded)."""
    hdrs = {**_JSON, **(headers or {})}
    out = [Payload(b if isinstance(b, bytes) else _encoder.encode(dict(b)), hdrs) for b in bodies]
    if not out:
        raise LoadTargetError("at least one request body is needed")
    return out


def _payload(body: dict[str, Any], *, with_card_header: bool) -> Payload:
    headers = dict(_JSON)
    if with_card_header and body.get("card_id"):
        headers["card-id"] = str(body["card_id"])
    return Payload(_encoder.encode(body), headers)
