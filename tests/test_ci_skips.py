"""In CI (CI=true) a skip is a failure that says what was missing (the hook in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

SKIPPING = '''
import pytest

def test_missing_tool():
    pytest.importorskip("no_such_tool_for_ci")

@pytest.mark.skipif(True, reason="needs the frobnicate CLI")
def test_skipif():
    pass

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_known_bug():
    assert False

def test_runs():
    pass
'''


def pytest_in(folder: Path, ci: str | None) -> subprocess.CompletedProcess:
    """pytest on `folder` with this suite's conftest.py as a plugin, CI set to `ci` (or unset)."""
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"PYTHONPATH": str(TESTS),
                                                                 "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q", "-rA",
                           "--rootdir", str(folder), str(folder)],
                          capture_output=True, text=True, env=env, cwd=folder, timeout=120)


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    return tmp_path


def test_outside_ci_skips_stay_skips(suite):
    proc = pytest_in(suite, None)
    assert proc.returncode == 0, proc.stdout
    assert "1 passed, 2 skipped, 1 xfailed" in proc.stdout


def test_in_ci_a_skip_fails_and_names_what_was_missing(suite):
    proc = pytest_in(suite, "true")
    assert proc.returncode == 1, proc.stdout
    assert "1 failed, 1 passed, 1 xfailed, 1 error" in proc.stdout  # skipif skips at setup: an error
    assert ("FAILED test_skipping.py::test_missing_tool - skipped in CI (CI=true), which is a failure here: "
            "could not import 'no_such_tool_for_ci'") in proc.stdout
    assert ("ERROR test_skipping.py::test_skipif - skipped in CI (CI=true), which is a failure here: "
            "needs the frobnicate CLI") in proc.stdout


def test_in_ci_a_module_level_skip_fails_its_collection(suite):
    (suite / "test_skipping.py").write_text('import pytest\npytest.importorskip("no_such_module_for_ci")\n'
                                            "def test_never():\n    pass\n")
    proc = pytest_in(suite, "true")
    assert proc.returncode != 0
    assert ("ERROR test_skipping.py - skipped in CI (CI=true), which is a failure here: could not import "
            "'no_such_module_for_ci'") in proc.stdout
