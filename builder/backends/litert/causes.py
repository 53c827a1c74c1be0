"""What LiteRT's tools say when they fail (TensorFlow's TFLite converter, onnx2tf), and the hints that name
the options a recipe's source can set to get past them."""

from __future__ import annotations

from builder.backends.litert.onnx2tf_options import ONNX2TF_SOURCES, PSEUDO_OPS
from builder.backends.litert.steps import OnnxToSavedModel, ToTflite
from builder.stage import causes


def _pseudo(op: str) -> str | None:
    """The ONNX name of an op onnx2tf can build from others (TF's Erf is ONNX's Erf)."""
    return next((p for p in PSEUDO_OPS if p.lower() == op.lower().removeprefix("tf.")), None)


def unsupported_op_hint(failure: causes.Failure) -> str | None:
    """onnx2tf's pseudo ops for a source that reaches TFLite through it; custom ops for a frozen graph's."""
    pseudo = [p for p in map(_pseudo, failure.ops) if p]
    through_onnx2tf = failure.tool in (OnnxToSavedModel.tool, ToTflite.tool) and failure.source_format in ONNX2TF_SOURCES
    if through_onnx2tf and pseudo:
        return (f"set source.onnx2tf.replace_to_pseudo_operators: [{', '.join(pseudo)}]: onnx2tf then builds "
                f"{'it' if len(pseudo) == 1 else 'them'} from ops TFLite has")
    if failure.source_format == "frozen_graph" and failure.tool == ToTflite.tool:
        return (f"set source.frozen_graph.allow_custom_ops: true if the target runtime registers "
                f"{', '.join(failure.ops) or 'an op'} as custom ops (e.g. TFLite_Detection_PostProcess), "
                "or rewrite the model without them")
    return None


def onnx2tf_hint(failure: causes.Failure) -> str:
    if failure.source_format in ONNX2TF_SOURCES:
        return ("see the log tail for the ONNX node onnx2tf failed on; onnx2tf's parameter replacement "
                "(source.onnx2tf.param_replacement_file) or its other source.onnx2tf options may get past it")
    return "see the log tail for the ONNX node onnx2tf failed on; build for a target that reads this source directly"


causes.register(causes.ToolErrors(
    rules=(
        causes.Rule(r"ControlFlowV1|functionalize ControlFlowV1", "control-flow-v1",
                    "re-export the TF1 graph as a TF2 SavedModel (or export_tflite_ssd_graph for SSD) and convert that"),
        causes.Rule(r"Convolution2DTransposeBias|OP is not yet implemented", "unsupported-op",
                    causes.UNSUPPORTED_OP_HINT),
        causes.Rule(r"onnx2tf", "onnx2tf-failed", "simplify the ONNX model first, or try another opset", after_core=True),
    ),
    not_the_error=(  # onnx2tf's advice around its error
        r"The trace log is below|input_onnx_file_path:|onnx_op_name:|Read this and deal with it"
        r"|Alternatively, if the input OP|If the input OP of ONNX|Also, for models that",),
    op_names=(
        r"(\w+) OP is not yet implemented",  # onnx2tf
        r"(?:TFLite builtins|TF Select ops|Custom ops): ([\w.]+(?:, [\w.]+)*)",  # TFLiteConverter
    ),
    hints={"unsupported-op": unsupported_op_hint, "onnx2tf-failed": onnx2tf_hint},
))
