"""Champion and challenger model slots with hot swap.

A slot holds a reference to one loaded model. Swapping loads and warms the new version off the
event loop (a worker thread), then replaces the reference in one assignment on the loop. Scoring
is synchronous on the loop, so a request reads the reference once and finishes with the model it
started with: an in-flight request is never dropped or failed by a swap, and the old model is
freed when the last request using it returns.

A slot either follows a registry alias (`champion` / `challenger`) or is pinned to a version.
`refresh()` re-resolves the followed aliases (on NATS model events and on a slow poll); pinned
slots change only through `load()`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

from data_plane.contracts.errors import MeshError, ModelNotFoundError

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
SLOT_NAMES = (CHAMPION, CHALLENGER)
ALIASES = SLOT_NAMES

# Warm-up rows (schema order): the seed's suspicious example and an ordinary purchase. A model
# must answer both with a probability before it may take traffic.
WARMUP_ROWS: tuple[tuple[float, ...], ...] = (
    (1500.0, 7, 2, 6, 150.0, 80.0, 1, 5, 12, 200.0, 15),
    (42.5, 3, 14, 2, 4.0, 1.5, 0, 1, 4, 55.0, 900),
)
WARMUP_ROUNDS = 5


class Model(Protocol):
    """What a slot serves: a scored model with a registry version."""

    kind: str
    version: str
    model_version: str  # "<kind>_v<version>"
    platform: str

    def predict_one(self, features: Sequence[float]) -> float: ...

    def predict_many(self, rows: Sequence[Sequence[float]]) -> list[float]: ...


class ModelSource(Protocol):
    """Where slot models come from (the registry). Both calls block; they run in a thread."""

    def locate(self, ref: str) -> Any:
        """Resolve an alias or version to a located model with a `.version` (no loading yet)."""
        ...

    def open(self, located: Any) -> Model:
        """Load a located model so it can score."""
        ...


# (slot, outcome "swapped" | "unloaded" | "failed", current model_version, previous model_version)
SwapListener = Callable[[str, str, str | None, str | None], None]


class SlotError(MeshError):
    """A slot operation was refused; `status` is the HTTP status that describes it."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Slot:
    name: str
    model: Model | None = None
    follows: str = CHAMPION  # the alias this slot tracks, or the pinned version
    pinned: bool = False
    loaded_at: float | None = None
    last_error: str | None = None

    def describe(self) -> dict[str, Any]:
        m = self.model
        return {"slot": self.name, "loaded": m is not None,
                "version": m.version if m else None,
                "model_version": m.model_version if m else None,
                "follows": self.follows, "pinned": self.pinned,
                "loaded_at": self.loaded_at, "last_error": self.last_error}


@dataclass(frozen=True)
class SwapResult:
    slot: str
    previous: str | None
    current: str | None
    changed: bool
    pinned: bool
    took_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {"slot": self.slot, "previous": self.previous, "current": self.current,
                "changed": self.changed, "pinned": self.pinned, "took_ms": round(self.took_ms, 2)}


def warm_up(model: Model) -> None:
    """Score the warm-up rows a few times; refuse a model that does not answer probabilities."""
    for _ in range(WARMUP_ROUNDS):
        for row in WARMUP_ROWS:
            p = model.predict_one(row)
            if not (isinstance(p, float) and math.isfinite(p) and 0.0 <= p <= 1.0):
                raise MeshError(f"{model.model_version} answered {p!r} during warm-up; "
                                "expected a probability in [0, 1]")
    many = model.predict_many(list(WARMUP_ROWS))
    if len(many) != len(WARMUP_ROWS):
        raise MeshError(f"{model.model_version} answered {len(many)} scores for "
                        f"{len(WARMUP_ROWS)} rows during warm-up")


class ModelSlots:
    """The slots of one model server. Heuristic servers have a fixed champion and no challenger."""

    def __init__(self, kind: str, source: ModelSource | None, *, executor: Executor | None = None,
                 fixed: Model | None = None,
                 on_change: SwapListener | None = None) -> None:
        self.kind = kind
        self.source = source
        self.champion = Slot(CHAMPION, model=fixed, follows=CHAMPION,
                             loaded_at=time.time() if fixed else None)
        self.challenger: Slot | None = None if fixed else Slot(CHALLENGER, follows=CHALLENGER)
        self._executor = executor
        self._lock = asyncio.Lock()
        self.on_change = on_change

    @classmethod
    def fixed(cls, model: Model) -> ModelSlots:
        """Slots that always serve `model` (the rules), with no registry and no challenger."""
        return cls(model.kind, None, fixed=model)

    @property
    def has_registry(self) -> bool:
        return self.source is not None

    def slot(self, name: str) -> Slot:
        if name == CHAMPION:
            return self.champion
        if name == CHALLENGER and self.challenger is not None:
            return self.challenger
        raise SlotError(f"unknown slot {name!r}; this {self.kind} server has "
                        f"{', '.join(s.name for s in self.all())}", 400)

    def all(self) -> list[Slot]:
        return [self.champion] + ([self.challenger] if self.challenger else [])

    def describe(self) -> list[dict[str, Any]]:
        return [s.describe() for s in self.all()]

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def load(self, slot_name: str, ref: str | None = None, *, force: bool = False) -> SwapResult:
        """Point a slot at an alias (`champion`/`challenger`, or None: the slot's own alias, which
        unpins it) or pin it to a registry version, loading and warming the model before the swap.

        Raises SlotError (404 when the registry has no such model, 400 for a bad request, 503
        when the registry or the model cannot be loaded); the slot keeps its model then.
        """
        if self.source is None:
            raise SlotError(f"the {self.kind} server scores with fixed rules; it has no registry "
                            "models to load", 400)
        slot = self.slot(slot_name)
        ref = (ref or slot.name).strip()
        follows_alias = ref in ALIASES
        async with self._lock:
            started = time.perf_counter()
            previous = slot.model.version if slot.model else None
            try:
                located = await self._blocking(self.source.locate, ref)
            except ModelNotFoundError as exc:
                if follows_alias and slot.name == CHALLENGER:
                    # The challenger alias is gone (promoted or rolled back): stop serving it.
                    return self._unload(slot, ref, started, previous)
                slot.last_error = str(exc)
                raise SlotError(str(exc), 404) from None
            except Exception as exc:  # registry down, ML stack missing: keep serving what we have
                slot.last_error = str(exc) if isinstance(exc, MeshError) else \
                    f"cannot reach the registry: {type(exc).__name__}: {exc}"
                raise SlotError(slot.last_error, 503) from None
            version = str(located.version)
            if version == previous and not force:
                slot.follows, slot.pinned, slot.last_error = ref, not follows_alias, None
                return SwapResult(slot.name, previous, previous, False, slot.pinned,
                                  (time.perf_counter() - started) * 1000)
            try:
                model = await self._blocking(self._open_warm, located)
            except Exception as exc:
                slot.last_error = f"loading {self.kind} v{version} failed: {exc}"
                log.warning("%s slot %s: %s", self.kind, slot.name, slot.last_error)
                self._notify(slot.name, "failed", None, None)
                raise SlotError(slot.last_error, 503) from None
            # The swap: one reference assignment on the event loop.
            slot.model = model
            slot.follows, slot.pinned = ref, not follows_alias
            slot.loaded_at, slot.last_error = time.time(), None
            took = (time.perf_counter() - started) * 1000
            log.info("%s slot %s: %s -> %s (%s, %.0f ms)", self.kind, slot.name, previous, version,
                     "pinned" if slot.pinned else f"alias {ref}", took)
            self._notify(slot.name, "swapped", model.model_version,
                         f"{self.kind}_v{previous}" if previous else None)
            return SwapResult(slot.name, previous, version, True, slot.pinned, took)

    def _open_warm(self, located: Any) -> Model:
        assert self.source is not None
        model = self.source.open(located)
        warm_up(model)
        return model

    def _unload(self, slot: Slot, ref: str, started: float, previous: str | None) -> SwapResult:
        slot.model, slot.follows, slot.pinned = None, ref, False
        slot.loaded_at, slot.last_error = None, f"the registry has no {ref!r} alias for {self.kind}"
        if previous is not None:
            log.info("%s slot %s: unloaded v%s (alias %s removed)", self.kind, slot.name, previous, ref)
            self._notify(slot.name, "unloaded", None, f"{self.kind}_v{previous}")
        return SwapResult(slot.name, previous, None, previous is not None, False,
                          (time.perf_counter() - started) * 1000)

    def _notify(self, slot: str, outcome: str, current: str | None, previous: str | None) -> None:
        if self.on_change is not None:
            self.on_change(slot, outcome, current, previous)

    async def refresh(self) -> list[SwapResult]:
        """Re-resolve every slot that follows an alias; load what changed. Never raises."""
        results = []
        for slot in self.all():
            if slot.pinned or self.source is None:
                continue
            try:
                results.append(await self.load(slot.name, slot.follows))
            except SlotError as exc:
                log.debug("%s slot %s refresh: %s", self.kind, slot.name, exc)
        return results
