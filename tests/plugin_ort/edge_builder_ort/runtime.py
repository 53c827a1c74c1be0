"""The ort-format runtime: ONNX Runtime's InferenceSession reads an .ort file as it reads an .onnx one."""

from __future__ import annotations

from builder.backends.onnxruntime.runtime import OnnxRuntimeSession


class OrtFormatSession(OnnxRuntimeSession):
    runtime = "ort-format"
