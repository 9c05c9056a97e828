"""The load generator: an open/closed-loop HTTP engine, payloads, target safety, results.

Typical use::

    plan = LoadPlan(url="http://127.0.0.1:8000/api/v1/predict", rate=1000, duration=30)
    result = run_load(plan, synthetic_payloads(seed=0))
"""

from data_plane.load.engine import LoadEngine, LoadPlan, run_load
from data_plane.load.histogram import LatencyHistogram
from data_plane.load.payloads import Payload, fixed_payloads, synthetic_payloads
from data_plane.load.results import LoadResult, Progress
from data_plane.load.targets import LoadTargetError, check_bounds, check_target

__all__ = [
    "LatencyHistogram",
    "LoadEngine",
    "LoadPlan",
    "LoadResult",
    "LoadTargetError",
    "Payload",
    "Progress",
    "check_bounds",
    "check_target",
    "fixed_payloads",
    "run_load",
    "synthetic_payloads",
]
