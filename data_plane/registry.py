"""The model registry: MLflow (sqlite backend + local artifact folder) under MESH_HOME.

Registered names are ``MODEL_NAMES`` (``fraud-xgboost``, ``fraud-pytorch``); aliases
``champion`` and ``challenger`` point at versions. A version's artifacts (folder ``model/`` of its
MLflow run) are: ``model.onnx`` (what servers score with), the native model (``model.ubj`` for
XGBoost, ``model.pt`` state dict for PyTorch; both load safely), ``reference_stats.json`` (drift
reference, see data_plane/reference_stats.py) and ``meta.json`` (kind, version facts). Params,
metrics and the dataset fingerprint live on the run and on the version's tags.

Model servers load the champion like this (a ``LoadedModel`` is a ``ModelVersion`` plus its
local files, so ``loaded.version`` is the version number as a string)::

    loaded = Registry(settings).fetch("xgboost", "champion")  # alias -> version: one sqlite query
    scorer = OnnxScorer(loaded.onnx_path)                      # data_plane.scoring
    model_version = loaded.label                               # "xgboost_v3" for responses

``fetch`` copies a version's artifacts once into ``MESH_HOME/mlflow/cache/<name>/<version>/``
(versions are immutable); fetching a version number that is cached needs no MLflow at all.
mlflow is imported lazily, on the first call that needs it (~1.5 s), never at module import.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from data_plane.contracts.errors import MeshError, ModelNotFoundError, RegistryError
from data_plane.settings import Settings

MODEL_NAMES: dict[str, str] = {"xgboost": "fraud-xgboost", "pytorch": "fraud-pytorch"}
ALIASES: tuple[str, ...] = ("champion", "challenger")
EXPERIMENT = "fraud-mesh"
ARTIFACT_DIR = "model"
ONNX_FILE = "model.onnx"
STATS_FILE = "reference_stats.json"
META_FILE = "meta.json"
_T = TypeVar("_T")


@dataclass(frozen=True)
class ModelVersion:
    """One registered version: what it is, how good it was, which data made it."""

    kind: str
    name: str
    version: str
    aliases: tuple[str, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    fingerprint: str = ""
    created_at: float = 0.0
    run_id: str = ""
    source: str = ""

    @property
    def label(self) -> str:
        """The response's `model_version` string, e.g. ``xgboost_v3``."""
        return f"{self.kind}_v{self.version}"

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(ModelVersion)}
        d["aliases"] = list(self.aliases)
        d["label"] = self.label
        return d


@dataclass(frozen=True)
class LoadedModel(ModelVersion):
    """A version fetched into the local cache, ready to score: ModelVersion + local files."""

    onnx_path: Path = Path()
    native_path: Path = Path()
    reference_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def info(self) -> ModelVersion:
        """Just the version facts (no paths, no statistics)."""
        return ModelVersion(**{f.name: getattr(self, f.name) for f in fields(ModelVersion)})

    @property
    def threshold(self) -> float | None:
        """The decision threshold chosen at training time (F1-best on validation), if recorded."""
        t = self.metrics.get("threshold")
        return float(t) if t is not None else None


def _guarded(fn: Callable[..., _T]) -> Callable[..., _T]:
    """Turn unexpected failures of a public registry call into a RegistryError a user can act on."""

    @functools.wraps(fn)
    def call(self: Any, *args: Any, **kwargs: Any) -> _T:
        try:
            return fn(self, *args, **kwargs)
        except MeshError:
            raise
        except Exception as exc:
            raise RegistryError(
                f"registry call {fn.__name__} failed ({type(exc).__name__}: {exc}). The registry lives "
                f"at {self.settings.mlflow_db}; check that it is readable, or move MESH_HOME and run "
                "`meshctl train` to start a new one.") from exc

    return call


class Registry:
    """MLflow-backed registry for the fraud models (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cache_dir = settings.home / "mlflow" / "cache"
        self._client: Any = None
        self._client_lock = threading.Lock()

    # ---- reading ---------------------------------------------------------------------------------
    @_guarded
    def resolve(self, kind: str, alias_or_version: str | int) -> ModelVersion:
        """The version an alias (``champion``) or a version number points at."""
        name = _name(kind)
        ref = str(alias_or_version)
        if not self._exists():
            raise ModelNotFoundError(f"no model registered yet for {kind} ({name}): run `meshctl train`")
        client = self._mlflow()
        try:
            mv = self._retry(lambda: client.get_model_version(name, ref) if ref.isdigit()
                             else client.get_model_version_by_alias(name, ref))
        except Exception as exc:
            if _is_not_found(exc):
                raise self._not_found(kind, ref) from None
            raise
        return self._describe(kind, mv)

    @_guarded
    def fetch(self, kind: str, alias_or_version: str | int) -> LoadedModel:
        """Resolve and bring a version's artifacts into the local cache; fast when cached."""
        ref = str(alias_or_version)
        if ref.isdigit():
            cached = self._load_cached(kind, ref)
            if cached is not None:
                return cached
        mv = self.resolve(kind, ref)
        target = self.cache_dir / mv.name / mv.version
        if not (target / ONNX_FILE).is_file():
            self._download(mv, target)
        return self._loaded(mv, target)

    @_guarded
    def list_versions(self, kind: str) -> list[ModelVersion]:
        """Every version of `kind`, oldest first (empty when none is registered)."""
        name = _name(kind)
        if not self._exists():
            return []
        client = self._mlflow()
        versions = self._retry(lambda: client.search_model_versions(f"name='{name}'"))
        aliases = self.aliases(kind) if versions else {}
        return sorted((self._describe(kind, mv, aliases) for mv in versions), key=lambda m: int(m.version))

    @_guarded
    def aliases(self, kind: str) -> dict[str, str]:
        """alias -> version for `kind` (empty when the model is not registered)."""
        _name(kind)
        if not self._exists():
            return {}
        client = self._mlflow()
        try:
            rm = self._retry(lambda: client.get_registered_model(_name(kind)))
        except Exception as exc:
            if _is_not_found(exc):
                return {}
            raise
        return {a: str(v) for a, v in (rm.aliases or {}).items()}

    @_guarded
    def is_empty(self) -> bool:
        """True when no version of any model is registered."""
        return not any(self.list_versions(kind) for kind in MODEL_NAMES)

    # ---- writing ---------------------------------------------------------------------------------
    @_guarded
    def register(self, kind: str, onnx_path: str | Path, native_path: str | Path,
                 params: Mapping[str, Any], metrics: Mapping[str, float], dataset_fingerprint: str,
                 reference_stats: Mapping[str, Any], alias: str | None = None) -> ModelVersion:
        """Log a trained model as a new MLflow run and register it as the next version of `kind`."""
        name = _name(kind)
        onnx_path, native_path = Path(onnx_path), Path(native_path)
        for p in (onnx_path, native_path):
            if not p.is_file():
                raise RegistryError(f"cannot register {name}: {p} does not exist")
        client = self._mlflow()
        from mlflow.entities import Metric, Param, RunTag

        staging = self.cache_dir / ".staging" / f"{os.getpid()}-{time.time_ns()}"
        staging.mkdir(parents=True)
        try:
            shutil.copy2(onnx_path, staging / ONNX_FILE)
            shutil.copy2(native_path, staging / native_path.name)
            (staging / STATS_FILE).write_text(json.dumps(reference_stats))
            (staging / META_FILE).write_text(json.dumps(
                {"kind": kind, "native_file": native_path.name, "fingerprint": dataset_fingerprint}))
            run = self._retry(lambda: client.create_run(self._experiment_id(),
                                                        run_name=f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}",
                                                        tags={"kind": kind}))
            run_id = run.info.run_id
            now_ms = int(time.time() * 1000)
            self._retry(lambda: client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), now_ms, 0) for k, v in metrics.items()],
                params=[Param(k, str(v)) for k, v in params.items()],
                tags=[RunTag("dataset_fingerprint", dataset_fingerprint)]))
            self._retry(lambda: client.log_artifacts(run_id, str(staging), ARTIFACT_DIR))
            self._retry(lambda: client.set_terminated(run_id))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._ensure_registered_model(name)
        mv = self._retry(lambda: client.create_model_version(
            name, source=f"{run.info.artifact_uri}/{ARTIFACT_DIR}", run_id=run_id,
            tags={"kind": kind, "dataset_fingerprint": dataset_fingerprint,
                  "native_file": native_path.name}))
        if alias:
            self.set_alias(kind, alias, mv.version)
        return self.resolve(kind, mv.version)

    @_guarded
    def set_alias(self, kind: str, alias: str, version: str | int) -> None:
        """Point `alias` of `kind` at `version` (moving it if it pointed elsewhere)."""
        if str(alias).isdigit():
            raise RegistryError(f"alias {alias!r} looks like a version number; use a name like 'champion'")
        name = _name(kind)
        self.resolve(kind, str(version))  # a clear error for a version that does not exist
        client = self._mlflow()
        self._retry(lambda: client.set_registered_model_alias(name, alias, str(version)))

    @_guarded
    def delete_alias(self, kind: str, alias: str) -> None:
        """Remove `alias` from `kind` (no error when it is not set)."""
        name = _name(kind)
        client = self._mlflow()
        if alias not in self.aliases(kind):
            return
        self._retry(lambda: client.delete_registered_model_alias(name, alias))

    # ---- internals -------------------------------------------------------------------------------
    def _exists(self) -> bool:
        # Reads on a registry nobody created yet answer at once, without importing MLflow or
        # creating an empty database as a side effect (a model server polling before training).
        return self._client is not None or self.settings.mlflow_db.is_file()

    def _mlflow(self) -> Any:
        with self._client_lock:  # one client (and one first-use DB migration) per Registry
            if self._client is None:
                self._client = _make_client(self.settings)
            return self._client

    def warm(self) -> None:
        """Import MLflow and open (creating if needed) the database now, e.g. in a background
        thread while a model trains; errors are left for the next real call to report."""
        try:
            client = self._mlflow()
            with self._client_lock:
                self._retry(lambda: client.search_registered_models(max_results=1))
        except Exception:  # noqa: S110 - the next real call reports it with context
            pass

    def _experiment_id(self) -> str:
        client = self._mlflow()
        exp = self._retry(lambda: client.get_experiment_by_name(EXPERIMENT))
        if exp is not None:
            return str(exp.experiment_id)
        try:
            return str(self._retry(lambda: client.create_experiment(
                EXPERIMENT, artifact_location=self.settings.mlflow_artifacts.as_uri())))
        except _mlflow_exception():  # another process created it in between
            return str(client.get_experiment_by_name(EXPERIMENT).experiment_id)

    def _ensure_registered_model(self, name: str) -> None:
        client = self._mlflow()
        try:
            self._retry(lambda: client.get_registered_model(name))
        except _mlflow_exception():
            try:
                self._retry(lambda: client.create_registered_model(
                    name, description="fraud scoring model (ONNX + native); see data_plane/registry.py"))
            except _mlflow_exception():  # created concurrently
                pass

    def _describe(self, kind: str, mv: Any, alias_map: dict[str, str] | None = None) -> ModelVersion:
        client = self._mlflow()
        metrics: dict[str, float] = {}
        params: dict[str, str] = {}
        if mv.run_id:
            run = self._retry(lambda: client.get_run(mv.run_id))
            metrics, params = dict(run.data.metrics), dict(run.data.params)
        if alias_map is None:
            alias_map = self.aliases(kind)
        aliases = tuple(a for a, v in alias_map.items() if v == str(mv.version))
        return ModelVersion(kind=kind, name=mv.name, version=str(mv.version), aliases=tuple(sorted(aliases)),
                            metrics=metrics, params=params,
                            fingerprint=(mv.tags or {}).get("dataset_fingerprint", ""),
                            created_at=(mv.creation_timestamp or 0) / 1000.0, run_id=mv.run_id or "",
                            source=mv.source or "")

    def _download(self, mv: ModelVersion, target: Path) -> None:
        client = self._mlflow()
        tmp = target.parent / f".{target.name}.{os.getpid()}.{time.time_ns()}"
        tmp.mkdir(parents=True)
        try:
            got = Path(self._retry(lambda: client.download_artifacts(mv.run_id, ARTIFACT_DIR, str(tmp))))
            if not (got / ONNX_FILE).is_file():
                raise RegistryError(
                    f"{mv.name} version {mv.version} has no {ONNX_FILE} in {mv.source}; "
                    "register it again (`meshctl train`)")
            (got / "version.json").write_text(json.dumps(mv.to_dict()))
            try:
                got.rename(target)
            except OSError:
                if not (target / ONNX_FILE).is_file():  # not a concurrent fetch of the same version
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _load_cached(self, kind: str, version: str) -> LoadedModel | None:
        target = self.cache_dir / _name(kind) / version
        info = target / "version.json"
        if not (target / ONNX_FILE).is_file() or not info.is_file():
            return None
        d = json.loads(info.read_text())
        d.pop("label", None)
        d["aliases"] = ()  # aliases move; a cached copy cannot know them (resolve() can)
        return self._loaded(ModelVersion(**d), target)

    def _loaded(self, mv: ModelVersion, folder: Path) -> LoadedModel:
        meta = json.loads((folder / META_FILE).read_text())
        stats = json.loads((folder / STATS_FILE).read_text())
        base = {f.name: getattr(mv, f.name) for f in fields(ModelVersion)}
        return LoadedModel(**base, onnx_path=folder / ONNX_FILE,
                           native_path=folder / meta["native_file"], reference_stats=stats)

    def _not_found(self, kind: str, ref: str) -> ModelNotFoundError:
        name = _name(kind)
        versions = [v.version for v in self.list_versions(kind)]
        if not versions:
            return ModelNotFoundError(f"no model registered yet for {kind} ({name}): run `meshctl train`")
        aliases = ", ".join(f"{a} -> v{v}" for a, v in sorted(self.aliases(kind).items())) or "none"
        what = f"version {ref}" if ref.isdigit() else f"version with alias {ref!r}"
        return ModelNotFoundError(
            f"{name} has no {what} (versions: {', '.join(versions)}; aliases: {aliases}). "
            "Use an existing version or alias, or train one with `meshctl train`.")

    def _retry(self, call: Callable[[], _T], attempts: int = 6) -> _T:
        """Run an MLflow call, retrying while another process holds the sqlite write lock."""
        delay = 0.05
        for i in range(attempts):
            try:
                return call()
            except Exception as exc:
                if "database is locked" not in str(exc):
                    raise
                if i == attempts - 1:
                    raise RegistryError(
                        f"the registry database {self.settings.mlflow_db} stayed locked by another "
                        "process; try again in a moment") from exc
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

def _name(kind: str) -> str:
    try:
        return MODEL_NAMES[kind]
    except KeyError:
        raise ModelNotFoundError(
            f"unknown model kind {kind!r}; known kinds: {', '.join(MODEL_NAMES)}") from None


def _mlflow_exception() -> type[Exception]:
    from mlflow.exceptions import MlflowException

    return MlflowException


def _is_not_found(exc: Exception) -> bool:
    return isinstance(exc, _mlflow_exception()) and getattr(exc, "error_code", "") in (
        "RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")




def _make_client(settings: Settings) -> Any:
    # Local-only: no usage telemetry leaves the machine, and the DB migration chatter stays quiet.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    import logging

    for logger in ("alembic", "mlflow.store.db.utils", "mlflow.tracking._tracking_service.client"):
        logging.getLogger(logger).setLevel(logging.WARNING)
    try:
        settings.mlflow_db.parent.mkdir(parents=True, exist_ok=True)
        settings.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RegistryError(
            f"cannot create the registry folder {settings.mlflow_db.parent}: {exc.strerror or exc}. "
            "Point MESH_HOME at a writable folder.") from exc
    import warnings

    # MLflow's sqlite store uses a SQLAlchemy loader option that SQLAlchemy 2 deprecates; it is
    # MLflow's to fix and says nothing about this project's use.
    warnings.filterwarnings("ignore", message=r".*``noload`` loader strategy is deprecated",
                            module=r"mlflow\.")
    from mlflow.tracking import MlflowClient

    uri = settings.mlflow_tracking_uri
    try:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    except Exception as exc:
        raise RegistryError(f"cannot open the MLflow registry at {uri}: {exc}") from exc
