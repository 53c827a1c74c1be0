"""Tracking: every variant of a real run in an MLflow store (SQLite in a temp dir), a slower run failing
`compare --baseline last-good`, a dead server giving a warning and a replay file, `builder history`, and a run
that is not tracked never importing MLflow."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from builder.errors import ConfigError
from builder.host import tracking_uri
from builder.host.cli import cli
from builder.host.tracked_runs import REPLAY, runs_of

mlflow = pytest.importorskip("mlflow", reason="the `track` extra is not installed")
from mlflow.tracking import MlflowClient  # noqa: E402

TINY = Path(__file__).parent / "recipes" / "tiny-mobilenet.yaml"
TARGET = "x86-tflite"
EXPERIMENT = "edge-builder/tiny-mobilenet"
FILES = {"report.md", "report.html", "manifest.json", "results.json"}


def _recipe(folder: Path, *, slower: bool = False) -> Path:
    """The tiny test recipe (fp32, int8); `slower`: the same recipe with a wider network on larger images, timed
    on one thread (some 30 times the work: beyond the noise of a machine that others load too)."""
    data = yaml.safe_load(TINY.read_text())
    data["variants"] = {"fp32": {}, "int8": {}}
    data["benchmark"] = {"threads": 2, "warmup": 3, "runs": 100}
    if slower:
        data["source"]["keras"]["alpha"] = 1.0
        data["input"]["shape"] = [1, 224, 224, 3]
        data["benchmark"]["threads"] = 1
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny-mobilenet.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _env(root: Path) -> dict[str, str]:
    """The step cache and the user's cache (where the local store would be) under `root`; no store named."""
    env = {k: v for k, v in os.environ.items() if k != tracking_uri.ENV}
    return env | {"EDGE_BUILDER_STEP_CACHE": str(root / "cache" / "steps"), "EDGE_BUILDER_CACHE": str(root / "cache")}


def _invoke(root: Path, *args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], env=_env(root) | {tracking_uri.ENV: None})


def _run(root: Path, recipe: Path, out: Path, *track: str):
    return _invoke(root, "run", recipe, "-t", TARGET, "--runner", "local", "--out", out, *track)


def _runs(store: str) -> list:
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """One real run (local runner) tracked in an SQLite store: (root, store, its run folder)."""
    root = tmp_path_factory.mktemp("tracked")
    store = f"sqlite:///{root / 'store' / 'mlflow.db'}"
    result = _run(root, _recipe(root / "recipe"), root / "out", "--track", store)
    assert result.exit_code == 0, result.output
    assert f"tracked 2 variant run(s) in {store}" in result.output
    return root, store, root / "out" / "tiny-mobilenet" / TARGET


@pytest.fixture(scope="module")
def slower(first):
    """The same recipe run later with a wider network on one thread, into the same store."""
    root, store, _ = first
    result = _run(root, _recipe(root / "slower", slower=True), root / "out-slower", "--track", store)
    assert result.exit_code == 0, result.output
    return root / "out-slower" / "tiny-mobilenet" / TARGET


def test_a_tracked_run_logs_every_variant_with_its_params_metrics_tags_and_files(first, tmp_path):
    _, store, workdir = first
    results = {v["name"]: v for v in json.loads((workdir / "results.json").read_text())["variants"]}
    manifest = json.loads((workdir / "manifest.json").read_text())
    runs = {r.info.run_name: r for r in _runs(store)}
    assert set(runs) == {f"{TARGET}/fp32", f"{TARGET}/int8"}
    client = MlflowClient(tracking_uri=store)
    for name, variant in results.items():
        run = runs[f"{TARGET}/{name}"]
        params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
        assert run.info.status == "FINISHED"
        assert {k: params[k] for k in ("recipe", "target", "variant", "device", "precision", "runner")} == {
            "recipe": "tiny-mobilenet", "target": TARGET, "variant": name, "device": "host",
            "precision": variant["precision"], "runner": "local"}
        assert params["recipe_sha256"] == manifest["recipe"]["sha256"]
        assert params["versions.toolchain.tensorflow"] == manifest["tool_versions"]["toolchain"]["packages"]["tensorflow"]
        assert params["threads"] == "2"
        bench, validation = variant["benchmark"], variant["validation"]
        for figure in ("p50_ms", "p90_ms", "p99_ms", "throughput_fps", "size_bytes"):
            assert metrics[figure] == pytest.approx(bench[figure]), figure
        assert metrics["top1_agreement"] == pytest.approx(validation["top1_agreement"])
        for gate in validation["gates"]:
            assert metrics[f"gate.{gate['gate']}"] == {"pass": 1.0, "fail": 0.0, "undecided": 0.5}[gate["outcome"]]
        assert {k: tags[k] for k in ("status", "cached", "emulated")} == {
            "status": variant["status"], "cached": "false", "emulated": "false"}
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == FILES
        logged = client.download_artifacts(run.info.run_id, "results.json", str(tmp_path / name))
        assert Path(logged).read_bytes() == (workdir / "results.json").read_bytes()
    assert any(gate for v in results.values() for gate in v["validation"]["gates"]), "no gate was checked"


def test_a_slower_run_fails_compare_against_the_last_good_run_in_the_store(first, slower):
    root, store, workdir = first
    result = _invoke(root, "compare", "--baseline", "last-good", slower, "--fail-on-regression", "10", "--track", store)
    assert result.exit_code == 1, result.output
    assert "2 regression(s) beyond 10%" in result.output
    for variant in ("fp32", "int8"):
        assert f"tiny-mobilenet/{TARGET}/{variant}: p50_ms +" in result.output
    # the first run has no earlier run to be compared with: the later, slower one is not its baseline
    earlier = _invoke(root, "compare", "--baseline", "last-good", workdir, "--fail-on-regression", "10", "--track", store)
    assert earlier.exit_code == 0, earlier.output
    assert "no passing run on host in the tracking store" in earlier.output
    assert _invoke(root, "compare", "--baseline", "last-good", workdir, slower).exit_code == 2  # NEW alone


def test_history_prints_each_figures_trend_and_writes_a_page_of_plots(first, slower, tmp_path):
    root, store, workdir = first
    page = tmp_path / "history.html"
    result = _invoke(root, "history", "tiny-mobilenet", "-t", TARGET, "--track", store, "--html", page)
    assert result.exit_code == 0, result.output
    assert "fp32: 2 run(s)" in result.output and "int8: 2 run(s)" in result.output
    p50 = [json.loads((w / "results.json").read_text())["variants"][0]["benchmark"]["p50_ms"] for w in (workdir, slower)]
    lines = result.output.splitlines()
    line = next(line for line in lines[lines.index(next(x for x in lines if "fp32: 2 run(s)" in x)):] if "p50_ms" in line)
    assert f"{p50[0]:.4g}" in line and f"{p50[1]:.4g}" in line and f"{(p50[1] - p50[0]) / p50[0] * 100:+.1f}%" in line
    html = page.read_text()
    assert html.count("<svg") >= 5 and "p50_ms per run" in html and "top1_agreement per run" in html
    missing = _invoke(root, "history", "no-such-recipe", "-t", TARGET, "--track", store)
    assert missing.exit_code == 2 and "no tracked run of no-such-recipe" in missing.output


def test_a_dead_server_warns_exits_0_and_leaves_a_replay_file_that_track_replay_logs(first, tmp_path):
    root, _, _ = first
    out = tmp_path / "out"
    dead = f"http://127.0.0.1:{_closed_port()}"
    result = _run(root, _recipe(root / "recipe"), out, "--track", dead)  # every step from the step cache
    assert result.exit_code == 0, result.output
    assert "warning: not tracked: tracking store " + dead in result.output
    replay = out / "tiny-mobilenet" / TARGET / REPLAY
    assert replay.is_file() and json.loads(replay.read_text())["store"] == dead

    live = f"sqlite:///{tmp_path / 'live' / 'mlflow.db'}"
    replayed = _invoke(root, "track", "replay", replay.parent, "--track", live)
    assert replayed.exit_code == 0, replayed.output
    assert "2 variant run(s) logged in " + live in replayed.output and not replay.exists()
    runs = _runs(live)
    assert sorted(r.info.run_name for r in runs) == [f"{TARGET}/fp32", f"{TARGET}/int8"]
    assert all(r.data.tags["cached"] == "true" and r.data.metrics["p50_ms"] > 0 for r in runs)
    client = MlflowClient(tracking_uri=live)
    assert all({a.path for a in client.list_artifacts(r.info.run_id)} == FILES for r in runs)
    again = _invoke(root, "track", "replay", replay.parent, "--track", live)
    assert again.exit_code == 2 and f"no {REPLAY} here" in again.output


def test_mlflow_missing_when_asked_is_a_warning_and_a_replay_file(first, tmp_path, monkeypatch):
    from builder.host.track_builds import log_builds

    root, _, workdir = first
    folder = tmp_path / "run"
    for name in (*FILES, "results.csv"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes((workdir / name).read_bytes())
    for name in [m for m in sys.modules if m.split(".")[0] == "mlflow"]:  # as where the `track` extra is not installed
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "builder.host.tracking", raising=False)
    warned: list[str] = []
    log_builds([folder], f"sqlite:///{tmp_path / 'db'}", echo=warned.append, warn=warned.append)
    assert len(warned) == 1 and "tracking needs MLflow" in warned[0] and "edge-builder[track]" in warned[0]
    assert len(json.loads((folder / REPLAY).read_text())["runs"]) == 2


def test_an_untracked_run_never_imports_mlflow_and_a_project_setting_tracks_by_default(first, tmp_path):
    root, _, _ = first
    recipe = _recipe(root / "recipe")
    script = textwrap.dedent(f"""
        import json, sys
        from builder.host.cli import cli
        try:
            cli.main(["run", {str(recipe)!r}, "-t", "{TARGET}", "--runner", "local", "--out", "out"],
                     standalone_mode=False)
        finally:
            print("MLFLOW", json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "mlflow")))
    """)

    def run_in(folder: Path) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(root),
                              cwd=folder, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    assert "MLFLOW []" in run_in(tmp_path / "plain")
    project = tmp_path / "project"
    store = f"sqlite:///{tmp_path / 'project-store' / 'mlflow.db'}"
    (project / "sub").mkdir(parents=True)
    (project / "edge-builder.yaml").write_text(f"track: {store}\n")
    output = run_in(project / "sub")  # the nearest edge-builder.yaml above the current folder applies
    assert "MLFLOW []" not in output and f"tracked 2 variant run(s) in {store}" in output
    assert len(_runs(store)) == 2


def test_a_docker_runs_images_and_a_fleet_devices_name_are_params(first, tmp_path):
    _, _, workdir = first
    folder = tmp_path / "run"
    folder.mkdir()
    manifest = json.loads((workdir / "manifest.json").read_text())
    manifest["images"] = {"toolchain": {"tag": "edge-builder/toolchain-amd64:1234", "engine": "unix:///x"},
                          "device": {"tag": "edge-builder/litert-arm64:5678", "engine": "ssh://pi@pi5-a"}}
    results = json.loads((workdir / "results.json").read_text())
    for v in results["variants"]:
        v["benchmark"]["device"]["device"] = "pi5-a"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "results.json").write_text(json.dumps(results))
    runs = runs_of(folder)
    assert [r.params["device"] for r in runs] == ["pi5-a", "pi5-a"]
    assert runs[0].params["image.toolchain"] == "edge-builder/toolchain-amd64:1234"
    assert runs[0].params["image.device"] == "edge-builder/litert-arm64:5678"
    assert runs[0].artifacts == ["manifest.json", "results.json"]  # the files the folder has


def test_where_a_run_is_tracked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(tracking_uri.ENV, raising=False)
    monkeypatch.setenv("EDGE_BUILDER_CACHE", str(tmp_path / "cache"))
    local = f"sqlite:///{tmp_path / 'cache' / 'tracking' / 'mlflow.db'}"
    assert tracking_uri.for_run(None) is None and tracking_uri.for_reading(None) == local
    assert tracking_uri.for_run("") == local  # --track alone
    assert tracking_uri.for_run("http://mlflow:5000") == "http://mlflow:5000"
    monkeypatch.setenv(tracking_uri.ENV, "http://team:5000")
    assert tracking_uri.for_run(None) == tracking_uri.for_run("") == "http://team:5000"
    monkeypatch.delenv(tracking_uri.ENV)
    (tmp_path / "edge-builder.yaml").write_text("track: true\n")
    assert tracking_uri.for_run(None) == local
    (tmp_path / "edge-builder.yaml").write_text("# the team's\ntrak: true\n")
    with pytest.raises(ConfigError, match=r"edge-builder.yaml:2: trak: .*remove it or check its spelling"):
        tracking_uri.for_run(None)
    (tmp_path / "edge-builder.yaml").write_text("track: mlflow.corp\n")
    with pytest.raises(ConfigError, match="edge-builder.yaml: track: 'mlflow.corp' is not a tracking URI"):
        tracking_uri.for_run(None)
    bad = CliRunner().invoke(cli, ["run", "recipes/quickstart.yaml", "-t", TARGET, "--track", "nowhere"])
    assert bad.exit_code == 2 and "--track: 'nowhere' is not a tracking URI" in bad.output


def test_only_the_tracking_store_imports_mlflow():
    package = Path(__file__).resolve().parent.parent / "builder"
    importers = sorted(str(p.relative_to(package)) for p in package.rglob("*.py")
                       if any(line.strip().startswith(("import mlflow", "from mlflow")) for line in p.read_text().splitlines()))
    assert importers == ["host/tracking.py"]
