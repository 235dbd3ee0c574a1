"""Deployment: export a trained fold (ONNX, TorchScript, AOTInductor) with its ``preprocess.json``,
and drive the C++ engine in ``cpp/`` that applies that contract to raw detector images.

See docs/deployment.md.
"""

from e2evision.export.contract import apply_preprocess, build_contract, read_contract
from e2evision.export.cpp import (
    build_cpp,
    cpp_predict,
    ensure_built,
    run_tool,
    save_npy,
    tool_path,
    verify_cpp,
)
from e2evision.export.errors import ExportError
from e2evision.export.exporters import FORMATS, ExportResult, export_model, reference_outputs
from e2evision.export.run import LoadedFold, choose_fold, load_fold, read_test_batch, reference_raw
from e2evision.export.sample import sample_dataset, write_sample

__all__ = [
    "FORMATS",
    "ExportError",
    "ExportResult",
    "LoadedFold",
    "apply_preprocess",
    "build_contract",
    "build_cpp",
    "choose_fold",
    "cpp_predict",
    "ensure_built",
    "export_model",
    "load_fold",
    "read_contract",
    "read_test_batch",
    "reference_raw",
    "reference_outputs",
    "run_tool",
    "sample_dataset",
    "save_npy",
    "tool_path",
    "verify_cpp",
    "write_sample",
]
