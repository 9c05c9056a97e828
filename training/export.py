"""Export trained models to ONNX with the serving contract, and prove the export is faithful.

Contract (read by data_plane/scoring.py): input ``features`` float32 (batch, N_ENGINEERED),
output ``fraud_probability`` float32 (batch,), dynamic batch axis, opset 15 (the highest
onnxmltools' XGBoost converter writes; onnxruntime runs it). Metadata props record the model
kind and the feature set, so a server can refuse a model built for other features.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from data_plane.contracts.errors import MeshError
from data_plane.features import ENGINEERED_NAMES, FEATURE_SET_VERSION, N_ENGINEERED
from data_plane.scoring import INPUT_NAME, OUTPUT_NAME

OPSET = 15
PARITY_TOLERANCE = 1e-5


class ExportParityError(MeshError):
    """The ONNX graph does not score like the model it was exported from."""


def _stamp(model: Any, kind: str) -> None:
    import onnx

    meta = {"kind": kind, "feature_set_version": str(FEATURE_SET_VERSION),
            "engineered_names": ",".join(ENGINEERED_NAMES), "producer": "fraud-mesh training/export.py"}
    del model.metadata_props[:]
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(model)


def export_xgboost(booster: Any, path: Path) -> Path:
    """XGBoost booster -> ONNX (onnxmltools), reduced to one fraud-probability output."""
    import onnx
    from onnx import TensorProto, helper
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    model = convert_xgboost(booster, initial_types=[(INPUT_NAME, FloatTensorType([None, N_ENGINEERED]))],
                            target_opset=OPSET)
    graph = model.graph
    if not any(op.domain in ("", "ai.onnx") for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("", OPSET))  # for the Gather below
    probs = next(o.name for o in graph.output if o.name != "label")
    # (batch, 2) class probabilities -> (batch,) P(fraud): one Gather on column 1.
    graph.initializer.append(helper.make_tensor("fraud_column", TensorProto.INT64, [], [1]))
    graph.node.append(helper.make_node("Gather", [probs, "fraud_column"], [OUTPUT_NAME], axis=1,
                                       name="select_fraud_probability"))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch"]))
    _stamp(model, "xgboost")
    onnx.save(model, str(path))
    return path


def export_mlp(model: Any, path: Path) -> Path:
    """FraudMLP -> ONNX with torch.onnx (TorchScript exporter; eval mode, BatchNorm folded in)."""
    import onnx
    import torch

    model.eval()
    dummy = torch.zeros((2, N_ENGINEERED), dtype=torch.float32)
    with warnings.catch_warnings():
        # torch >= 2.9 prefers the dynamo exporter, which needs onnxscript (not installed here);
        # the TorchScript exporter is still supported and exports this plain MLP exactly.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (dummy,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
    onx = onnx.load(str(path))
    _stamp(onx, "pytorch")
    onnx.save(onx, str(path))
    return path


def check_parity(onnx_path: Path, engineered: np.ndarray, native_scores: np.ndarray,
                 tolerance: float = PARITY_TOLERANCE) -> float:
    """Max |ONNX - native| over the rows; raises ExportParityError beyond `tolerance`."""
    from data_plane.scoring import OnnxScorer

    onnx_scores = OnnxScorer(onnx_path).predict_engineered(engineered)
    diff = float(np.max(np.abs(onnx_scores.astype(np.float64) - np.asarray(native_scores, np.float64))))
    if not diff <= tolerance:
        raise ExportParityError(
            f"{onnx_path.name}: ONNX scores differ from the native model by up to {diff:.2e} "
            f"(tolerance {tolerance:.0e}); the export is not faithful, do not serve it")
    return diff
