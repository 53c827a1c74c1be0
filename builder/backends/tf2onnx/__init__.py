"""tf2onnx: TensorFlow models (a SavedModel, a Keras file, a .tflite) to ONNX, the interchange the core converts
through. Its step keeps the kind `convert.tf_onnx`."""

from __future__ import annotations

from builder.backends.tf2onnx import causes, steps  # noqa: F401  (they register themselves)

PACKAGES = ("tf2onnx",)
