"""The canary as a control-plane component: NATS in, `CanaryController` ticks, operator routes out.

Subscriptions (core NATS, own connection): `mesh.model.registered` (alias challenger -> a run),
`mesh.predictions.<kind>` / `mesh.shadow.<kind>` and `mesh.labels` (evidence), and
`mesh.retrain.decision` (the retrain worker's Decisions, appended to this process's ledger: the
ledger has one writer). Real `Actions`: model-server `/admin/reload`, the MLflow registry (in a
thread), the edge Envoy's `/clusters` for the challenger cluster's attempts and errors.

Config (`MESH_CANARY_*` env, seconds): SHADOW_FRACTION, SHADOW_MIN_SAMPLES, SHADOW_MIN_S, SHADOW_LABEL_WAIT_S,
STEP_S (each canary step), STEP_MIN_SAMPLES, TIMEOUT_S, TICK_S. MESH_CANARY=0 turns it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import aiohttp
import aiohttp.web
import msgspec

from control_plane.healing.canary import CanaryController
from control_plane.healing.canary_analysis import CanaryConfig
from control_plane.healing.envoy_admin import parse_clusters, sum_hosts
from data_plane import envconfig
from data_plane.contracts import subjects
from data_plane.contracts.errors import MeshError
from data_plane.contracts.events import Decision, Label, ModelRegistered, PredictionBatch
from data_plane.eventbus import connect_forever

if TYPE_CHECKING:
    from control_plane.app import ControlPlane

log = logging.getLogger(__name__)
RETRAIN_DECISION = subjects.RETRAIN_DECISION
CHAOS_HOLD = "a chaos experiment is running"
_batch = msgspec.json.Decoder(PredictionBatch).decode
_label = msgspec.json.Decoder(Label).decode
_registered = msgspec.json.Decoder(ModelRegistered).decode
_decision = msgspec.json.Decoder(Decision).decode


class SlotReloadError(MeshError):
    """A model server refused or failed to load a version."""


PREFIX = "MESH_CANARY_"


def canary_knobs(config: CanaryConfig) -> dict[str, int | float]:
    """variable -> value of every knob `config_from_env` reads (one table for reading and showing)."""
    return {
        PREFIX + "SHADOW_FRACTION": config.shadow_fraction,
        PREFIX + "SHADOW_MIN_SAMPLES": config.shadow.min_samples,
        PREFIX + "SHADOW_MIN_S": config.shadow.min_duration_s,
        PREFIX + "SHADOW_LABEL_WAIT_S": config.shadow.label_wait_s,
        PREFIX + "STEP_MIN_SAMPLES": config.step.min_samples,
        PREFIX + "STEP_S": config.step.min_duration_s,
        PREFIX + "TIMEOUT_S": config.shadow.timeout_s,
        PREFIX + "TICK_S": config.tick_s,
    }


def config_from_env(env: Mapping[str, str] | None = None) -> CanaryConfig:
    """CanaryConfig with `MESH_CANARY_*` overrides (module docstring); a bad value names its variable."""
    base = CanaryConfig()
    v = {key: envconfig.number(env, key, default, "int" if isinstance(default, int) else "float")
         for key, default in canary_knobs(base).items()}
    timeout = v[PREFIX + "TIMEOUT_S"]
    shadow = replace(base.shadow, min_samples=v[PREFIX + "SHADOW_MIN_SAMPLES"],
                     min_duration_s=v[PREFIX + "SHADOW_MIN_S"], timeout_s=timeout,
                     label_wait_s=v[PREFIX + "SHADOW_LABEL_WAIT_S"])
    step = replace(base.step, min_samples=v[PREFIX + "STEP_MIN_SAMPLES"], min_duration_s=v[PREFIX + "STEP_S"],
                   timeout_s=timeout)
    return replace(base, shadow=shadow, step=step, tick_s=v[PREFIX + "TICK_S"],
                   shadow_fraction=v[PREFIX + "SHADOW_FRACTION"])


class MeshActions:
    """The controller's real side effects (see `canary.Actions`)."""

    def __init__(self, cp: ControlPlane) -> None:
        from data_plane.registry import Registry

        self.cp = cp
        self.registry = Registry(cp.settings)
        self.session: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self.session

    async def reload_slot(self, kind: str, slot: str, version: str) -> None:
        addr = self.cp.topology.service(kind)
        url = f"http://{addr.host}:{addr.server_port}/admin/reload"
        async with self._session().post(url, json={"slot": slot, "version": version}) as resp:
            body = await resp.json(content_type=None)
            if resp.status != 200:
                raise SlotReloadError(f"{kind} {slot} slot did not load {version}: {body.get('error', body)}")

    async def set_alias(self, kind: str, alias: str, version: str) -> str | None:
        previous = (await asyncio.to_thread(self.registry.aliases, kind)).get(alias)
        await asyncio.to_thread(self.registry.set_alias, kind, alias, version)
        return previous

    async def delete_alias(self, kind: str, alias: str) -> None:
        await asyncio.to_thread(self.registry.delete_alias, kind, alias)

    async def challenger_counters(self, kind: str) -> tuple[int, int]:
        topo = self.cp.topology
        url = f"http://{topo.edge_host}:{topo.edge_admin_port}/clusters?format=json"
        try:
            async with self._session().get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                doc = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return 0, 0
        hosts = parse_clusters(doc, [f"{kind}-challenger"]).get(f"{kind}-challenger", [])
        total = sum_hosts(hosts)
        return total.attempts, total.error

    def publish(self, subject: str, event: Any) -> None:
        self.cp.bus.publish(subject, event)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


class CanaryComponent:
    """Owns the controller, its NATS subscriptions and the tick loop; routes in `canary_api`."""

    name = "canary"

    def __init__(self, cp: ControlPlane, config: CanaryConfig | None = None) -> None:
        self.cp = cp
        self.actions = MeshActions(cp)
        self.controller = CanaryController(cp, self.actions, config or config_from_env())
        self._nc: Any = None
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._subscribe(), name="canary-nats"),
                       asyncio.create_task(self._loop(), name="canary-loop")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=3)
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.close(), 2)
        await self.actions.close()

    def routes(self) -> list[Any]:
        from control_plane.healing.canary_api import CanaryRoutes

        return CanaryRoutes(self).routes()

    async def publish_raw(self, subject: str, data: bytes) -> None:
        """Publish now on this component's connection (the operator's retrain request)."""
        if self._nc is None or not self._nc.is_connected:
            raise aiohttp.web.HTTPServiceUnavailable(
                text="NATS is not reachable, so the request cannot reach the retrain worker; check "
                     "`meshctl status`")
        await self._nc.publish(subject, data)

    # ---- loops --------------------------------------------------------------------------------------
    async def _loop(self) -> None:
        from control_plane.chaos_runs import chaos_lock_held

        while True:
            await asyncio.sleep(self.controller.config.tick_s)
            try:
                self._follow_chaos_lock(chaos_lock_held(self.cp.settings))
                await self.controller.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("canary tick failed; the next tick retries")

    def _follow_chaos_lock(self, held: bool) -> None:
        """A running chaos experiment pauses promotions; its end releases only its own hold."""
        if held and self.controller.hold_reason is None:
            self.controller.hold(CHAOS_HOLD)
        elif not held and self.controller.hold_reason == CHAOS_HOLD:
            self.controller.release()

    async def _subscribe(self) -> None:
        self._nc = await connect_forever(self.cp.settings.nats_url, "canary")
        await self._nc.subscribe(subjects.MODEL_REGISTERED, cb=self._on_registered)
        await self._nc.subscribe("mesh.predictions.*", cb=self._on_predictions)
        await self._nc.subscribe("mesh.shadow.*", cb=self._on_predictions)
        await self._nc.subscribe(subjects.LABELS, cb=self._on_label)
        await self._nc.subscribe(RETRAIN_DECISION, cb=self._on_retrain_decision)

    async def _on_registered(self, msg: Any) -> None:
        try:
            event = _registered(msg.data)
        except msgspec.MsgspecError:
            return
        kind = event.model.removeprefix("fraud-")
        if event.alias != "challenger":
            return
        try:
            await self.controller.on_registered(kind, event.version, event.trigger_id)
        except Exception as exc:
            log.exception("canary: could not start %s_v%s", kind, event.version)
            self.cp.ledger.append(Decision(actor="canary", action="canary_not_started", rule="start_failed",
                                           reason=f"{kind}_v{event.version}: {exc}",
                                           trigger_ids=[t for t in (event.trigger_id,) if t]))

    async def _on_predictions(self, msg: Any) -> None:
        if not any(r.active for r in self.controller.runs.values()):
            return  # nothing to judge: skip decoding the firehose
        try:
            batch = _batch(msg.data)
        except msgspec.MsgspecError:
            return
        for rec in batch.records:
            self.controller.observe_record(rec)

    async def _on_label(self, msg: Any) -> None:
        if not any(r.active for r in self.controller.runs.values()):
            return
        with contextlib.suppress(msgspec.MsgspecError):
            lab = _label(msg.data)
            self.controller.observe_label(lab.request_id, lab.is_fraud)

    async def _on_retrain_decision(self, msg: Any) -> None:
        with contextlib.suppress(msgspec.MsgspecError):
            d = _decision(msg.data)
            self.cp.ledger.append(msgspec.structs.replace(d, seq=0))


def canary_component(cp: ControlPlane) -> CanaryComponent | None:
    """Component factory (see control_plane.components); MESH_CANARY=0 turns it off."""
    if not envconfig.switch(None, "MESH_CANARY"):
        return None
    return CanaryComponent(cp)
