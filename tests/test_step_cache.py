"""The step cache: a rerun runs only what changed, never trusts a broken entry, and says why a step runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import kill_after_steps

from builder.host.cli import cli
from builder.host.run import run_recipe
from builder.host.runners.local import LocalRunner
from builder.host.step_cache import CachePolicy, StageIdentity, StepCache, key_parts
from builder.plan import StepCall

TINY = Path(__file__).parent / "recipes" / "tiny-mobilenet.yaml"
TARGET = "x86-tflite"
FRAMEWORKS = ("tensorflow", "keras", "onnx", "onnxruntime", "openvino", "nncf", "torch", "ai_edge_litert", "matplotlib")


def _recipe(folder: Path, **changes) -> Path:
    """The tiny test recipe with two variants (fp32, int8), changed as asked."""
    data = yaml.safe_load(TINY.read_text())
    data["variants"] = {"fp32": {}, "int8": {}}
    for key, value in changes.items():
        data[key] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny-mobilenet.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    """One cold run into a cache that each test copies (so tests do not share what they change)."""
    root = tmp_path_factory.mktemp("cold")
    recipe = _recipe(root / "recipe")
    with pytest.MonkeyPatch.context() as env:  # the report's figures are kept there too
        env.setenv("EDGE_BUILDER_STEP_CACHE", str(root / "cache" / "steps"))
        outcome = run_recipe(recipe, TARGET, LocalRunner(), out=root / "out",
                             cache=CachePolicy(root / "cache" / "steps"), echo=lambda line: None)
    assert [v.status for v in outcome.results] == ["ok", "ok"], outcome.results
    return root, outcome


def _rerun(cold, tmp_path: Path, recipe: Path | None = None, **policy) -> tuple[dict, dict, list[str]]:
    """Rerun with a copy of the cold cache: (manifest, records by step id, the lines it printed)."""
    root, _ = cold
    shutil.copytree(root / "cache", tmp_path / "cache", symlinks=True)
    lines: list[str] = []
    outcome = run_recipe(recipe or root / "recipe" / "tiny-mobilenet.yaml", TARGET, LocalRunner(), out=tmp_path / "out",
                         cache=CachePolicy(tmp_path / "cache" / "steps", **policy), echo=lines.append)
    work = outcome.workdir / "work"
    records = {p.stem: json.loads(p.read_text()) for p in (work / "records").glob("*.json")}
    return _manifest(outcome.workdir), records, lines


def _ran(records: dict) -> set[str]:
    return {rid for rid, r in records.items() if not r.get("cached")}


def _manifest(workdir: Path) -> dict:
    return json.loads((workdir / "manifest.json").read_text())


def test_a_rerun_with_nothing_changed_runs_no_step_loads_no_framework_and_writes_the_same_results(cold, tmp_path):
    root, outcome = cold
    shutil.copytree(root / "cache", tmp_path / "cache")
    script = textwrap.dedent(f"""
        import json, sys
        from builder.host.cli import cli
        try:
            cli.main(["run", {str(root / "recipe" / "tiny-mobilenet.yaml")!r}, "-t", "{TARGET}", "--runner", "local",
                      "--out", {str(tmp_path / "out")!r}], standalone_mode=False)
        finally:
            print("LOADED", json.dumps([m for m in {FRAMEWORKS!r} if m in sys.modules]))
    """)
    env = os.environ | {"EDGE_BUILDER_STEP_CACHE": str(tmp_path / "cache" / "steps")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "LOADED []" in proc.stdout, proc.stdout
    assert "toolchain stage: every step cached, nothing to run" in proc.stdout
    assert "device stage: every step cached, nothing to run" in proc.stdout
    workdir = tmp_path / "out" / "tiny-mobilenet" / TARGET
    stages = _manifest(workdir)["stages"]
    assert stages["toolchain"]["executed_steps"] == 0 and stages["device"]["executed_steps"] == 0
    before, after = _manifest(outcome.workdir), _manifest(workdir)
    assert [(a["path"], a["sha256"]) for a in after["artifacts"]] == [(a["path"], a["sha256"]) for a in before["artifacts"]]
    assert after["tool_versions"] == before["tool_versions"]
    results = json.loads((workdir / "results.json").read_text())["variants"]
    for old, new in zip(outcome.results, results):
        assert new["benchmark"]["p50_ms"] == old.benchmark.p50_ms and new["benchmark"]["cached"] is True
        assert new["validation"]["cached"] is True and new["validation"]["measured"]
    assert "(cached, ran " in (workdir / "report.md").read_text()
    assert sorted(p.name for p in (workdir / "logs").iterdir()) == sorted(p.name for p in (outcome.workdir / "logs").iterdir())


def test_changing_only_the_int8_variant_reruns_only_its_steps(cold, tmp_path):
    recipe = _recipe(tmp_path / "recipe", variants={"fp32": {}, "int8": {"io_dtype": "uint8"}})
    _, records, lines = _rerun(cold, tmp_path, recipe)
    ran = _ran(records)
    assert ran and all(records[r]["variant"] == "int8" for r in ran), ran
    assert {records[r]["kind"] for r in ran} >= {"benchmark", "validate"}
    assert any("runs:" in line and "changed: param" in line for line in lines), lines


def test_changing_the_benchmark_settings_reruns_only_the_benchmarks(cold, tmp_path):
    data = yaml.safe_load(TINY.read_text())
    recipe = _recipe(tmp_path / "recipe", benchmark=data["benchmark"] | {"runs": 12})
    _, records, _ = _rerun(cold, tmp_path, recipe)
    assert {records[r]["kind"] for r in _ran(records)} == {"benchmark"}
    assert len(_ran(records)) == 2


def test_a_measurement_cached_on_one_machine_is_not_served_on_another(cold, tmp_path, monkeypatch):
    """The same cache on a machine with another CPU (a shared or copied cache): only its measurements rerun."""
    from builder.host.runners import local
    from builder.stage import device_facts

    other = device_facts.machine_identity() | {"cpu_model": "Some Other CPU @ 1.0GHz", "cores": 64}
    monkeypatch.setattr(local, "machine_identity", lambda: other)
    _, records, lines = _rerun(cold, tmp_path)
    assert {records[r]["kind"] for r in _ran(records)} == {"benchmark", "validate"}
    assert all(records[r]["stage"] == "toolchain" for r in records if r not in _ran(records))
    assert any("runs:" in line and "changed: machine" in line for line in lines), lines


@pytest.mark.parametrize("package", ["pillow", "ai-edge-quantizer", "flatbuffers"])
def test_the_local_environment_key_covers_every_package_the_steps_import(package, monkeypatch):
    from importlib import metadata

    from builder.host.runners import local

    local.environment.cache_clear()
    before = local.environment()
    real = metadata.version
    monkeypatch.setattr(local.metadata, "version",
                        lambda name: "0.0.0-other" if name.lower() == package else real(name))
    local.environment.cache_clear()
    try:
        assert local.environment() != before
    finally:
        local.environment.cache_clear()


@pytest.mark.docker
@pytest.mark.slow
def test_a_killed_docker_run_keeps_the_steps_its_container_finished(docker_engine, base_image, tmp_path):
    """kill -9 of the whole run while its toolchain container works: each step it finished was copied out
    of the running container into the step cache as it finished, and the next run takes it from there."""
    import uuid

    import docker

    name = f"tiny-killed-{uuid.uuid4().hex[:8]}"  # its containers are told apart from everyone else's by it
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY.read_text().replace("name: tiny-mobilenet", f"name: {name}"))
    env = {**os.environ, "COLUMNS": "300", "EDGE_BUILDER_STEP_CACHE": str(tmp_path / "cache")}
    args = [sys.executable, "-m", "builder.host.cli", "run", str(recipe), "-t", TARGET, "--runner", "docker",
            "--variant", "fp32", "--out", str(tmp_path / "out")]
    try:
        finished = kill_after_steps(args, env)
    finally:
        sdk = docker.DockerClient(base_url=docker_engine.url)
        for container in sdk.containers.list(all=True, filters={"label": f"dev.edge-builder.recipe={name}"}):
            container.remove(force=True)  # what a killed run cannot remove itself
    assert len(finished) == 2
    kept = {entry["record"]["id"] for path in (tmp_path / "cache" / "entries").glob("*/*.json")
            if (entry := json.loads(path.read_text()))}
    assert set(finished) <= kept
    rerun = subprocess.run(args, capture_output=True, text=True, env=env, timeout=1500)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr
    for step in finished:
        assert f"cached: {step}" in rerun.stdout


def test_remeasure_reruns_the_measurements_and_no_cache_everything(cold, tmp_path):
    _, records, _ = _rerun(cold, tmp_path / "a", remeasure=True)
    assert {records[r]["kind"] for r in _ran(records)} == {"benchmark", "validate"}
    _, records, lines = _rerun(cold, tmp_path / "b", reuse=False)
    assert _ran(records) == set(records) and any("(--no-cache)" in line for line in lines)


def test_a_corrupted_entry_is_detected_and_rebuilt(cold, tmp_path):
    root, outcome = cold
    int8 = next(a for a in _manifest(outcome.workdir)["artifacts"] if a["variant"] == "int8")
    shutil.copytree(root / "cache", tmp_path / "cache")
    blob = tmp_path / "cache" / "steps" / "blobs" / int8["sha256"][:2] / int8["sha256"]
    blob.chmod(0o644)
    with open(blob, "r+b") as fh:  # one flipped byte, same size: only the sha256 can tell
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    lines: list[str] = []
    policy = CachePolicy(tmp_path / "cache" / "steps")
    second = run_recipe(root / "recipe" / "tiny-mobilenet.yaml", TARGET, LocalRunner(), out=tmp_path / "out",
                        cache=policy, echo=lines.append)
    assert any("dropped and rebuilt" in line and "sha256" in line for line in lines), lines
    rebuilt = next(a for a in _manifest(second.workdir)["artifacts"] if a["variant"] == "int8")
    assert rebuilt["sha256"] == int8["sha256"]  # the conversion is deterministic: the same file again
    third = run_recipe(root / "recipe" / "tiny-mobilenet.yaml", TARGET, LocalRunner(), out=tmp_path / "out",
                       cache=policy, echo=lines.append)
    stages = _manifest(third.workdir)["stages"]
    assert stages["toolchain"]["executed_steps"] == 0 and stages["device"]["executed_steps"] == 0


def test_an_entry_whose_record_no_longer_matches_its_model_runs_again(cold, tmp_path):
    root, _ = cold
    shutil.copytree(root / "cache", tmp_path / "cache")
    stale = next(p for p in (tmp_path / "cache" / "steps" / "entries").glob("*/*.json")
                 if json.loads(p.read_text())["record"]["kind"] == "benchmark")
    entry = json.loads(stale.read_text())
    entry["record"]["retired_field"] = 1  # as kept by a version whose record had a key this one's has not
    stale.write_text(json.dumps(entry))
    lines: list[str] = []
    outcome = run_recipe(root / "recipe" / "tiny-mobilenet.yaml", TARGET, LocalRunner(), out=tmp_path / "out",
                         cache=CachePolicy(tmp_path / "cache" / "steps"), echo=lines.append)
    step = entry["record"]["id"]
    assert any("warning: step cache: " in line and f"work/records/{step}.json" in line and "retired_field" in line
               and "it runs" in line for line in lines), lines  # the run's own folder, built beside outcome.workdir
    records = {p.stem: json.loads(p.read_text()) for p in (outcome.workdir / "work" / "records").glob("*.json")}
    assert _ran(records) == {step}
    assert [v.status for v in outcome.results] == ["ok", "ok"]


def test_plan_shows_what_is_cached_and_why_the_rest_runs(cold, tmp_path, monkeypatch):
    root, outcome = cold
    monkeypatch.setenv("EDGE_BUILDER_STEP_CACHE", str(root / "cache" / "steps"))
    args = ["plan", "-t", TARGET, "--runner", "local", "--out", str(root / "out"), "--json"]
    same = CliRunner().invoke(cli, [*args[:1], str(root / "recipe" / "tiny-mobilenet.yaml"), *args[1:]])
    assert same.exit_code == 0, same.output
    assert set(json.loads(same.output)["cache"].values()) == {"cached"}
    changed = _recipe(tmp_path, variants={"fp32": {}, "int8": {"io_dtype": "uint8"}})
    result = CliRunner().invoke(cli, [*args[:1], str(changed), *args[1:]])
    plan = json.loads(result.output)
    runs = {s["id"]: plan["cache"][s["id"]] for s in plan["steps"] if plan["cache"][s["id"]] != "cached"}
    assert runs and all(s["variant"] == "int8" for s in plan["steps"] if s["id"] in runs), runs
    assert any(why.startswith("runs: changed: param") for why in runs.values()), runs


# --- the cache alone: crashes and concurrent writers ------------------------------------------

def _call(out: str = "work/model.bin") -> StepCall:
    return StepCall(id="01-convert.x", kind="convert.x", stage="toolchain", outputs={"model": out})


def test_a_store_killed_midway_leaves_nothing_a_later_run_trusts(tmp_path):
    workdir = tmp_path / "work"
    (workdir / "work").mkdir(parents=True)
    with open(workdir / "work" / "model.bin", "wb") as fh:  # big enough to be caught mid-copy
        fh.truncate(300 << 20)
    script = textwrap.dedent(f"""
        from pathlib import Path
        from builder.host.step_cache import StepCache
        from builder.plan import StepCall
        call = StepCall(id="01-convert.x", kind="convert.x", stage="toolchain", outputs={{"model": "work/model.bin"}})
        print("storing", flush=True)
        StepCache(Path({str(tmp_path / "cache")!r})).store("k" * 64, {{}}, "scope", Path({str(workdir)!r}), call,
                                                         {{"status": "ok", "outputs": {{}}}})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "storing"
    deadline = time.monotonic() + 60
    while not list((tmp_path / "cache").glob("blobs/*/.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)  # while the blob is being written
    proc.wait()
    cache = StepCache(tmp_path / "cache")
    assert cache.lookup("k" * 64) is None
    assert list((tmp_path / "cache").glob("blobs/*/.*.tmp")), "killed before the copy: the test proved nothing"
    assert not list((tmp_path / "cache").glob("blobs/*/[0-9a-f]*")), "a half-written blob under its final name"
    assert cache.prune(older_than_s=0, grace_s=0)[0] == 0 and not list((tmp_path / "cache").glob("blobs/*/*"))


def test_runs_storing_the_same_step_at_once_leave_one_good_entry(tmp_path):
    workdir = tmp_path / "work"
    (workdir / "work" / "model").mkdir(parents=True)
    for i in range(20):
        (workdir / "work" / "model" / f"part{i}.bin").write_bytes(os.urandom(50_000))
    call = _call("work/model")
    identity = StageIdentity("local:test", {})
    parts = key_parts(call, {}, identity)
    record = {"status": "ok", "outputs": {"model": {"path": "work/model", "sha256": "x", "size": 1}}}

    def store(_):
        StepCache(tmp_path / "cache").store("k" * 64, parts, "scope", workdir, call, record)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(store, range(16)))
    cache = StepCache(tmp_path / "cache")
    entry = cache.lookup("k" * 64)
    assert entry is not None
    cache.place(entry, tmp_path / "run", call)
    for i in range(20):
        assert (tmp_path / "run" / "work" / "model" / f"part{i}.bin").read_bytes() == \
            (workdir / "work" / "model" / f"part{i}.bin").read_bytes()
    assert not [p for p in (tmp_path / "cache").rglob(".*tmp")], "temp files left behind"


def test_cache_command_shows_and_prunes(cold, tmp_path, monkeypatch):
    root, _ = cold
    shutil.copytree(root / "cache", tmp_path / "cache")
    monkeypatch.setenv("EDGE_BUILDER_STEP_CACHE", str(tmp_path / "cache" / "steps"))
    shown = CliRunner().invoke(cli, ["cache", "--json"])
    assert shown.exit_code == 0, shown.output
    kinds = {e["kind"] for e in json.loads(shown.output)}
    assert {"convert.tflite", "benchmark", "validate"} <= kinds
    assert CliRunner().invoke(cli, ["cache", "prune"]).exit_code == 2
    pruned = CliRunner().invoke(cli, ["cache", "prune", "--older-than", "0"])
    assert pruned.exit_code == 0 and "dropped" in pruned.output
    assert json.loads(CliRunner().invoke(cli, ["cache", "--json"]).output) == []


def test_an_output_that_links_out_of_the_work_dir_is_not_kept(tmp_path):
    """A container's work dir may come back with a link to a host file: the cache does not read through it."""
    (tmp_path / "secret.txt").write_text("host file")
    workdir = tmp_path / "run"
    (workdir / "work" / "out").mkdir(parents=True)
    (workdir / "work" / "out" / "model.bin").write_bytes(b"model")
    (workdir / "work" / "out" / "leak").symlink_to("../../../secret.txt")
    call = StepCall(id="01-convert.x", kind="convert.x", stage="toolchain", outputs={"model": "work/out"})
    warnings: list[str] = []
    cache = StepCache(tmp_path / "cache", warn=warnings.append)
    cache.store("k" * 64, {}, "scope", workdir, call, {"status": "ok", "outputs": {}})
    assert cache.lookup("k" * 64) is None
    assert warnings == ["step cache: 01-convert.x not kept: work/out/leak leads out of the work dir"]
    assert not list((tmp_path / "cache").glob("blobs/*/*"))
