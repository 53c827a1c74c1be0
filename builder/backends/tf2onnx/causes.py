"""What tf2onnx says when a TensorFlow op has no ONNX conversion."""

from __future__ import annotations

from builder.stage import causes

causes.register(causes.ToolErrors(
    rules=(causes.Rule(r"Tensorflow op \[.*\] is not supported", "unsupported-op", causes.UNSUPPORTED_OP_HINT),),
    op_names=(r"Tensorflow op \[[^\]]*: (\w+)\] is not supported",),
))
