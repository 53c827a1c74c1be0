"""Failed steps are classified into known causes with hints (seed 002's report)."""

import pytest

from builder.causes import classify


@pytest.mark.parametrize("error, cause", [
    ("ConverterError: Failed to functionalize ControlFlowV1 ops. Consider using ControlFlowV2.", "control-flow-v1"),
    ("OpConversionFailure: No translator found for Convolution2DTransposeBias node.", "unsupported-op"),
    ("sha256 mismatch (got ab12.., want cd34..)", "checksum-mismatch"),
    ("urlopen error [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed", "tls-interception"),
    ("http://x/y: blocked by allowlist (host x not in a.com)", "allowlist"),
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
