"""The run's verdict over its typed results: which variants failed and why, which gates were missed."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import GateError, GateUndecided, StepError
from builder.host.run import Outcome, verdict
from builder.records import Failure, Gate, ValidationResult, VariantResult


def _variant(name: str, status: str = "ok", **more) -> VariantResult:
    return VariantResult(name=name, artifact=f"m_{name}.tflite", format="tflite", precision=name, io_dtype="float32",
                         status=status, **more)


def _gate(outcome: str, value: float | None) -> Gate:
    return Gate(gate="min_cosine", metric="cosine", threshold=0.99, value=value, outcome=outcome,
                passed=outcome == "pass")


def _validated(*gates: Gate) -> ValidationResult:
    return ValidationResult(reference="m_fp32.tflite", samples=8, gates=list(gates))


def test_each_failed_variant_is_named_with_its_own_cause_and_the_first_ones_log_and_hint(tmp_path: Path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "03-convert.int8.log").write_text("\n".join(f"line {i}" for i in range(40)))
    results = [_variant("fp32"),
               _variant("int8", "failed", failure=Failure(step="03-convert.int8", error="op X unsupported",
                                                           cause="unsupported-op", hint="try int8-mixed")),
               _variant("fp16", "skipped", failure=Failure(step="07-benchmark-fp16", error="no device",
                                                           cause="device-needed", hint=None))]
    with pytest.raises(StepError) as caught:
        verdict([Outcome("m", "x86-tflite", tmp_path, results)])
    assert caught.value.message.splitlines() == ["2 variant(s) failed:",
                                                 "  m/x86-tflite/int8: unsupported-op: op X unsupported",
                                                 "  m/x86-tflite/fp16: device-needed: no device"]
    assert caught.value.hint == "try int8-mixed"
    assert caught.value.log_tail == [f"line {i}" for i in range(10, 40)]


def test_a_missed_gate_fails_and_an_undecided_one_exits_3_unless_accepted(tmp_path: Path):
    undecided = _variant("fp16", "gate-undecided", validation=_validated(
        _gate("undecided", 0.99).model_copy(update={"interval": (0.97, 1.0), "photos_needed": 420})))
    with pytest.raises(GateUndecided) as caught:
        verdict([Outcome("m", "x86-tflite", tmp_path, [_variant("fp32"), undecided])])
    assert caught.value.exit_code == 3 and "--accept-undecided" in caught.value.hint
    assert caught.value.message.splitlines()[1] == ("  m/x86-tflite/fp16: cosine = 0.99 [0.970, 1.000] vs min_cosine "
                                                    "0.99: about 420 distinct photos would decide it")
    verdict([Outcome("m", "x86-tflite", tmp_path, [_variant("fp32"), undecided])], accept_undecided=True)
    missed = _variant("int8", "gate-failed", validation=_validated(_gate("pass", 0.999), _gate("undecided", 0.99),
                                                                  _gate("fail", 0.95)))
    with pytest.raises(GateError) as caught:
        verdict([Outcome("m", "x86-tflite", tmp_path, [missed, undecided])], accept_undecided=True)
    assert caught.value.message.splitlines() == ["accuracy gate(s) missed:",
                                                 "  m/x86-tflite/int8: cosine = 0.95 vs min_cosine 0.99 (missed by 0.0400)"]
