"""Failed steps are classified into known causes with hints (seed 002's report)."""

import pytest

from builder.stage.causes import classify, first_error, known_cause


@pytest.mark.parametrize("error, cause", [
    ("ConverterError: Failed to functionalize ControlFlowV1 ops. Consider using ControlFlowV2.", "control-flow-v1"),
    ("OpConversionFailure: No translator found for Convolution2DTransposeBias node.", "unsupported-op"),
    ("sha256 mismatch (got ab12.., want cd34..)", "checksum-mismatch"),
    ("urlopen error [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed", "tls-interception"),
    ("http://x/y: blocked by allowlist: host x not in EDGE_BUILDER_ALLOWLIST=a.com", "allowlist"),
    ("http://x/y: proxy authentication required (407 Proxy Authentication Required)", "proxy-auth"),
    ("ProxyError('Cannot connect to proxy.', OSError('Tunnel connection failed: 407 Proxy Authentication Required'))",
     "proxy-auth"),
    ("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for input", "shape-mismatch"),
])
def test_known_errors_get_their_cause_and_a_hint(error, cause):
    got, hint = classify({"status": "failed", "error": error, "cause": "crash"})
    assert got == cause and hint


def test_a_cause_set_by_the_step_wins_and_skips_point_at_the_dependency():
    record = {"status": "failed", "error": "x", "cause": "not-fully-quantized", "hint": "h"}
    assert classify(record) == ("not-fully-quantized", "h")
    assert classify({"status": "skipped", "error": "input a was not built"})[0] == "dependency-failed"


def test_the_log_tail_is_searched_too():
    record = {"status": "failed", "error": "step failed", "cause": "error", "log_tail": ["...", "Killed"]}
    assert classify(record)[0] == "out-of-memory"


# --- a tool's first real error line (outputs as onnx2tf 1.28, tf2onnx 1.17 and OpenVINO 2026 print them) ---

ONNX2TF_NOT_IMPLEMENTED = """\
\x1b[31mERROR:\x1b[0m DynamicQuantizeLSTM OP is not yet implemented.
Traceback (most recent call last):
  File "<string>", line 5, in <module>
    op = importlib.import_module(f'onnx2tf.ops.{optype}')
ModuleNotFoundError: No module named 'onnx2tf.ops.DynamicQuantizeLSTM'
"""
ONNX2TF_NODE_FAILED = """\
INFO: 3 / 9
\x1b[31mERROR:\x1b[0m The trace log is below.
Traceback (most recent call last):
  File "/x/onnx2tf/utils/common_functions.py", line 310, in print_wrapper_func
    result = func(*args, **kwargs)
ValueError: Dimensions must be equal, but are 5 and 8 for 'tf.math.add'
\x1b[31mERROR:\x1b[0m input_onnx_file_path: /tmp/model.onnx
\x1b[31mERROR:\x1b[0m onnx_op_name: wa/Add
\x1b[31mERROR:\x1b[0m Read this and deal with it. https://github.com/PINTO0309/onnx2tf#parameter-replacement
"""
TF2ONNX_SPARSE = """\
2026-01-01 10:00:00,000 - INFO - Using tensorflow=2.21.0, onnx=1.23.2, tf2onnx=1.17.0/4d7b8e
Traceback (most recent call last):
  File "/x/tensorflow/python/framework/tensor_util.py", line 790, in MakeNdarray
    dtype=dtype).copy().reshape(shape))
ValueError: cannot reshape array of size 48 into shape (8,3,3,3)
"""
TF2ONNX_UNSUPPORTED = """\
2026-01-01 10:00:00,000 - WARNING - tf2onnx.tf_loader: Could not search for non-variable resources.
2026-01-01 10:00:01,000 - ERROR - tf2onnx.tfonnx: Tensorflow op [model/Erf: Erf] is not supported
2026-01-01 10:00:01,000 - ERROR - tf2onnx.tfonnx: Unsupported ops: Counter({'Erf': 1})
"""
OPENVINO_SHAPES = """\
Check 'false' failed at src/frontends/common_translators/src/unconverted_ops_report.cpp:151:
FrontEnd API failed with OpConversionFailure:
Model wasn't fully converted. Failed operations detailed log:
-- Add-17 with a message:
[ONNX Frontend] Conversion failed for Add-17
While validating ONNX node '<Node(Add): y>': Check 'TRShape::broadcast_merge_into' failed at x.hpp:26:
Argument shapes are inconsistent.

Summary:
-- Conversion is failed for: Add-17
"""


@pytest.mark.parametrize("output, first", [
    (ONNX2TF_NOT_IMPLEMENTED, "DynamicQuantizeLSTM OP is not yet implemented."),
    (ONNX2TF_NODE_FAILED, "ValueError: Dimensions must be equal, but are 5 and 8 for 'tf.math.add'"),
    (TF2ONNX_SPARSE, "ValueError: cannot reshape array of size 48 into shape (8,3,3,3)"),
    (TF2ONNX_UNSUPPORTED, "Tensorflow op [model/Erf: Erf] is not supported"),
    ("  File \"/x/flatbuffers/encode.py\", line 27, in Get\nstruct.error: unpack_from requires a buffer\n",
     "struct.error: unpack_from requires a buffer"),
    ("INFO: all fine\nWARNING: a warning\n", None),
])
def test_the_first_real_error_line_of_a_tool_is_found(output, first):
    assert first_error(output) == first


def test_an_exception_message_may_state_its_error_on_any_line():
    assert first_error(OPENVINO_SHAPES) is None
    assert first_error(OPENVINO_SHAPES, any_line=True) == "Argument shapes are inconsistent."


@pytest.mark.parametrize("line, cause", [
    ("DynamicQuantizeLSTM OP is not yet implemented.", "unsupported-op"),
    ("Tensorflow op [model/Erf: Erf] is not supported", "unsupported-op"),
    ("ValueError: cannot reshape array of size 48 into shape (8,3,3,3)", None),
])
def test_a_first_error_line_is_classified(line, cause):
    assert known_cause(line) == cause


# --- hints name only options the source can set ---

TFLITE_ERF = {"status": "failed", "kind": "convert.tflite", "cause": "unsupported-op",
              "error": "TFLite conversion of work/saved_model/model failed (unsupported-op): "
                       "ops not supported by TFLite builtins: Erf",
              "hint": "set allow_custom_ops: true if the target runtime registers these ops as custom ops"}


def test_an_onnx_source_is_told_about_onnx2tf_pseudo_ops_not_allow_custom_ops():
    cause, hint = classify(TFLITE_ERF, source_format="onnx")
    assert cause == "unsupported-op"
    assert "source.onnx2tf.replace_to_pseudo_operators: [Erf]" in hint and "allow_custom_ops" not in hint


def test_only_a_frozen_graph_source_is_told_about_allow_custom_ops():
    assert "source.frozen_graph.allow_custom_ops" in classify(TFLITE_ERF, source_format="frozen_graph")[1]
    for fmt in ("saved_model", "keras", "tflite", None):
        hint = classify(TFLITE_ERF, source_format=fmt)[1]
        assert "allow_custom_ops" not in hint and "onnx2tf" not in hint and "Erf" in hint, fmt


def test_an_op_openvino_lacks_gets_no_tflite_or_onnx2tf_advice():
    record = {"status": "failed", "kind": "convert.openvino", "tool": "OpenVINO", "cause": "unsupported-op",
              "error": "OpenVINO cannot convert m.onnx: unsupported op Erf"}
    hint = classify(record, source_format="onnx")[1]
    assert hint.startswith("OpenVINO has no Erf") and "onnx2tf" not in hint and "allow_custom_ops" not in hint


def test_an_op_of_a_quantized_model_asks_for_the_float_model():
    record = {"status": "failed", "kind": "convert.onnx2tf", "cause": "unsupported-op",
              "error": "onnx2tf could not convert m.onnx: DynamicQuantizeLSTM OP is not yet implemented."}
    assert "give the float model" in classify(record, source_format="onnx")[1]


def test_onnx2tf_options_are_suggested_only_to_sources_that_can_set_them():
    record = {"status": "failed", "kind": "convert.onnx2tf", "cause": "onnx2tf-failed", "error": "x"}
    assert "source.onnx2tf.param_replacement_file" in classify(record, source_format="onnx")[1]
    assert "source.onnx2tf" not in classify(record, source_format="tflite")[1]  # the tf2onnx+onnx2tf round trip


# --- what a backend contributes ---


def test_a_backend_contributes_its_tools_rules_noise_op_names_and_hints(monkeypatch):
    """A backend's rules are tried before the core's generic ones, its hint is chosen by the failed step's tool,
    and the core's generic causes (memory, disk) stay last."""
    from builder.stage import causes

    monkeypatch.setattr(causes, "_CONTRIBUTED", [*causes.contributed()])
    causes.register(causes.ToolErrors(
        rules=(causes.Rule(r"frobnicator: no kernel for", "unsupported-op", causes.UNSUPPORTED_OP_HINT),
               causes.Rule(r"frobnicator", "frobnicator-failed", "see its log", after_core=True)),
        not_the_error=(r"frobnicator advice:",),
        op_names=(r"no kernel for (\w+)",),
        hints={"unsupported-op": lambda f: f"{f.ops[0]}: give frob.ops" if f.tool == "Frob" else None},
    ))
    assert first_error("ERROR: frobnicator advice: read the manual\nERROR: no kernel for Erf\n") == "no kernel for Erf"
    record = {"status": "failed", "tool": "Frob", "error": "frobnicator: no kernel for Erf", "cause": "error"}
    assert classify(record) == ("unsupported-op", "Erf: give frob.ops")
    assert classify(record | {"tool": "Other"}) == ("unsupported-op", "Other has no Erf: replace it in the source "
                                                    "model, or build for a target whose runtime has it")
    assert known_cause("frobnicator: shape mismatch") == "shape-mismatch"  # the core's specific rule first
    assert known_cause("frobnicator exited") == "frobnicator-failed"
    assert known_cause("frobnicator: Killed") == "frobnicator-failed"  # a tool's own failure before any tool's
