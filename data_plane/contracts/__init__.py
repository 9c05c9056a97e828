"""The public contracts: request/response schema, NATS subjects and events, error types."""

from data_plane.contracts.errors import MeshError, ValidationError
from data_plane.contracts.schema import (
    FEATURE_NAMES,
    FEATURES,
    Prediction,
    Transaction,
    encode,
    parse_transaction,
)

__all__ = [
    "FEATURES",
    "FEATURE_NAMES",
    "MeshError",
    "Prediction",
    "Transaction",
    "ValidationError",
    "encode",
    "parse_transaction",
]
