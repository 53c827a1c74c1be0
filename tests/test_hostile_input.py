"""Hostile input is refused before anything runs: exit 2 naming file, field and fix; no traceback, no hang.

Plain tests for each known case, then a property-based test that mutates the shipped recipes.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import os
import signal
import subprocess
import sys
import tempfile
import threading
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_config import GOOD  # the smallest valid recipe

from builder.config.loader import MAX_FILE_BYTES
from builder.config.paths import ALLOW_ENV
from builder.errors import FetchError
from builder.host import catalog
from builder.host.cli import cli
from builder.host.fetch import Fetcher

KERAS = "  keras: {application: MobileNetV2, weights: none, alpha: 0.35}"
SECONDS = 20  # no example or case may take longer: a hang fails instead of blocking the suite


@contextlib.contextmanager
def time_limit(seconds: float = SECONDS):
    """Raise TimeoutError in the test if the block takes longer (interrupts a blocking open of a FIFO too)."""

    def expire(signum, frame):
        raise TimeoutError(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def invoke(*args: str):
    with time_limit():
        return CliRunner().invoke(cli, [str(a) for a in args])


def refused(result, *expected: str) -> str:
    """The CLI refused the input the documented way; return what it printed."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    for text in expected:
        assert text in result.output, result.output
    return result.output


def in_a_process(*args: str, seconds: float = 60) -> str:
    """Run the real `builder` in its own process: exit 2 within `seconds`, even if a hang would be in C code."""
    proc = subprocess.run([sys.executable, "-m", "builder.host.cli", *map(str, args)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=seconds)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stderr


def write(folder: Path, text: str | bytes, name: str = "recipe.yaml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def plan_and_validate(path: Path, *expected: str) -> None:
    """`plan` and `validate` both refuse `path`, each naming it."""
    refused(invoke("plan", "--json", path, "-t", "x86-tflite"), path.name, *expected)
    refused(invoke("validate", path), path.name, *expected)


def with_source(source_lines: str) -> str:
    return GOOD.replace(KERAS, source_lines)


# --- reading the file ---------------------------------------------------------------


def test_deep_nesting_is_refused(tmp_path):
    plan_and_validate(write(tmp_path, "name: " + "[" * 5000 + "]" * 5000 + "\n"), "nested more than 32 levels")


@pytest.mark.parametrize("data", [
    b"name: \xff\xfe tiny\n",  # not UTF-8
    "\ufeff".encode("utf-16-le") + GOOD.encode("utf-16-le"),
    GOOD.encode("utf-16"),
    GOOD.encode("utf-32"),
], ids=["invalid-utf8", "utf16-le-bom", "utf16-bom", "utf32-bom"])
def test_encodings_other_than_utf8_are_refused(tmp_path, data):
    plan_and_validate(write(tmp_path, data), "save the file as UTF-8")


def test_a_utf8_bom_is_fine(tmp_path):
    assert invoke("validate", write(tmp_path, "\ufeff" + GOOD)).exit_code == 0


def test_control_characters_name_the_line(tmp_path):
    plan_and_validate(write(tmp_path, GOOD + "description: a\x00b\n"), "recipe.yaml:10", "not allowed")


def test_a_recipe_path_that_is_a_fifo_does_not_hang(tmp_path):
    fifo = tmp_path / "recipe.yaml"
    os.mkfifo(fifo)
    for args in (["plan", fifo, "-t", "x86-tflite"], ["validate", fifo], ["validate", tmp_path]):
        assert f"{fifo}: is a named pipe (FIFO), not a regular file" in in_a_process(*args)


def test_a_huge_file_is_refused_unread(tmp_path):
    path = write(tmp_path, GOOD)
    with open(path, "ab") as f:
        f.truncate(2 << 20)
    plan_and_validate(path, f"larger than {MAX_FILE_BYTES >> 10} KiB")


BOMB = "".join(f"  l{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 10))


def test_yaml_bomb_under_targets_is_refused_fast(tmp_path):
    text = GOOD + "targets:\n  rpi:\n    l0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + BOMB.replace("  l", "    l")
    path = write(tmp_path, text)
    for args in (["plan", "--json", path, "-t", "x86-tflite"], ["plan", "--json", path, "-t", "rpi"], ["validate", path]):
        out = in_a_process(*args)
        assert "recipe.yaml:" in out and "aliases expand this node to" in out and "YAML bomb" in out


def test_aliases_that_nest_deep_are_refused(tmp_path):
    chain = "".join(f"    d{i}: &d{i} [[[[[[[[[[*d{i - 1}]]]]]]]]]]\n" for i in range(1, 6))
    text = GOOD + "targets:\n  rpi:\n    d0: &d0 [x]\n" + chain
    plan_and_validate(write(tmp_path, text), "aliases nest this node more than 32 levels")


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path):
    plan_and_validate(write(tmp_path, GOOD + "description: &a [*a]\n"), "inside its own anchor")


def test_small_aliases_still_work(tmp_path):
    text = GOOD.replace("calibration: {synthetic: 4}", "calibration: &data {synthetic: 4}") + "validation: *data\n"
    assert invoke("validate", write(tmp_path, text)).exit_code == 0


@pytest.mark.parametrize("value", ["!!int many", "!!float x", "!!timestamp nope", "!!binary a",
                                   "!!python/object:os.system x", "1" + "0" * 5000])
def test_values_that_cannot_be_built_are_refused(tmp_path, value):
    plan_and_validate(write(tmp_path, GOOD + f"description: {value}\n"))


# --- duplicate keys ------------------------------------------------------------------


def test_duplicate_top_level_keys_name_both_lines(tmp_path):
    text = GOOD.replace("variants: [fp32, int8]", "variants: {fp32: {}, int8: {}}") + "variants: [fp32]\n"
    plan_and_validate(write(tmp_path, text), "recipe.yaml:10", "duplicate key 'variants' (lines 9 and 10)")


def test_duplicate_nested_keys_name_both_lines(tmp_path):
    text = GOOD.replace("  std: 127.5\n", "  std: 127.5\n  mean: 0\n")
    plan_and_validate(write(tmp_path, text), "duplicate key 'mean' (lines 6 and 8)")


def test_merge_keys_may_be_overridden(tmp_path):
    text = GOOD + "benchmark: &bench {runs: 3, warmup: 1}\ntargets:\n  rpi:\n    benchmark: {<<: *bench, runs: 5}\n"
    assert invoke("validate", write(tmp_path, text)).exit_code == 0
    assert catalog.load_recipe(tmp_path / "recipe.yaml", "rpi").benchmark.runs == 5


# --- structure and types -------------------------------------------------------------


def test_variants_as_a_list_of_maps(tmp_path):
    plan_and_validate(write(tmp_path, GOOD.replace("[fp32, int8]", "[{fp32: {}}, {int8: {}}]")),
                      "recipe.yaml:9: variants", "list of names")


def test_step_params_with_a_non_string_key(tmp_path):
    text = GOOD + "steps:\n  - {kind: convert.tflite, variant: fp32, params: {1: fp32}}\n"
    plan_and_validate(write(tmp_path, text), "steps[0].params[1] (the key)", "valid string")


def test_target_step_params_with_a_non_string_key(tmp_path):
    data = yaml.safe_load((catalog.targets_dir() / "x86-tflite.yaml").read_text())
    data["variants"]["fp32"] = [{"step": "convert.tflite", "params": {1: "fp32"}}]
    path = write(tmp_path, yaml.safe_dump(data), "targets/x86-tflite.yaml")
    refused(invoke("validate", path), "x86-tflite.yaml", "variants.fp32[0].params[1] (the key)")


# --- numbers -------------------------------------------------------------------------


@pytest.mark.parametrize("old,new,field", [
    ("[1, 96, 96, 3]", "[1, 0, 96, 3]", "input.shape[1]"),
    ("[1, 96, 96, 3]", "[1, 96, -96, 3]", "input.shape[2]"),
    ("[1, 96, 96, 3]", "[1, 100000, 100000, 3]", "input.shape[1]"),
    ("[1, 96, 96, 3]", "[1, 96, 96]", "input"),
    ("std: 127.5", "std: 0", "input.std"),
    ("std: 127.5", "std: [58.4, 0, 57.4]", "input.std"),
    ("std: 127.5", "std: -1", "input.std"),
    ("std: 127.5", "std: [1, 2]", "input"),
    ("mean: 127.5", "mean: .nan", "input.mean"),
    ("mean: 127.5", "mean: [1, .inf, 2]", "input.mean"),
    ("std: 127.5", "std: 1\n  crop_fraction: 0", "input.crop_fraction"),
    ("{synthetic: 4}", "{synthetic: 0}", "calibration.synthetic"),
    ("{synthetic: 4}", "{synthetic: 1000000}", "calibration.synthetic"),
    ("{synthetic: 4}", "{synthetic: 4, augment: {crops: 0}}", "calibration.augment.crops"),
    ("{synthetic: 4}", "{synthetic: 4, augment: {crops: 17}}", "calibration.augment.crops"),
    ("{synthetic: 4}", "{synthetic: 4, limit: 0}", "calibration.limit"),
    ("{synthetic: 4}", "{files: []}", "calibration.files"),
    ("alpha: 0.35", "alpha: 0", "source.keras.alpha"),
])
def test_out_of_range_numbers(tmp_path, old, new, field):
    plan_and_validate(write(tmp_path, GOOD.replace(old, new)), f"{field}")


@pytest.mark.parametrize("extra,field", [
    ("benchmark: {runs: 0}", "benchmark.runs"),
    ("benchmark: {runs: 1000000000}", "benchmark.runs"),
    ("benchmark: {warmup: -1}", "benchmark.warmup"),
    ("benchmark: {threads: 0}", "benchmark.threads"),
    ("benchmark: {threads: 100000}", "benchmark.threads"),
    ("benchmark: {min_seconds: .inf}", "benchmark.min_seconds"),
    ("benchmark: {emulated_runs: 0}", "benchmark.emulated_runs"),
    ("gates: {min_cosine: 2}", "gates.min_cosine"),
    ("gates: {min_top1_agreement: -0.1}", "gates.min_top1_agreement"),
    ("gates: {max_abs_error: -1}", "gates.max_abs_error"),
    ("gates: {min_snr_db: .nan}", "gates.min_snr_db"),
    ("gates: {min_snr_db: 1.0e+9}", "gates.min_snr_db"),
])
def test_out_of_range_settings(tmp_path, extra, field):
    plan_and_validate(write(tmp_path, GOOD + extra + "\n"), field)


def test_negative_label(tmp_path):
    (tmp_path / "a.png").write_bytes(b"png")
    for label in ("-1", "[3, -2]", "[]"):
        text = GOOD.replace("calibration: {synthetic: 4}", f"validation: {{files: [{{file: a.png, label: {label}}}]}}")
        plan_and_validate(write(tmp_path, text), "validation.files[0].label")


@pytest.mark.parametrize("jobs", ["0", "-3"])
def test_jobs_must_be_positive(tmp_path, jobs):
    refused(invoke("run", write(tmp_path, GOOD), "-t", "x86-tflite", "-j", jobs), "--jobs")


# --- paths ---------------------------------------------------------------------------


@pytest.mark.parametrize("source,expected", [
    ("  file: /dev/zero\n  format: onnx", "/dev/zero is a character device"),
    ("  file: pipe.onnx", "named pipe (FIFO)"),
    ("  file: folder.onnx", "is a directory; format onnx needs a regular file"),
    ("  file: model.onnx\n  format: saved_model", "is a regular file; format saved_model needs a directory"),
    ("  file: model.xml", "its weights model.bin are not beside it"),
])
def test_special_files_and_wrong_kinds_for_the_source(tmp_path, monkeypatch, source, expected):
    monkeypatch.setenv(ALLOW_ENV, "/dev")  # the kind is checked once a path is within reach
    os.mkfifo(tmp_path / "pipe.onnx")
    (tmp_path / "folder.onnx").mkdir()
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "model.xml").write_bytes(b"<net/>")
    plan_and_validate(write(tmp_path, with_source(source)), "source", expected)


def test_a_saved_model_folder_is_a_source(tmp_path):
    (tmp_path / "saved").mkdir()
    assert invoke("validate", write(tmp_path, with_source("  file: saved\n  format: saved_model"))).exit_code == 0


@pytest.mark.parametrize("dataset,expected", [
    ("{folder: photo.png}", "calibration.folder: "),  # a file where a folder is expected
    ("{npy: photos}", "calibration.npy: "),  # and the reverse
    ("{npy: /dev/zero}", "character device"),
    ("{files: [{file: photos}]}", "calibration.files[0].file"),
    ("{files: [{file: /dev/null}]}", "character device"),
])
def test_wrong_path_kinds_for_data(tmp_path, monkeypatch, dataset, expected):
    monkeypatch.setenv(ALLOW_ENV, "/dev")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photo.png").write_bytes(b"png")
    plan_and_validate(write(tmp_path, GOOD.replace("{synthetic: 4}", dataset)), expected)


@pytest.mark.parametrize("download,expected", [
    ("{urls: [https://example.com/m.onnx], filename: ../m.onnx}", "filename '../m.onnx' must be a plain file name"),
    ("{urls: [https://example.com/m.onnx], filename: /tmp/m.onnx}", "must be a plain file name"),
    ("{urls: [https://example.com/m.onnx], filename: ..}", "must be a plain file name"),
    ("{urls: [https://example.com/a/%2e%2e], format: onnx}", "the first URL's file name"),
    ("{urls: [https://example.com/m.zip], member: ../../etc/m.onnx}", "member '../../etc/m.onnx'"),
    ("{urls: [https://example.com/m.zip], member: /etc/m.onnx}", "member '/etc/m.onnx'"),
    ("{urls: [https://example.com/m.zip], member: 'C:/m.onnx'}", "member 'C:/m.onnx'"),
    ("{urls: ['ftp://example.com/m.onnx']}", "use an http(s):// or file:// URL"),
    ("{urls: ['']}", "use an http(s):// or file:// URL"),
])
def test_traversal_in_downloads_is_refused_by_plan_and_validate(tmp_path, download, expected):
    text = with_source(f"  download: {download}".replace(", format: onnx}", "}\n  format: onnx"))
    plan_and_validate(write(tmp_path, text), "source.download", expected)


@pytest.mark.parametrize("member", ["../x.onnx", "/x.onnx", "pkg/../../x.onnx", "pkg/"])
def test_traversal_in_pip_members_is_refused(tmp_path, member):
    text = with_source(f"  pip: {{package: six, version: 1.16.0, member: '{member}'}}\n  format: onnx")
    plan_and_validate(write(tmp_path, text), "source.pip.member")


def test_bad_pip_names_are_refused_at_load_time(tmp_path):
    text = with_source("  pip: {package: 'six; rm -rf /', version: 1.16.0, member: six.py}\n  format: onnx")
    plan_and_validate(write(tmp_path, text), "source.pip.package")


# --- files outside the recipe's folder ---------------------------------------------------


@pytest.fixture
def outside(tmp_path) -> Path:
    """A recipe folder (tmp_path/recipe) and, beside it, a folder of files it must not reach."""
    folder = tmp_path / "secrets"
    (folder / "photos").mkdir(parents=True)
    for name in ("model.onnx", "id_rsa", "photo.png", "samples.npy", "labels.txt", "photos/a.png"):
        (folder / name).write_bytes(b"secret")
    (tmp_path / "recipe").mkdir()
    return folder


@pytest.mark.parametrize("old,new,field", [
    (KERAS, "  file: ../secrets/model.onnx", "source.file"),
    (KERAS, "  file: ../secrets/id_rsa\n  format: onnx", "source.file"),
    (KERAS, "  download: {urls: ['file://{secrets}/id_rsa'], filename: m.onnx}", "source.download.urls"),
    (KERAS, "  download: {urls: ['{secrets}/id_rsa'], filename: m.onnx}", "source.download.urls"),
    ("{synthetic: 4}", "{files: [{file: ../secrets/photo.png}]}", "calibration.files[0].file"),
    ("{synthetic: 4}", "{files: [{file: '{secrets}/photo.png'}]}", "calibration.files[0].file"),
    ("{synthetic: 4}", "{npy: ../secrets/samples.npy}", "calibration.npy"),
    ("{synthetic: 4}", "{folder: ../secrets/photos}", "calibration.folder"),
    ("{synthetic: 4}", "{folder: ., labels: ../secrets/labels.txt}", "calibration.labels"),
    ("calibration: {synthetic: 4}", "labels: {file: ../secrets/labels.txt}", "labels.file"),
    (KERAS, "  keras: {application: MobileNetV2, weights: {file: ../secrets/id_rsa}}", "source.keras.weights.file"),
], ids=["file", "file-as-onnx", "file-url", "mirror-path", "data-file", "data-absolute", "npy", "folder", "labels",
        "class-names", "keras-weights"])
def test_a_recipe_reads_no_file_outside_its_folder(outside, old, new, field):
    path = write(outside.parent / "recipe", GOOD.replace(old, new.replace("{secrets}", str(outside))))
    plan_and_validate(path, field, "is outside the recipe's folder", "EDGE_BUILDER_ALLOW_PATHS")


def test_a_link_in_the_recipe_folder_to_a_file_outside_is_refused(outside):
    folder = outside.parent / "recipe"
    (folder / "model.onnx").symlink_to(outside / "model.onnx")
    plan_and_validate(write(folder, with_source("  file: model.onnx")), "source.file", "is outside the recipe's folder")


def test_the_user_allows_other_folders(outside, monkeypatch):
    path = write(outside.parent / "recipe", GOOD.replace("{synthetic: 4}", f"{{files: [{{file: {outside}/photo.png}}]}}"))
    monkeypatch.setenv(ALLOW_ENV, f"/nonexistent{os.pathsep}{outside}")
    assert invoke("validate", path).exit_code == 0


def test_a_link_in_a_data_folder_to_a_file_outside_is_refused_before_anything_runs(outside, tmp_path):
    folder = outside.parent / "recipe"
    (folder / "photos").mkdir()
    (folder / "photos" / "leak.png").symlink_to(outside / "photo.png")
    path = write(folder, GOOD.replace("{synthetic: 4}", "{folder: photos}"))
    result = invoke("run", path, "-t", "x86-tflite", "--runner", "local", "--out", tmp_path / "out")
    refused(result, "photos/leak.png: a link in", "to a file outside it", "EDGE_BUILDER_ALLOW_PATHS")
    assert not list((tmp_path / "out").rglob("*leak.png"))


# --- models that are not what their name says ----------------------------------------------


def tiny_tflite() -> bytes:
    """A real .tflite flatbuffer (one ADD of int8 weights), written with LiteRT's own schema bindings."""
    import flatbuffers
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema

    model, code = schema.ModelT(), schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.ADD
    weights = schema.BufferT()
    weights.data = np.arange(16, dtype=np.int8).view(np.uint8)
    tensors = []
    for name, buffer in (("x", 1), ("w", 2), ("y", 1)):
        tensor = schema.TensorT()
        tensor.name, tensor.shape, tensor.type, tensor.buffer = name, [1, 16], schema.TensorType.INT8, buffer
        tensors.append(tensor)
    op, graph = schema.OperatorT(), schema.SubGraphT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1], [2]
    graph.tensors, graph.operators, graph.inputs, graph.outputs = tensors, [op], [0], [2]
    model.version, model.operatorCodes, model.subgraphs = 3, [code], [graph]
    model.buffers = [schema.BufferT(), schema.BufferT(), weights]
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def tiny_onnx() -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 96, 96, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 96, 96, 3])])
    return helper.make_model(graph).SerializeToString()


BAD_MODELS = {  # name -> what is in it
    "cut.tflite": lambda: tiny_tflite()[:200],
    "empty.tflite": lambda: b"",
    "page.tflite": lambda: b"<html><body>404 Not Found</body></html>",
    "cut.onnx": lambda: tiny_onnx()[:40],
    "page.onnx": lambda: b"<html><body>404 Not Found</body></html>",
    "cut.xml": lambda: b"<?xml version='1.0'?><net name='m'><layers><layer id='0' type='Parameter'",
}


def write_bad_models(folder: Path) -> None:
    for name, data in BAD_MODELS.items():
        (folder / name).write_bytes(data())
    (folder / "cut.bin").write_bytes(b"")  # the IR's weights, beside it


def test_the_good_models_are_read():
    from builder.stage import source_precision

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "m.tflite").write_bytes(tiny_tflite())
        (Path(folder) / "m.onnx").write_bytes(tiny_onnx())
        assert source_precision.inspect(Path(folder) / "m.tflite", "tflite").precision == "int8"
        assert source_precision.inspect(Path(folder) / "m.onnx", "onnx") is None


@pytest.mark.parametrize("name", BAD_MODELS)
def test_a_source_file_that_is_no_model_of_its_format_is_refused(tmp_path, name):
    write_bad_models(tmp_path)
    fmt = {"tflite": "tflite", "onnx": "onnx", "xml": "openvino"}[name.rsplit(".", 1)[1]]
    refused(invoke("plan", write(tmp_path, with_source(f"  file: {name}")), "-t", "x86-tflite"),
            f"recipe.yaml: source.file {tmp_path / name}: not a valid {fmt} model", "check that the file is whole")


def test_a_run_refuses_a_cut_off_model_before_any_step(tmp_path):
    write_bad_models(tmp_path)
    result = invoke("run", write(tmp_path, with_source("  file: cut.tflite")), "-t", "x86-tflite", "--runner", "local",
                    "--out", tmp_path / "out")
    refused(result, f"recipe.yaml: source {tmp_path / 'cut.tflite'}: not a valid tflite model")
    assert not list((tmp_path / "out").rglob("logs/*.log"))


@pytest.mark.parametrize("old,new,field", [
    ("name: tiny", "name: " + "a" * 100_000, "name"),
    ("name: tiny", "name: " + "a" * 65, "name"),
    ("[fp32, int8]", "{fp32: {}, " + "b" * 300 + ": {precision: int8}}", "variants"),
    (KERAS, "  download: {urls: [https://example.com/m.onnx], filename: " + "m" * 300 + ".onnx}", "source.download"),
    (KERAS, "  download: {urls: [https://example.com/" + "m" * 300 + ".onnx]}", "source.download"),
    (KERAS, "  pip: {package: six, version: 1.16.0, member: six/" + "m" * 300 + ".onnx}", "source.pip.member"),
], ids=["name-100k", "name-65", "variant", "filename", "url-name", "pip-member"])
def test_names_fit_a_file_system(tmp_path, old, new, field):
    out = in_a_process("plan", "--json", write(tmp_path, GOOD.replace(old, new)), "-t", "x86-tflite", "--out", tmp_path)
    assert field in out and "recipe.yaml" in out and "File name too long" not in out
    refused(invoke("validate", tmp_path / "recipe.yaml"), field)


def test_a_name_of_64_characters_is_fine(tmp_path):
    assert invoke("validate", write(tmp_path, GOOD.replace("name: tiny", "name: " + "a" * 64))).exit_code == 0


# --- the CLI -------------------------------------------------------------------------


@pytest.mark.parametrize("out", ["afile", "afile/below"])
def test_out_naming_a_file(tmp_path, out):
    (tmp_path / "afile").write_text("")
    recipe = write(tmp_path, GOOD)
    for args in (["run", recipe, "-t", "x86-tflite", "--runner", "local"], ["render", "-t", "x86-tflite"],
                 ["bundle", recipe, "-t", "x86-tflite"], ["verify", recipe, "-t", "x86-tflite"]):
        refused(invoke(*args, "--out", tmp_path / out), "--out", "is a regular file, not a directory")
    assert (tmp_path / "afile").read_text() == ""


def test_validate_on_an_empty_folder_is_not_all_valid(tmp_path):
    out = refused(invoke("validate", tmp_path), "no *.yaml files to validate")
    assert "all valid" not in out


# --- size caps -----------------------------------------------------------------------


def test_a_local_source_larger_than_its_cap(tmp_path):
    with open(tmp_path / "big.onnx", "wb") as f:
        f.truncate((1 << 20) + 1)
    plan_and_validate(write(tmp_path, with_source("  file: big.onnx\n  max_size_mb: 1")), "source", "max_size_mb (1)")
    assert invoke("validate", write(tmp_path, with_source("  file: big.onnx\n  max_size_mb: 2"))).exit_code == 0


def fetcher(tmp_path: Path, max_bytes: int) -> Fetcher:
    return Fetcher(tmp_path / "cache", retries=0, backoff=0.01, timeout=5.0, max_bytes=max_bytes)


def test_a_copied_mirror_file_larger_than_the_cap(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"x" * 1001)
    with pytest.raises(FetchError, match="max_size_mb") as caught:
        fetcher(tmp_path, 1000).fetch([str(tmp_path / "m.onnx")])
    assert "max_size_mb" in caught.value.hint
    assert fetcher(tmp_path, 1001).fetch([str(tmp_path / "m.onnx")]).size == 1001


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_a_special_file_as_a_mirror_is_refused_not_copied(tmp_path, special):
    if special == "fifo":
        special = tmp_path / "fifo"
        os.mkfifo(special)
    with time_limit(), pytest.raises(FetchError, match="not a regular file"):
        fetcher(tmp_path, 1 << 30).fetch([str(special)], filename="m.onnx")


def test_an_archive_member_larger_than_the_cap(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("m.onnx", b"\0" * 100_000)  # compresses to a few hundred bytes
    (tmp_path / "m.zip").write_bytes(buffer.getvalue())
    with pytest.raises(FetchError, match="m.onnx of m.zip: larger than"):
        fetcher(tmp_path, 10_000).fetch([str(tmp_path / "m.zip")], member="m.onnx")


@contextlib.contextmanager
def http_server(size: int, announce: bool):
    """Serves `size` bytes at any path, with or without a Content-Length."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            if announce:
                self.send_header("Content-Length", str(size))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client may stop reading early
                for _ in range(size // 1024):
                    self.wfile.write(b"x" * 1024)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/m.onnx"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "streamed"])
def test_a_download_larger_than_the_cap(tmp_path, monkeypatch, announce):
    for var in ("EDGE_BUILDER_ALLOWLIST", "DOMAIN_ALLOWLIST", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    with http_server(8 << 20, announce) as url, time_limit(), pytest.raises(FetchError) as caught:
        fetcher(tmp_path, 1 << 20).fetch([url])
    assert "larger than 1 MB" in caught.value.message and "max_size_mb" in caught.value.hint
    assert not list((tmp_path / "cache" / "partial").glob("*.part"))  # nothing kept to resume


# --- bundles and copies -------------------------------------------------------------

TINY = Path(__file__).parent / "recipes" / "tiny-mobilenet.yaml"


def bundle_folder(folder: Path, info: dict | None = None, plan_changes: dict | None = None) -> Path:
    """A bundle of the tiny recipe on rpi whose device stage has run, as `collect` reads it, altered as asked."""
    import json

    from builder.host.planner import make_plan
    from builder.workdir import PLAN, RECORDS

    plan = make_plan(catalog.load_recipe(TINY, "rpi"), catalog.load_target("rpi"), variants=["fp32"]).to_json()
    plan["recipe"] |= plan_changes or {}
    (folder / "run" / RECORDS).mkdir(parents=True)
    (folder / "run" / PLAN).write_text(json.dumps(plan))
    for step in plan["steps"]:
        (folder / "run" / RECORDS / f"{step['id']}.json").write_text("{}")
    (folder / "bundle.json").write_text(json.dumps(info or {"recipe": "tiny-mobilenet", "target": "rpi"}))
    return folder


def victim(tmp_path: Path) -> Path:
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    return folder


@pytest.mark.parametrize("info", [{"recipe": "..", "target": "victim"}, {"recipe": "../..", "target": "victim"}],
                         ids=["dot-dot", "up-two"])
def test_a_bundle_cannot_make_collect_replace_a_folder_outside_out(tmp_path, info):
    out = tmp_path / "out" / ("deeper" if info["recipe"] == "../.." else "")
    kept = victim(tmp_path)
    refused(invoke("collect", bundle_folder(tmp_path / "bundle", info), "--out", out),
            f"bundle.json names ('{info['recipe']}', 'victim')", "the bundle was altered")
    assert (kept / "precious.txt").read_text() == "keep me"


def test_a_bundle_whose_plan_names_a_path_is_refused(tmp_path):
    kept = victim(tmp_path)
    folder = bundle_folder(tmp_path / "bundle", {"recipe": "..", "target": "victim"}, {"name": ".."})
    refused(invoke("collect", folder, "--out", tmp_path / "out"), "not a bundle this version can read", "name")
    assert (kept / "precious.txt").read_text() == "keep me"


def test_a_bundle_with_a_link_out_is_refused(tmp_path):
    (tmp_path / "secret.txt").write_text("host file")
    folder = bundle_folder(tmp_path / "bundle")
    (folder / "run" / "a" / "b").mkdir(parents=True)
    (folder / "run" / "a" / "b" / "up").symlink_to("../..")
    (folder / "run" / "a" / "b" / "out").symlink_to("up/../../secret.txt")
    refused(invoke("collect", folder, "--out", tmp_path / "out"), "run/a/b/out links outside the bundle")
    assert not (tmp_path / "out" / "tiny-mobilenet").exists()


def test_collect_refuses_an_archive_where_tarfile_has_no_data_filter(tmp_path, monkeypatch):
    import tarfile

    folder = bundle_folder(tmp_path / "bundle")
    archive = tmp_path / "results.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="bundle")
    monkeypatch.delattr(tarfile, "data_filter")  # as on Python 3.11.3 and older
    refused(invoke("collect", archive, "--out", tmp_path / "out"), "needs Python 3.11.4 or later", "filter='data'")


# --- generated malformed recipes -----------------------------------------------------

SPECIAL_PATHS = ["/dev/zero", "/dev/null", "/", "../../../../etc/passwd", "/etc/passwd", "FIFO", "DIR",
                 "missing.onnx", "a/../../b.onnx", "..", "", "C:\\m.onnx", "%2e%2e", "x\\..\\y"]
SPECIAL_VALUES = [None, True, 0, -1, 2**63, 10**40, 1e308, "", " ", "é", "\u202e", "x" * 5000, "x" * 100_000,
                  [], {}, [{}], [[1, 2]], {"a": 1}, {1: "x"}, [None]]
RAW = ["&a [x, *a]", "*undefined", "!!int x", "!!python/object:os.system x", "!!binary '%'", "!!timestamp x",
       ".nan", "-.inf", "0x7fffffffffffffffffff", "1e999", "[" * 40 + "]" * 40, "{" * 40 + "}" * 40,
       "[" * 5000 + "]" * 5000, "? [a, b]\n  : c", "!!set {a, b}", "!!omap [a: 1]", "'\\x00'"]


def _bomb(levels: int, name: str) -> str:
    anchors = [f"&{name}0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    anchors += [f"&{name}{i} [" + ", ".join([f"*{name}{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ", ".join(anchors) + "]"


def _paths(node, prefix=()):
    """Every (path, value) below `node` in a parsed recipe."""
    yield prefix, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        yield from _paths(value, (*prefix, key))


def _set(data, path, value):
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


@st.composite
def malformed_recipes(draw) -> bytes:
    """A shipped recipe with a few mutations: dropped keys, wrong types, special values and paths, raw YAML."""
    path = draw(st.sampled_from(catalog.recipe_paths()))
    data = yaml.safe_load(path.read_text())
    raw: dict[str, str] = {}
    for _ in range(draw(st.integers(1, 3))):
        where, _value = draw(st.sampled_from(list(_paths(data))[1:]))
        kind = draw(st.sampled_from(["drop", "value", "path", "number", "raw", "bomb", "model"]))
        if kind == "model":  # a local source: a file that is no model of its format, or a special path
            data["source"] = {"file": draw(st.sampled_from([*BAD_MODELS, *SPECIAL_PATHS]))}
            if draw(st.booleans()):
                data["source"]["format"] = draw(st.sampled_from(["tflite", "onnx", "openvino", "saved_model"]))
        elif kind == "drop":
            parent = data
            for key in where[:-1]:
                parent = parent[key]
            del parent[where[-1]]
        elif kind in ("raw", "bomb"):  # raw YAML text where the value was, its anchors named apart
            marker = f"RAW{len(raw)}"
            snippet = draw(st.sampled_from(RAW)) if kind == "raw" else _bomb(draw(st.integers(2, 9)), f"{marker}b")
            raw[marker] = snippet.replace("&a ", f"&{marker} ").replace("*a]", f"*{marker}]")
            _set(data, where, marker)
        else:
            value = {"value": st.sampled_from(SPECIAL_VALUES), "path": st.sampled_from(SPECIAL_PATHS),
                     "number": st.one_of(st.integers(-(2**40), 2**40), st.floats(allow_nan=True))}[kind]
            _set(data, where, draw(value))
        if not isinstance(data, dict) or not data:
            break
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1 << 16)
    for marker, snippet in raw.items():
        text = text.replace(marker, snippet)
    if draw(st.integers(0, 7)) == 0:  # now and then a duplicate key at the top level
        text += draw(st.sampled_from(["variants: [fp32]\n", "name: again\n", "input: {shape: [1]}\n"]))
    encoding = draw(st.sampled_from(["utf-8"] * 15 + ["utf-8-sig", "utf-16", "utf-32", "latin-1", "broken"]))
    if encoding == "broken":
        at = draw(st.integers(0, len(text)))
        return text[:at].encode() + b"\xc3\x28" + text[at:].encode()
    return text.encode(encoding, errors="replace")


@pytest.fixture(scope="module")
def recipe_folder():
    """One folder for every example, with the special files its mutations name (relative to the recipe)."""
    with tempfile.TemporaryDirectory() as folder:
        os.mkfifo(Path(folder) / "FIFO")
        (Path(folder) / "DIR").mkdir()
        write_bad_models(Path(folder))
        assert invoke("plan", catalog.recipe_paths()[0], "-t", "x86-tflite").exit_code == 0  # imports, once
        yield Path(folder)


@settings(max_examples=300, deadline=timedelta(seconds=10), derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(recipe=malformed_recipes())
def test_malformed_recipes_are_refused_cleanly(recipe_folder, recipe):
    path = write(recipe_folder, recipe)
    for args in (["plan", "--json", path, "-t", "x86-tflite"], ["validate", path]):
        result = invoke(*args)
        assert result.exit_code in (0, 2), result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert "Traceback" not in result.output
        if result.exit_code == 2:
            assert path.name in result.output, result.output
