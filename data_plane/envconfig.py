"""Reading component settings from `MESH_*` environment variables, one way for every component.

Each component keeps its knobs in a frozen dataclass with working local defaults (HealingConfig,
RetrainConfig, GateConfig, ABConfig, CanaryConfig, ...); the variable of a field is a prefix plus
the field's name in capitals unless the component names it otherwise. This module parses the
values (a bad one raises ConfigError naming the variable and what it must be, never a traceback)
and describes every knob for `meshctl config`, the one place an operator sees the whole
configuration with where each value came from.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import fields, is_dataclass
from typing import Any

from data_plane.contracts.errors import ConfigError

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _kind(annotation: object) -> str:
    """'int' | 'float' | 'bool' | 'str' | '' (not a scalar) for a dataclass field's type."""
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return name if name in ("int", "float", "bool", "str") else ""


def parse(key: str, raw: str, kind: str) -> Any:
    """`raw` (the value of variable `key`) as `kind`; ConfigError naming the variable otherwise."""
    text = raw.strip()
    if kind == "bool":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ConfigError(f"{key}={raw!r} must be one of {'/'.join(_TRUE)} or {'/'.join(_FALSE)}")
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            try:  # "1e3" and "300.0" are integers written as floats: accept them when whole
                number = float(text)
            except ValueError:
                number = math.nan
            if math.isfinite(number) and number == int(number):
                return int(number)
            raise ConfigError(f"{key}={raw!r} must be an integer") from None
    if kind == "float":
        try:
            number = float(text)
        except ValueError:
            raise ConfigError(f"{key}={raw!r} must be a number") from None
        if not math.isfinite(number):
            raise ConfigError(f"{key}={raw!r} must be a finite number")
        return number
    return raw


def number(env: Mapping[str, str] | None, key: str, default: float, kind: str = "float") -> Any:
    """One numeric variable (blank or unset: `default`)."""
    env = os.environ if env is None else env
    raw = env.get(key)
    return default if raw is None or not raw.strip() else parse(key, raw, kind)


def switch(env: Mapping[str, str] | None, key: str, default: bool = True) -> bool:
    """An on/off variable such as MESH_CANARY=0 (blank or unset: `default`)."""
    env = os.environ if env is None else env
    raw = env.get(key)
    return default if raw is None or not raw.strip() else bool(parse(key, raw, "bool"))


def variable(prefix: str, field_name: str, names: Mapping[str, str] | None = None) -> str:
    """The variable of a field: `prefix` + its name in capitals, unless `names` says otherwise."""
    return prefix + (names or {}).get(field_name, field_name.upper())


def overrides(cls: type, prefix: str, env: Mapping[str, str] | None = None, *,
              names: Mapping[str, str] | None = None, skip: Iterable[str] = ()) -> dict[str, Any]:
    """field -> parsed value for every scalar field of dataclass `cls` whose variable is set."""
    env = os.environ if env is None else env
    out: dict[str, Any] = {}
    for f in fields(cls):
        kind = _kind(f.type)
        if not kind or f.name in skip:
            continue
        key = variable(prefix, f.name, names)
        raw = env.get(key)
        if raw is not None and raw.strip():
            out[f.name] = parse(key, raw, kind)
    return out


def describe(config: Any, default: Any, prefix: str, env: Mapping[str, str] | None = None, *,
             names: Mapping[str, str] | None = None, skip: Iterable[str] = ()) -> list[dict[str, Any]]:
    """One row per scalar knob of dataclass instance `config`: variable, value, default, source."""
    env = os.environ if env is None else env
    assert is_dataclass(config) and is_dataclass(default)
    rows = []
    for f in fields(config):
        if not _kind(f.type) or f.name in skip:
            continue
        key = variable(prefix, f.name, names)
        rows.append({"variable": key, "value": getattr(config, f.name), "default": getattr(default, f.name),
                     "source": "env" if (env.get(key) or "").strip() else "default"})
    return rows
