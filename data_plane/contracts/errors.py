"""The project's exception tree. Every error a user can see says what to do next."""

from __future__ import annotations


class MeshError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(MeshError):
    """A setting is invalid."""


class StateDirError(MeshError):
    """MESH_HOME cannot be created or written."""


class ValidationError(MeshError):
    """A request failed validation. `field` names the field, `rule` the rule it broke."""

    def __init__(self, field: str, rule: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.rule = rule
        self.message = message

    def to_dict(self) -> dict[str, object]:
        return {"error": "validation_error", "field": self.field, "rule": self.rule,
                "message": self.message}


class MalformedInputError(ValidationError):
    """The input is not even the right shape (not JSON, not an object): HTTP 400, not 422."""


class ModelNotFoundError(MeshError):
    """No registered model version answers to the requested name/alias."""


class RegistryError(MeshError):
    """The MLflow registry could not be read or written."""
