"""The one feature-engineering step shared by training and serving (train/serve parity).

Input: the 11 raw features in ``data_plane.contracts.schema.FEATURE_NAMES`` order. Output: those
11 raw values followed by these derived ones (``ENGINEERED_NAMES``), as float32:

| name | formula | why |
|---|---|---|
| log_amount | ln(1 + amount) | amounts are log-normal; trees don't care, the MLP does |
| log_amount_ratio | ln((1 + amount) / (1 + avg_amount_last_7d)) | spend spike vs the card's habit |
| is_night | 1 if hour_of_day < 6 or hour_of_day >= 23 | fraud runs while cardholders sleep |
| log_distance_home | ln(1 + distance_from_home) | heavy tail |
| log_distance_last | ln(1 + distance_from_last_txn) | heavy tail ("impossible travel") |
| velocity_ratio | velocity_last_1h / (1 + velocity_last_24h / 24) | burst vs the day's pace |
| log_card_age | ln(1 + card_age_days) | heavy tail |
| is_young_card | 1 if card_age_days < 30 | new cards are a favourite of fraud |

Two implementations with the same arithmetic (float64, then one cast to float32):
``engineer`` (vectorised, numpy, for batches and training) and ``engineer_one`` (pure Python
``math`` for one row, the serving hot path: ~1.5 us vs ~15 us for numpy on one row). A unit test
pins that they agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from data_plane.contracts.schema import FEATURE_NAMES

DERIVED_NAMES: tuple[str, ...] = (
    "log_amount", "log_amount_ratio", "is_night", "log_distance_home", "log_distance_last",
    "velocity_ratio", "log_card_age", "is_young_card",
)
ENGINEERED_NAMES: tuple[str, ...] = (*FEATURE_NAMES, *DERIVED_NAMES)
N_RAW = len(FEATURE_NAMES)
N_ENGINEERED = len(ENGINEERED_NAMES)
FEATURE_SET_VERSION = 1  # bump when a formula changes: models record it (registry params)

NIGHT_START, NIGHT_END = 23, 6
YOUNG_CARD_DAYS = 30.0


def engineer(raw: np.ndarray) -> np.ndarray:
    """(n, 11) raw features -> (n, N_ENGINEERED) float32 engineered features."""
    x = np.asarray(raw, dtype=np.float64)
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2 or x.shape[1] != N_RAW:
        raise ValueError(f"expected raw features of shape (n, {N_RAW}), got {x.shape}")
    amount, hour, home, last = x[:, 0], x[:, 2], x[:, 4], x[:, 5]
    v1, v24, avg7, age = x[:, 7], x[:, 8], x[:, 9], x[:, 10]
    out = np.empty((x.shape[0], N_ENGINEERED), dtype=np.float64)
    out[:, :N_RAW] = x
    out[:, 11] = np.log1p(amount)
    out[:, 12] = out[:, 11] - np.log1p(avg7)
    out[:, 13] = (hour < NIGHT_END) | (hour >= NIGHT_START)
    out[:, 14] = np.log1p(home)
    out[:, 15] = np.log1p(last)
    out[:, 16] = v1 / (1.0 + v24 / 24.0)
    out[:, 17] = np.log1p(age)
    out[:, 18] = age < YOUNG_CARD_DAYS
    return out.astype(np.float32)


def engineer_one(raw: Sequence[float]) -> list[float]:
    """One raw row (11 numbers) -> the engineered row as Python floats (float64 values).

    Same formulas as `engineer`; the caller casts to float32 (e.g. by writing into a float32
    buffer), which yields the same values `engineer` produces.
    """
    (amount, merchant, hour, day, home, last, foreign, v1, v24, avg7, age) = raw
    log_amount = math.log1p(amount)
    return [
        amount, merchant, hour, day, home, last, foreign, v1, v24, avg7, age,
        log_amount,
        log_amount - math.log1p(avg7),
        1.0 if (hour < NIGHT_END or hour >= NIGHT_START) else 0.0,
        math.log1p(home),
        math.log1p(last),
        v1 / (1.0 + v24 / 24.0),
        math.log1p(age),
        1.0 if age < YOUNG_CARD_DAYS else 0.0,
    ]
