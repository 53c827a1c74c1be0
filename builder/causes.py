"""Classify a failed step into a known cause with a hint (seed 002's conversion report).

Also finds the line that says what went wrong in a converter's output (onnx2tf,
tf2onnx, OpenVINO), and gives hints only with options the recipe's source can set.
"""

from __future__ import annotations

import re

from builder.records import StepOutcome

# as builder/backends/litert/onnx2tf_options.py declares them (importing a backend here would be a cycle): until
# these hints move into that backend, with its cause rules
PSEUDO_OPS = ("Abs", "Acos", "Asin", "Atan", "Erf", "GatherND", "Gelu", "HardSwish", "LeakyRelu", "MatMulInteger",
              "Neg", "PRelu", "Pow")
ONNX2TF_SOURCES = ("onnx", "pytorch_state_dict", "torchscript", "exported_program")

# (pattern in the error or log, cause, hint); the first match wins.
KNOWN_CAUSES: tuple[tuple[str, str, str], ...] = (
    (r"ControlFlowV1|functionalize ControlFlowV1", "control-flow-v1",
     "re-export the TF1 graph as a TF2 SavedModel (or export_tflite_ssd_graph for SSD) and convert that"),
    (r"Convolution2DTransposeBias|custom op|Custom op|not supported by|unsupported op|OP is not yet implemented"
     r"|Tensorflow op \[.*\] is not supported|No conversion rule found for", "unsupported-op",
     "the runtime lacks an op: use another target, or replace the op in the source model"),
    (r"not fully quantized|float fallback|ops left in float", "not-fully-quantized",
     "set require_full_int8: false to keep float fallbacks, or replace the op"),
    (r"sha256 mismatch", "checksum-mismatch", "a mirror serves different bytes: fix sha256 or the mirror list"),
    (r"CERTIFICATE_VERIFY_FAILED|certificate verify failed", "tls-interception",
     "give the corporate CA bundle (--ca-bundle, SSL_CERT_FILE, PIP_CERT)"),
    (r"(?i)proxy authentication required", "proxy-auth",
     "the proxy wants credentials: set HTTPS_PROXY / HTTP_PROXY to http://user:password@proxy:port, "
     "or ask for the host to be added to the proxy's allowlist"),
    (r"blocked by allowlist", "allowlist",
     "use a mirror the allowlists allow, or ask the administrator to add its host to EDGE_BUILDER_ALLOWLIST "
     "(a recipe's allowlist can narrow that list, never widen it)"),
    (r"dtype mismatch|Type Error|type mismatch", "dtype-mismatch",
     "check the input spec dtype and the quantization io_dtype"),
    (r"shape mismatch|Shape mismatch|incompatible shape|Got invalid dimensions", "shape-mismatch",
     "fix the input shape in the recipe (input.shape) or make the model's input static"),
    (r"onnx2tf", "onnx2tf-failed", "simplify the ONNX model first, or try another opset"),
    (r"CUDA initialization failure with error: ?(?:100|801|35)|cudaErrorNoDevice|cudaErrorNotSupported"
     r"|cudaErrorInsufficientDriver|Failed to dlopen libcuda", "gpu-unavailable",
     "the container does not reach the GPU: the NVIDIA runtime, NVIDIA_VISIBLE_DEVICES=all and the `video` group "
     "(`builder devices --check` tests a device)"),
    (r"No space left on device|ENOSPC", "disk-full",
     "free disk space where the stage ran (the engine's data root, or this host): `docker system prune`, "
     "`builder cache prune`"),
    (r"Killed|MemoryError|out of memory", "out-of-memory", "give the engine more memory or reduce the batch"),
)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# onnx2tf's `ERROR:` lines; Python logging's "date time - ERROR - logger: message" (tf2onnx)
_ERROR_LINE = re.compile(r"^(?:ERROR:|\S+ \S+ - ERROR - [\w.]+:)\s*(.+)$")
_EXCEPTION_LINE = re.compile(  # ValueError: ..., onnx.checker.ValidationError: ..., struct.error: ...
    r"^(?:(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Failure|Exit)|[a-z_]\w*\.error)(?:: .+)?$")
# lines around a tool's error that are not the error: onnx2tf's advice, OpenVINO's frames and summaries
_NOT_THE_ERROR = re.compile(
    r"^(?:The trace log is below|Traceback \(most recent call last\)|input_onnx_file_path:|onnx_op_name:"
    r"|Read this and deal with it|Alternatively, if the input OP|If the input OP of ONNX|Also, for models that"
    r"|Error in attempt \d|Check '.*' failed at |FrontEnd API failed with|Model wasn't fully converted|Summary:"
    r"|While validating|\[ONNX Frontend\] Conversion failed for|-- )"
)
_OP_NAMES = (  # the ops named by each converter's "cannot convert this op" message
    re.compile(r"(\w+) OP is not yet implemented"),  # onnx2tf
    re.compile(r"(?:TFLite builtins|TF Select ops|Custom ops): ([\w.]+(?:, [\w.]+)*)"),  # TFLiteConverter
    re.compile(r"Tensorflow op \[[^\]]*: (\w+)\] is not supported"),  # tf2onnx
    re.compile(r"unsupported op ([\w./:-]+)"),  # builder.backends.openvino.convert
    re.compile(r"No translator found for ([\w./:-]+) node"),
    re.compile(r"No conversion rule found for operations: ([\w./:-]+(?:, [\w./:-]+)*)"),
)
_QUANTIZED_OP = re.compile(r"^(?:DynamicQuantize\w+|QLinear\w+|ConvInteger|QAttention|QGemm)$")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def first_error(output: str, *, any_line: bool = False) -> str | None:
    """The first line of a tool's output that states an error: an `ERROR` log line or a Python
    exception, skipping the advice and frames around it. `any_line`: every line may be the
    error (an exception's own message, such as OpenVINO's)."""
    for raw in strip_ansi(output).splitlines():
        line = raw.strip()
        match = _ERROR_LINE.match(line)
        text = match.group(1).strip() if match else line
        if not text or _NOT_THE_ERROR.match(text):
            continue
        if match or any_line or _EXCEPTION_LINE.match(line):
            return text
    return None


def known_cause(text: str) -> str | None:
    return next((cause for pattern, cause, _ in KNOWN_CAUSES if re.search(pattern, text)), None)


def unsupported_ops(text: str, patterns: tuple[re.Pattern[str], ...] = _OP_NAMES) -> list[str]:
    """The op names a converter's message lists as unsupported, in order, once each."""
    found: dict[str, None] = {}
    for pattern in patterns:
        for match in pattern.finditer(text):
            found.update(dict.fromkeys(match.group(1).split(", ")))
    return list(found)


def _pseudo(op: str) -> str | None:
    """The ONNX name of an op onnx2tf can build from others (TF's Erf is ONNX's Erf)."""
    return next((p for p in PSEUDO_OPS if p.lower() == op.lower().removeprefix("tf.")), None)


def _unsupported_op_hint(ops: list[str], kind: str | None, tool: str | None, source_format: str | None) -> str:
    names = ", ".join(ops) or "an op"
    via_onnx2tf = source_format in ONNX2TF_SOURCES and kind in ("convert.onnx2tf", "convert.tflite")
    pseudo = [p for p in map(_pseudo, ops) if p]
    if via_onnx2tf and pseudo:
        return (f"set source.onnx2tf.replace_to_pseudo_operators: [{', '.join(pseudo)}]: onnx2tf then builds "
                f"{'it' if len(pseudo) == 1 else 'them'} from ops TFLite has")
    if source_format == "frozen_graph" and kind == "convert.tflite":
        return (f"set source.frozen_graph.allow_custom_ops: true if the target runtime registers {names} as custom "
                "ops (e.g. TFLite_Detection_PostProcess), or rewrite the model without them")
    if any(_QUANTIZED_OP.match(op) for op in ops):
        return f"{names}: ops of an already quantized model; give the float model as the source"
    return f"{tool or 'the converter'} has no {names}: replace it in the source model, or build for a target whose runtime has it"


def _onnx2tf_hint(source_format: str | None) -> str:
    if source_format in ONNX2TF_SOURCES:
        return ("see the log tail for the ONNX node onnx2tf failed on; onnx2tf's parameter replacement "
                "(source.onnx2tf.param_replacement_file) or its other source.onnx2tf options may get past it")
    return "see the log tail for the ONNX node onnx2tf failed on; build for a target that reads this source directly"


def classify(record: StepOutcome | dict, *, source_format: str | None = None) -> tuple[str, str | None]:
    """(cause, hint) for a failed or skipped step record, or any failure given as its fields (a dict);
    `source_format` (the recipe's source) keeps hints to options that source can set."""
    if isinstance(record, dict):
        record = StepOutcome.model_validate(record)
    if record.status == "skipped":  # a dependency failed, or the stage never ran (device-needed ...)
        return record.cause or "dependency-failed", (
            record.hint or "an earlier step this one needs failed; see that step")
    text = "\n".join([record.error or ""] + record.log_tail)
    cause, hint = record.cause, record.hint
    if cause in (None, "error", "crash", "conversion-failed", "stage-died"):
        for pattern, known, known_hint in KNOWN_CAUSES:
            if re.search(pattern, text):
                cause, hint = known, hint or known_hint
                break
        else:
            return cause or "error", hint
    if cause == "unsupported-op":
        ops = unsupported_ops(record.error or "") or unsupported_ops(text)
        return cause, _unsupported_op_hint(ops, record.kind, record.tool, source_format)
    if cause == "onnx2tf-failed":
        return cause, _onnx2tf_hint(source_format)
    return cause, hint
