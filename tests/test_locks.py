"""Locks resolve for the image's platform with the host's pip; wheelhouses download them once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from builder.errors import BuildError, ConfigError
from builder.host import locks

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def home(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "dockerfiles", tmp_path / "dockerfiles")
    monkeypatch.setenv("EDGE_BUILDER_HOME", str(tmp_path))
    return tmp_path


def test_platform_args_follow_the_lock_name():
    args = locks.platform_args("litert-arm64")
    assert "--platform=manylinux_2_17_aarch64" in args and "--only-binary=:all:" in args
    assert not any("x86_64" in a for a in args)
    with pytest.raises(ConfigError, match="-amd64"):
        locks.platform_args("litert")


def test_shipped_locks_pin_every_package_exactly():
    for name in locks.lock_names():
        lines = [line for line in locks.lock_file(name).read_text().splitlines()
                 if line and not line.startswith("#")]
        assert lines and all("==" in line for line in lines), name


@pytest.mark.slow
def test_lock_resolves_for_arm64_and_the_wheelhouse_is_cached(home, tmp_path):
    (home / "dockerfiles" / "locks" / "tiny-arm64.in").write_text("psutil==7.2.2\n")
    text = locks.write_lock("tiny-arm64").read_text()
    assert "psutil==7.2.2" in text.splitlines() and text.startswith("# tiny-arm64: resolved")
    folder = locks.wheelhouse("tiny-arm64", tmp_path / "cache")
    wheels = [p.name for p in folder.glob("*.whl")]
    assert len(wheels) == 1 and "aarch64" in wheels[0]
    assert locks.wheelhouse("tiny-arm64", tmp_path / "cache") == folder  # second call: cached, no pip


@pytest.mark.slow
def test_markers_are_the_target_platforms_and_pythons_not_the_hosts(home):
    (home / "dockerfiles" / "locks" / "marked-arm64.in").write_text(
        "# python: 3.10\n"
        'six==1.17.0; platform_machine == "aarch64"\n'
        'tomli==2.2.1; python_version < "3.11"\n'
        'psutil==7.2.2; platform_machine == "x86_64"\n')
    assert locks.resolve("marked-arm64") == ["six==1.17.0", "tomli==2.2.1"]


@pytest.mark.slow
def test_an_unresolvable_pin_is_a_build_error_with_pips_words(home):
    (home / "dockerfiles" / "locks" / "bad-amd64.in").write_text("numpy==0.0.1\n")
    with pytest.raises(BuildError) as err:
        locks.write_lock("bad-amd64")
    assert "numpy" in "\n".join(err.value.log_tail)


def test_a_lock_may_name_the_python_of_its_base_image():
    assert locks.python_of("jetson-arm64") == "3.10"  # JetPack 6's Ubuntu 22.04
    assert locks.python_of("litert-arm64") == locks.PYTHON
    assert "--python-version=3.10" in locks.platform_args("jetson-arm64")
