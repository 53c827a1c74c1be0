"""Classify a failed step into a known cause with a hint (seed 002's conversion report)."""

from __future__ import annotations

import re

# (pattern in the error or log, cause, hint); the first match wins.
KNOWN_CAUSES: tuple[tuple[str, str, str], ...] = (
    (r"ControlFlowV1|functionalize ControlFlowV1", "control-flow-v1",
     "re-export the TF1 graph as a TF2 SavedModel (or export_tflite_ssd_graph for SSD) and convert that"),
    (r"Convolution2DTransposeBias|custom op|Custom op|not supported by|unsupported op", "unsupported-op",
     "the runtime lacks an op: use allow_custom_ops, another target, or replace the op in the source model"),
    (r"not fully quantized|float fallback|ops left in float", "not-fully-quantized",
     "set require_full_int8: false to keep float fallbacks, or replace the op"),
    (r"sha256 mismatch", "checksum-mismatch", "a mirror serves different bytes: fix sha256 or the mirror list"),
    (r"CERTIFICATE_VERIFY_FAILED|certificate verify failed", "tls-interception",
     "give the corporate CA bundle (--ca-bundle, SSL_CERT_FILE, PIP_CERT)"),
    (r"blocked by allowlist", "allowlist", "add the host to EDGE_BUILDER_ALLOWLIST or the recipe's allowlist"),
    (r"dtype mismatch|Type Error|type mismatch", "dtype-mismatch",
     "check the input spec dtype and the quantization io_dtype"),
    (r"shape mismatch|Shape mismatch|incompatible shape|Got invalid dimensions", "shape-mismatch",
     "fix the input shape in the recipe (input.shape) or make the model's input static"),
    (r"onnx2tf", "onnx2tf-failed", "simplify the ONNX model first, or try another opset"),
    (r"Killed|MemoryError|out of memory", "out-of-memory", "give the engine more memory or reduce the batch"),
)


def classify(record: dict) -> tuple[str, str | None]:
    """(cause, hint) for a failed or skipped step record."""
    if record.get("status") == "skipped":  # a dependency failed, or the stage never ran (device-needed ...)
        return record.get("cause") or "dependency-failed", (
            record.get("hint") or "an earlier step this one needs failed; see that step")
    if record.get("cause") not in (None, "error", "crash", "conversion-failed"):
        return record["cause"], record.get("hint")
    text = "\n".join([record.get("error") or ""] + (record.get("log_tail") or []))
    for pattern, cause, hint in KNOWN_CAUSES:
        if re.search(pattern, text):
            return cause, record.get("hint") or hint
    return record.get("cause") or "error", record.get("hint")
