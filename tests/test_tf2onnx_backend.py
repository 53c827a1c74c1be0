"""tf2onnx is a backend of its own: its step (kind convert.tf_onnx, as users know it), its converter, its
cause rules and its version record live in builder/backends/tf2onnx/."""

from __future__ import annotations

from builder import versions
from builder.backends import tf2onnx
from builder.stage import causes
from builder.stage.steps import registry


def test_its_step_keeps_its_kind_and_lives_in_its_backend():
    step = registry.get("convert.tf_onnx")
    assert step.__module__ == "builder.backends.tf2onnx.steps" and step.tool == "tf2onnx"
    assert (step.consumes, step.produces) == (("saved_model", "tflite"), "onnx")
    assert "tf2onnx" in tf2onnx.PACKAGES


def test_its_unsupported_op_is_classified_with_the_op_it_names():
    record = {"status": "failed", "kind": "convert.tf_onnx", "cause": "error",
              "error": "tf2onnx could not convert m: Tensorflow op [model/Erf: Erf] is not supported"}
    assert causes.classify(record, source_format="saved_model") == (
        "unsupported-op", "tf2onnx has no Erf: replace it in the source model, or build for a target whose runtime "
        "has it")


def test_its_version_is_recorded():
    import importlib.metadata

    assert versions.collect()["packages"]["tf2onnx"] == importlib.metadata.version("tf2onnx")
