"""`builder import`: seed 000's mirrors TSV -> recipes that run, served by a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.backends.litert.host import input_spec
from builder.errors import ConfigError
from builder.host.catalog import load_recipe
from builder.host.cli import cli
from builder.host.matrix import write_verification
from builder.host.run import Outcome
from builder.records import VariantResult

HEADER = "# family\tmodel\tfilename\tsha256\turl1\turl2\turl3\n"


class Mirror:
    """An HTTP server on 127.0.0.1 serving `files` by path (404 for anything else); it records each path asked."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.asked = files, []
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                mirror.asked.append(self.path)
                body = mirror.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def mirror():
    server = Mirror({})
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _own_cache_no_proxy(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_BUILDER_CACHE", str(tmp_path / "cache"))
    for var in ("EDGE_BUILDER_ALLOWLIST", "DOMAIN_ALLOWLIST", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(var, raising=False)


def _import(tmp_path: Path, rows: str, *args: str):
    tsv = tmp_path / "mirrors.tsv"
    tsv.write_text(HEADER + rows)
    return CliRunner().invoke(cli, ["import", str(tsv), "--out-dir", str(tmp_path / "imported"), *args])


SHA = "ab" * 32


@pytest.mark.parametrize(("row", "problem", "fix"), [
    ("detection face face.tflite  http://x/face.tflite", "1 column(s) and no URL", "tabs"),
    ("detection\tface\tface.tflite\t" + SHA, "4 column(s) and no URL", "url1..urlN"),
    ("detection\t\tface.tflite\t\thttp://x/f.tflite", "the model column is empty", "fill it in"),
    ("detection\tface\tface.tflite\tabc123\thttp://x/f.tflite", "sha256", "64 hex digits"),
    ("detection\tface\tface.onnx\t\thttp://x/f.onnx", "not a .tflite file", "by hand"),
    ("detection\tface\tface.tflite\t\thttp://x/m.zip", "every mirror of face.tflite is an archive", "member"),
    ("detection\tface\tface.tflite\t\tftp://x/f.tflite", "urls", "http(s)://"),
    ("detection\tfa ce\tface.tflite\t\thttp://x/f.tflite", "cannot name a recipe", "letters, digits"),
])
def test_bad_rows_are_refused_with_file_line_and_what_to_fix(tmp_path, row, problem, fix):
    result = _import(tmp_path, "# a comment\n\n" + row + "\n")
    assert result.exit_code == 2, result.output
    assert "mirrors.tsv:4: " in result.output and problem in result.output and fix in result.output
    assert "Traceback" not in result.output and not (tmp_path / "imported").exists()


def test_a_model_twice_is_refused_naming_both_lines(tmp_path):
    row = "detection\tface\tface.tflite\t\thttp://x/f.tflite\n"
    result = _import(tmp_path, row + row)
    assert result.exit_code == 2 and "mirrors.tsv:3: model 'face' is already on" in result.output
    assert "mirrors.tsv:2" in result.output


def test_quantized_inputs_get_the_mean_and_std_that_map_pixels_onto_their_integers(mediapipe_models):
    from ai_edge_litert import schema_py_generated as schema
    from flatbuffers import Builder

    face = mediapipe_models["face_detection_short_range"].read_bytes()

    def with_input(dtype: int, scale: float, zero_point: int) -> bytes:
        fb = schema.ModelT.InitFromPackedBuf(face, 0)
        tensor = fb.subgraphs[0].tensors[fb.subgraphs[0].inputs[0]]
        tensor.type = dtype
        tensor.quantization = schema.QuantizationParametersT()
        tensor.quantization.scale, tensor.quantization.zeroPoint = [scale], [zero_point]
        builder = Builder(1024)
        builder.Finish(fb.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    uint8 = input_spec(with_input(schema.TensorType.UINT8, 1 / 128, 128)).fields
    assert (uint8["mean"], uint8["std"], uint8["shape"]) == (128, 128, [1, 128, 128, 3])
    int8 = input_spec(with_input(schema.TensorType.INT8, 1 / 255, -128)).fields
    assert (int8["mean"], int8["std"]) == (0, 255)
    with pytest.raises(ValueError, match="not a .tflite model"):
        input_spec(b"<html>404</html>")
    with pytest.raises(ValueError, match="damaged"):
        input_spec(face[:4096])


def test_a_model_no_mirror_serves_gets_a_default_input_spec_that_says_so(tmp_path, mirror):
    result = _import(tmp_path, f"classification\tgone\tgone.tflite\t\t{mirror.url('/gone.tflite')}\n")
    assert result.exit_code == 0, result.output
    assert "input spec of gone not read" in result.output and "has no sha256" in result.output
    text = (tmp_path / "imported" / "gone.yaml").read_text()
    assert "NOT read from the model" in text and "sha256: null  # empty in the TSV" in text
    recipe = load_recipe(tmp_path / "imported" / "gone.yaml")
    assert recipe.task == "classification" and recipe.source.download.sha256 is None
    assert recipe.input.shape == [1, 224, 224, 3] and recipe.calibration.synthetic


def test_a_calibration_folder_replaces_the_synthetic_samples(tmp_path, mirror, monkeypatch):
    (tmp_path / "photos").mkdir()
    result = _import(tmp_path, f"detection\tgone\tgone.tflite\t\t{mirror.url('/gone.tflite')}\n",
                     "--calibration", str(tmp_path / "photos"))
    assert result.exit_code == 0, result.output
    assert f"run them with EDGE_BUILDER_ALLOW_PATHS={(tmp_path / 'photos').resolve()}" in result.output
    with pytest.raises(ConfigError, match="is outside the recipe's folder"):  # until the user allows it
        load_recipe(tmp_path / "imported" / "gone.yaml")
    monkeypatch.setenv("EDGE_BUILDER_ALLOW_PATHS", str(tmp_path / "photos"))
    recipe = load_recipe(tmp_path / "imported" / "gone.yaml")
    assert recipe.calibration.folder == (tmp_path / "photos").resolve() and recipe.calibration.synthetic is None


def test_the_verification_csv_says_why_an_artifact_is_not_ok(tmp_path):
    gate = {"gate": "min_cosine", "metric": "cosine", "threshold": 0.9, "value": 0.8512, "outcome": "fail", "passed": False}

    def variant(name: str, status: str, mean_ms: float | None, **more) -> dict:
        timed = {"benchmark": {"runtime": "litert", "p50_ms": mean_ms, "mean_ms": mean_ms}} if mean_ms else {}
        return {"name": name, "artifact": f"m_{name}.tflite", "format": "tflite", "precision": name.split("-")[0],
                "io_dtype": "float32", "status": status, **timed, **more}

    results = [VariantResult.model_validate(v) for v in (
        variant("fp32", "ok", 1.23456),
        variant("int8", "gate-failed", 0.5, validation={"reference": "m_fp32.tflite", "samples": 50, "gates": [gate]}),
        variant("fp16", "gate-undecided", 0.9, validation={"reference": "m_fp32.tflite", "samples": 50,
                                                        "gates": [gate | {"value": 0.9, "outcome": "undecided"}]}),
        variant("dynamic", "failed", None, failure={"step": "03-convert.tflite-dynamic", "cause": "unsupported-op",
                                               "error": "ops A, B\nnot supported", "hint": None}),
    )]
    write_verification([Outcome("m", "x86-tflite", tmp_path / "m" / "x86-tflite", results),
                        Outcome("gone", "x86-tflite", tmp_path, error="no mirror", cause="network")], tmp_path)
    w = tmp_path / "m" / "x86-tflite"
    assert (tmp_path / "verify_tflite.csv").read_text().splitlines() == [
        "file,ok,avg_ms,notes",
        f"{w}/m_fp32.tflite,OK,1.235,",
        f"{w}/m_int8.tflite,FAIL,0.500,gate-failed: cosine = 0.8512 vs min_cosine 0.9",
        f"{w}/m_fp16.tflite,UNDECIDED,0.900,gate-undecided: cosine = 0.9 vs min_cosine 0.9",
        f"{w}/m_dynamic.tflite,FAIL,,failed: unsupported-op: ops A; B not supported",
        f"{tmp_path}/gone/x86-tflite,FAIL,,network: no mirror",
    ]


def test_each_format_gets_its_own_verification_csv_named_for_it(tmp_path):
    def variant(name: str, fmt: str, suffix: str) -> VariantResult:
        return VariantResult.model_validate({"name": name, "artifact": f"m_{name}{suffix}", "format": fmt,
                                             "precision": name, "io_dtype": "float32", "status": "ok",
                                             "benchmark": {"runtime": "r", "p50_ms": 2.0, "mean_ms": 2.0}})

    write_verification([Outcome("m", "x86-tflite", tmp_path / "m" / "x86-tflite", [variant("fp32", "tflite", ".tflite")]),
                        Outcome("m", "openvino", tmp_path / "m" / "openvino", [variant("int8", "openvino", ".xml")]),
                        Outcome("n", "openvino", tmp_path, error="no mirror", cause="network")], tmp_path)
    assert (tmp_path / "verify_tflite.csv").read_text().splitlines()[1:] == [
        f"{tmp_path}/m/x86-tflite/m_fp32.tflite,OK,2.000,"]
    assert (tmp_path / "verify_openvino.csv").read_text().splitlines()[1:] == [
        f"{tmp_path}/m/openvino/m_int8.xml,OK,2.000,", f"{tmp_path}/n/openvino,FAIL,,network: no mirror"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.slow
def test_imported_recipes_run_as_a_matrix_and_write_seed_000s_verification_csv(tmp_path, mirror, mediapipe_models,
                                                                                monkeypatch):
    face = mediapipe_models["face_detection_short_range"].read_bytes()
    mirror.files.update({"/m/face.tflite": face, "/n/blazeface.tflite": face})
    dead, good = mirror.url("/dead/face.tflite"), mirror.url("/m/face.tflite")
    rows = (f"# --- Detection ---\n"
            f"detection\tface\tface.tflite\t{_sha(face)}\t{dead}\t{good}\t\n"
            f"detection\tblazeface\tblazeface.tflite\t\t{mirror.url('/n/blazeface.tflite')}\t\n"
            f"detection\tface_pinned_wrong\tface.tflite\t{'0' * 64}\t{good}\n")
    result = _import(tmp_path, rows)
    assert result.exit_code == 0, result.output
    # the import reads each model in order, falling through the dead mirror; the wrong pin is never cached
    assert mirror.asked == ["/dead/face.tflite", "/m/face.tflite", "/n/blazeface.tflite", "/m/face.tflite"]
    assert "mirrors.tsv:4: blazeface has no sha256" in result.output
    assert "input spec of face_pinned_wrong not read (could not fetch face.tflite" in result.output
    assert "sha256 mismatch" in result.output
    recipes = sorted((tmp_path / "imported").glob("*.yaml"))
    face_recipe = load_recipe(tmp_path / "imported" / "face.yaml")
    assert face_recipe.source.download.urls == [dead, good] and face_recipe.source.download.sha256 == _sha(face)
    assert face_recipe.input.shape == [1, 128, 128, 3] and face_recipe.input.name == "input"
    unpinned = load_recipe(recipes[0])
    assert unpinned.source.download.sha256 is None and unpinned.input.shape == [1, 128, 128, 3]

    monkeypatch.setenv("EDGE_BUILDER_CACHE", str(tmp_path / "run-cache"))  # the runs fetch through the mirrors too
    mirror.asked.clear()
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", *map(str, recipes), "-t", "x86-tflite", "--runner", "local",
                                      "--variant", "fp32", "--variant", "int8", "--out", str(out)])
    assert result.exit_code == 1, result.output  # the wrong sha256
    # the runs fetch into their own cache; face and blazeface share bytes, so which of the two downloads
    # them depends on timing, but the wrong pin always asks its mirror again
    assert "/m/face.tflite" in mirror.asked and "/n/blazeface.tflite" in mirror.asked

    lines = (out / "verify_tflite.csv").read_text().splitlines()
    assert lines[0] == "file,ok,avg_ms,notes" and (out / "status.md").exists()
    rows = {Path(file).name: (ok, avg, notes) for file, ok, avg, notes in (line.split(",") for line in lines[1:])}
    for artifact in ("face_fp32.tflite", "face_int8.tflite", "blazeface_fp32.tflite", "blazeface_int8.tflite"):
        ok, avg, notes = rows[artifact]
        assert (ok, notes) == ("OK", "") and float(avg) > 0, rows[artifact]
    ok, avg, notes = rows["x86-tflite"]
    assert (ok, avg) == ("FAIL", "") and notes.startswith("checksum-mismatch: could not fetch face.tflite")
    assert str(out / "face" / "x86-tflite" / "face_int8.tflite") in (line.split(",")[0] for line in lines)
    manifest = (out / "blazeface" / "x86-tflite" / "manifest.json").read_text()
    assert f"no sha256 in the recipe, so its bytes were not verified; they are sha256 {_sha(face)}" in manifest
    assert "no sha256" not in (out / "face" / "x86-tflite" / "manifest.json").read_text()
