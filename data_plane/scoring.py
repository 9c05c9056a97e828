"""Compiled inference: score transactions with an ONNX model through ONNX Runtime.

Model servers use it like this::

    loaded = Registry(settings).fetch("xgboost", "champion")   # data_plane.registry
    scorer = OnnxScorer(loaded.onnx_path)
    p = scorer.predict_one(txn.features())                     # float in [0, 1]

The ONNX graph contract (written by training/export.py): one input ``features`` float32
(batch, N_ENGINEERED) holding ``data_plane.features.engineer`` output, one output
``fraud_probability`` float32 (batch,). Feature engineering happens here, in front of the graph,
with the same module training used (train/serve parity).

The one-row path avoids every per-call allocation it can: the engineered row is written into a
pre-allocated float32 buffer that ONNX Runtime reads through an I/O binding, and the result lands
in a pre-allocated output buffer (one set per thread, so threads never share buffers). See
bench/bench_scoring.py: ~8-11 us per row including feature engineering for the XGBoost model
vs ~20-27 us through a plain ``session.run`` and ~350-400 us for xgboost's own one-row predict.

numpy and onnxruntime are imported inside this module only (lazily), so a process that never
scores with a model (the heuristic server) does not pay for them.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from data_plane.contracts.errors import RegistryError

INPUT_NAME = "features"
OUTPUT_NAME = "fraud_probability"


class OnnxScorer:
    """An ONNX fraud model with train/serve-identical feature engineering in front of it."""

    def __init__(self, path: str | Path, intra_op_threads: int = 1) -> None:
        import numpy as np
        import onnxruntime as ort

        from data_plane import features

        self.path = Path(path)
        self._np = np
        self._engineer = features.engineer
        self._engineer_one = features.engineer_one
        opts = ort.SessionOptions()
        # One request = one small row: threads only add wake-up latency and fight the event loop.
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/NoSuchFile/InvalidGraph types
            raise RegistryError(
                f"cannot load the ONNX model {self.path}: {exc}. Fetch the model again from the "
                "registry or retrain it (`meshctl train`)."
            ) from exc
        self._ort = ort
        self.width = features.N_ENGINEERED
        self._check_signature()
        self.metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)
        self._local = threading.local()

    def _check_signature(self) -> None:
        inputs = self._session.get_inputs()
        outputs = [o.name for o in self._session.get_outputs()]
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME or OUTPUT_NAME not in outputs:
            raise RegistryError(
                f"{self.path} is not a fraud model export: expected input {INPUT_NAME!r} and output "
                f"{OUTPUT_NAME!r}, found inputs {[i.name for i in inputs]} and outputs {outputs}")
        width = inputs[0].shape[1] if len(inputs[0].shape) == 2 else None
        if width != self.width:
            raise RegistryError(
                f"{self.path} expects {width} input features, this code engineers {self.width}: "
                "the model was trained with another feature set; retrain it (`meshctl train`).")

    def _binding(self) -> tuple[Any, Any, Any]:
        """This thread's (input buffer, run callable, output buffer), created on first use."""
        b = getattr(self._local, "binding", None)
        if b is None:
            np = self._np
            buf = np.zeros((1, self.width), dtype=np.float32)
            out = np.zeros((1,), dtype=np.float32)
            io = self._session.io_binding()
            io.bind_ortvalue_input(INPUT_NAME, self._ort.OrtValue.ortvalue_from_numpy(buf))
            io.bind_output(OUTPUT_NAME, "cpu", 0, np.float32, [1], out.ctypes.data)
            b = self._local.binding = (buf, self._runner(io), out)
        return b

    def _runner(self, io: Any) -> Any:
        # The public run_with_iobinding wraps the C++ session call in Python checks that cost
        # ~2 us of a ~10 us call (measured, onnxruntime 1.32); call the C++ binding directly
        # when this onnxruntime exposes it, else the public method.
        native, native_io = getattr(self._session, "_sess", None), getattr(io, "_iobinding", None)
        if native is not None and native_io is not None and hasattr(native, "run_with_iobinding"):
            run_options = self._ort.RunOptions()
            return lambda: native.run_with_iobinding(native_io, run_options)
        return lambda: self._session.run_with_iobinding(io)

    def predict_one(self, features: Sequence[float]) -> float:
        """Fraud probability of one transaction given its 11 raw features (schema order)."""
        buf, run, out = self._binding()
        buf[0] = self._engineer_one(features)
        run()
        return float(out[0])

    def predict(self, raw: Any) -> Any:
        """Fraud probabilities (n,) float32 for raw features (n, 11)."""
        x = self._engineer(raw)
        if x.shape[0] == 0:
            return self._np.zeros((0,), dtype=self._np.float32)
        return self._session.run([OUTPUT_NAME], {INPUT_NAME: x})[0].reshape(-1)

    def predict_engineered(self, engineered: Any) -> Any:
        """Fraud probabilities for already engineered float32 features (n, N_ENGINEERED)."""
        x = self._np.ascontiguousarray(engineered, dtype=self._np.float32)
        return self._session.run([OUTPUT_NAME], {INPUT_NAME: x})[0].reshape(-1)
