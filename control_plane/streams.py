"""JetStream streams for what must survive restarts (predictions, labels, decisions).

The control plane creates the missing ones, with limits, as soon as NATS answers (it starts right
after nats-server in `meshctl up`). A stream that already exists is left as it is, so whoever
created it first keeps its limits.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from data_plane.contracts import subjects

log = logging.getLogger(__name__)

_DAY = 24 * 3600
_MIB = 1024 * 1024
# name -> (max age in seconds, max bytes); oldest messages are dropped first.
STREAM_LIMITS: dict[str, tuple[float, int]] = {
    "PREDICTIONS": (_DAY, 512 * _MIB),
    "LABELS": (7 * _DAY, 256 * _MIB),
    "DECISIONS": (90 * _DAY, 64 * _MIB),
}


async def ensure_streams(nc: Any) -> list[str]:
    """Create every stream of `subjects.STREAMS` that does not exist yet; return those created."""
    from nats.js.api import DiscardPolicy, StorageType
    from nats.js.errors import NotFoundError

    js = nc.jetstream()
    created = []
    for name, subject_list in subjects.STREAMS.items():
        try:
            await js.stream_info(name)
            continue
        except NotFoundError:
            pass
        max_age, max_bytes = STREAM_LIMITS.get(name, (_DAY, 64 * _MIB))
        await js.add_stream(name=name, subjects=list(subject_list), storage=StorageType.FILE,
                            max_age=max_age, max_bytes=max_bytes, discard=DiscardPolicy.OLD)
        created.append(name)
    return created


async def ensure_streams_when_nats_answers(url: str, retry_s: float = 1.0) -> list[str]:
    """Retry until NATS with JetStream answers, then ensure the streams (cancel to give up)."""
    import nats

    async def quiet(exc: Exception) -> None:
        log.debug("nats (streams): %s", exc)

    while True:
        nc = None
        try:
            # One short attempt per round (nats-py otherwise retries 60 times inside connect(), and
            # a cancellation racing its internal wait_for can be lost); this loop does the retrying.
            nc = await nats.connect(url, name="control-plane-streams", connect_timeout=1,
                                    allow_reconnect=False, max_reconnect_attempts=1,
                                    reconnect_time_wait=0.1, error_cb=quiet)
            created = await ensure_streams(nc)
            if created:
                log.info("created JetStream streams %s", ", ".join(created))
            return created
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("JetStream streams not ensured yet: %s", exc)
        finally:
            if nc is not None:
                try:
                    await nc.close()
                except Exception as exc:
                    log.debug("nats close: %s", exc)
        await asyncio.sleep(retry_s)
