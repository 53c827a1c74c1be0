"""builder.host.verify: two clean runs, artifact hashes compared, what differs named."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.host.runners.local import LocalRunner
from builder.host.verify import compare, verify

TINY = Path(__file__).parent / "recipes" / "tiny-mobilenet.yaml"


def manifest(*artifacts: tuple[str, str, str, str]) -> dict:
    return {"artifacts": [{"path": p, "sha256": s, "format": f, "precision": pr} for p, s, f, pr in artifacts]}


def test_compare_names_what_differs_and_why():
    a = manifest(("m_fp32.tflite", "aa", "tflite", "fp32"), ("m_int8.tflite", "bb", "tflite", "int8"))
    b = manifest(("m_fp32.tflite", "aa", "tflite", "fp32"), ("m_int8.tflite", "cc", "tflite", "int8"),
                 ("m_fp16.tflite", "dd", "tflite", "fp16"))
    result = compare(a, b)
    assert result["m_fp32.tflite"] == {"identical": True, "sha256_a": "aa", "sha256_b": "aa"}
    assert result["m_int8.tflite"]["reason"].startswith("not deterministic")
    assert result["m_fp16.tflite"] == {"identical": False, "sha256_a": None, "sha256_b": "dd",
                                       "reason": "not produced by run a"}


@pytest.mark.slow
def test_two_clean_local_runs_of_a_keras_model_are_bit_identical(tmp_path):
    lines: list[str] = []
    result = verify(TINY, "x86-tflite", LocalRunner(), tmp_path, ["fp32", "int8"], echo=lines.append)
    assert result["identical"], result["artifacts"]
    assert sorted(result["artifacts"]) == ["tiny-mobilenet_fp32.tflite", "tiny-mobilenet_int8.tflite"]
    assert [Path(r).parent.parent.name for r in result["runs"]] == ["a", "b"]
    assert sum("identical" in line for line in lines) == 2
