"""Request bodies decoded the way Toxiproxy's Go ``encoding/json`` decodes them.

Compatibility points: only the first JSON value of a body is read (trailing bytes are ignored),
an empty body is ``EOF``, keys match fields case-insensitively (an exact match wins), ``null``
leaves a field at its default, and a value of the wrong JSON type is a 400 that names the field.
"""

from __future__ import annotations

import json
from typing import Any

from chaos.proxy.errors import BAD_REQUEST_BODY, ApiError

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FLOAT32_MAX = 3.4028234663852886e38
def _no_constants(name: str) -> Any:
    raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")


_DECODER = json.JSONDecoder(parse_constant=_no_constants)  # Go has no NaN/Infinity in JSON


def decode_body(raw: bytes) -> Any:
    """The first JSON value in `raw`, or a ``bad request body`` ApiError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BAD_REQUEST_BODY.joined(f"invalid UTF-8 at byte {exc.start}") from None
    text = text.lstrip(" \t\r\n")
    if not text:
        raise BAD_REQUEST_BODY.joined("EOF")
    try:
        value, _end = _DECODER.raw_decode(text)
    except json.JSONDecodeError as exc:
        raise BAD_REQUEST_BODY.joined(f"{exc.msg} (line {exc.lineno} column {exc.colno})") from None
    except ValueError as exc:
        raise BAD_REQUEST_BODY.joined(str(exc)) from None
    except RecursionError:  # e.g. 10k nested arrays; Go's decoder stops at depth 10,000 too
        raise BAD_REQUEST_BODY.joined("exceeded max depth") from None
    return value


def json_kind(value: Any) -> str:
    """The JSON type name Go's decoder reports for `value`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def type_error(value: Any, where: str, go_type: str) -> ApiError:
    """Go's UnmarshalTypeError text, wrapped as a 400 ``bad request body``."""
    kind = json_kind(value)
    if kind == "number":
        kind = f"number {json.dumps(value)}"
    return BAD_REQUEST_BODY.joined(f"json: cannot unmarshal {kind} into {where} of type {go_type}")


def require_object(value: Any, go_type: str) -> dict[str, Any]:
    """`value` as a JSON object, or the error Go gives for a body of another shape."""
    if isinstance(value, dict):
        return value
    if value is None:  # Go decodes `null` into a struct as "no change"
        return {}
    raise type_error(value, "Go value", go_type)


def lookup(obj: dict[str, Any], key: str) -> tuple[bool, Any]:
    """(found, value) for `key`, matching case-insensitively as Go does when no exact key exists."""
    if key in obj:
        return True, obj[key]
    folded = key.casefold()
    for k, v in obj.items():
        if k.casefold() == folded:
            return True, v
    return False, None


def field_str(obj: dict[str, Any], key: str, struct: str, default: str) -> str:
    found, value = lookup(obj, key)
    if not found or value is None:
        return default
    if not isinstance(value, str):
        raise type_error(value, f"Go struct field {struct}.{key}", "string")
    return value


def field_bool(obj: dict[str, Any], key: str, struct: str, default: bool) -> bool:
    found, value = lookup(obj, key)
    if not found or value is None:
        return default
    if not isinstance(value, bool):
        raise type_error(value, f"Go struct field {struct}.{key}", "bool")
    return value


def field_float(obj: dict[str, Any], key: str, struct: str, default: float) -> float:
    found, value = lookup(obj, key)
    if not found or value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not abs(value) <= _FLOAT32_MAX:
        raise type_error(value, f"Go struct field {struct}.{key}", "float32")
    return float(value)


def field_int64(obj: dict[str, Any], key: str, struct: str, default: int) -> int:
    """An integer field; like Go's int64, a fraction, exponent or out-of-range value is refused."""
    found, value = lookup(obj, key)
    if not found or value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not _INT64_MIN <= value <= _INT64_MAX:
        raise type_error(value, f"Go struct field {struct}.{key}", "int64")
    return value
