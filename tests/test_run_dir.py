"""A run's folder: the last good run stays until a new one has its report; one run per folder at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import kill_after_steps

from builder.errors import ConfigError
from builder.host import run_dir
from builder.host.cli import cli
from builder.host.step_cache import StepCache

HERE = Path(__file__).parent
TINY = HERE / "recipes" / "tiny-mobilenet.yaml"


def builder_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "builder.host.cli", *args]


def test_a_commit_swaps_the_new_folder_in_and_a_failure_before_it_keeps_the_old(tmp_path):
    final = tmp_path / "r" / "t"
    final.mkdir(parents=True)
    (final / "results.json").write_text("good")
    with pytest.raises(ConfigError), run_dir.claim(final) as folder:
        (folder.staging / "results.json").write_text("half")
        raise ConfigError("the run failed before its report")
    assert (final / "results.json").read_text() == "good"
    with run_dir.claim(final) as folder:
        (folder.staging / "results.json").write_text("new")
        folder.commit()
    assert (final / "results.json").read_text() == "new"
    assert [p.name for p in final.parent.iterdir() if p.name.startswith(".t.") and p.suffix != ".lock"] == []


def test_an_old_folder_a_killed_swap_moved_aside_is_put_back(tmp_path):
    final = tmp_path / "r" / "t"
    aside = tmp_path / "r" / ".t.old-1234abcd"
    aside.mkdir(parents=True)
    (aside / "results.json").write_text("good")
    (tmp_path / "r" / ".t.run-0000ffff").mkdir()  # a killed run's staging folder
    with run_dir.claim(final):
        assert (final / "results.json").read_text() == "good"
        assert not (tmp_path / "r" / ".t.run-0000ffff").exists()


def test_a_folder_in_use_by_another_process_is_refused_naming_it(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from builder.host import run_dir
        with run_dir.claim(Path({str(out / "tiny-mobilenet" / "x86-tflite")!r})):
            print("holding", flush=True)
            time.sleep(120)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        result = CliRunner().invoke(cli, ["run", str(TINY), "-t", "x86-tflite", "--runner", "local",
                                          "--out", str(out), "--variant", "fp32"])
        assert result.exit_code == 2, result.output
        assert "in use by another run" in result.output and f"pid {holder.pid}" in result.output
        assert "Traceback" not in result.output
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("how", ["recipe twice", "target twice", "same name"])
def test_two_runs_of_one_command_never_share_a_folder(tmp_path, how):
    twin = tmp_path / "twin.yaml"
    twin.write_text(TINY.read_text())  # another file, the same `name:`
    args = {"recipe twice": [str(TINY), str(TINY), "-t", "x86-tflite"],
            "target twice": [str(TINY), "-t", "x86-tflite", "-t", "x86-tflite"],
            "same name": [str(TINY), str(twin), "-t", "x86-tflite"]}[how]
    result = CliRunner().invoke(cli, ["run", *args, "--runner", "local", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "tiny-mobilenet" in result.output and "x86-tflite" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # refused before anything ran


@pytest.fixture(scope="module")
def killed_rerun(tmp_path_factory):
    """A good run, then a rerun with its own, empty step cache killed (-9) after two of its steps finished."""
    out = tmp_path_factory.mktemp("out")
    env = {**os.environ, "COLUMNS": "300", "EDGE_BUILDER_STEP_CACHE": str(tmp_path_factory.mktemp("cache-1"))}
    args = builder_command("run", str(TINY), "-t", "x86-tflite", "--runner", "local", "--out", str(out),
                           "--variant", "fp32", "--variant", "dynamic")
    subprocess.run(args, check=True, capture_output=True, env=env, timeout=900)
    workdir = out / "tiny-mobilenet" / "x86-tflite"
    good = {name: (workdir / name).read_bytes() for name in ("results.json", "report.md", "manifest.json")}
    env["EDGE_BUILDER_STEP_CACHE"] = cache = str(tmp_path_factory.mktemp("cache-2"))
    finished = kill_after_steps(args, env)
    assert len(finished) == 2
    return out, workdir, good, finished, Path(cache), env, args


def test_a_killed_rerun_leaves_the_last_good_run_as_it_was(killed_rerun):
    out, workdir, good, *_ = killed_rerun
    assert {name: (workdir / name).read_bytes() for name in good} == good
    leftovers = [p.name for p in workdir.parent.iterdir() if p.name.startswith(".x86-tflite.run-")]
    assert len(leftovers) == 1  # the killed run's own folder, hidden; nothing reads it


def test_a_killed_stage_keeps_the_steps_it_finished_in_the_step_cache(killed_rerun):
    out, workdir, good, finished, cache, env, args = killed_rerun
    kept = {e["key"] for e in StepCache(cache).entries()}
    assert len(kept) >= len(finished)
    rerun = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr
    for step in finished:
        assert f"cached: {step}" in rerun.stdout
    assert not [p for p in workdir.parent.iterdir() if p.name.startswith(".x86-tflite.run-")]  # cleared
    assert json.loads((workdir / "results.json").read_text())["variants"][0]["status"] == "ok"
    assert time.time() - (workdir / "report.md").stat().st_mtime < 900  # the new run is in place
