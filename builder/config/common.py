"""Shared vocabulary of recipes and targets."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Precision = Literal["fp32", "fp16", "dynamic", "int8", "int16x8"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "dynamic", "int8", "int16x8")
IoDtype = Literal["float32", "int8", "uint8"]
Platform = Literal["linux/amd64", "linux/arm64"]

# Model formats the converters move between. A source is in one of them,
# a target ships one of the final ones.
ModelFormat = Literal[
    "keras",
    "saved_model",
    "frozen_graph",
    "tflite",
    "onnx",
    "pytorch_state_dict",
    "torchscript",
    "exported_program",
    "openvino",
    "tensorrt",
    "vela",
]

SUFFIX_FORMATS: dict[str, str] = {
    ".tflite": "tflite",
    ".onnx": "onnx",
    ".keras": "keras",
    ".h5": "keras",
    ".pb": "frozen_graph",
    ".pth": "pytorch_state_dict",
    ".pt": "torchscript",
    ".pt2": "exported_program",
    ".xml": "openvino",
    ".engine": "tensorrt",
}

FORMAT_SUFFIXES: dict[str, str] = {
    "tflite": ".tflite",
    "onnx": ".onnx",
    "keras": ".keras",
    "saved_model": "",
    "frozen_graph": ".pb",
    "openvino": ".xml",
    "tensorrt": ".engine",
    "vela": "_vela.tflite",
}


class Strict(BaseModel):
    """Every config model: unknown keys are errors, not silent defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)
