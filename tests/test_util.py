"""builder.util: atomic writes and copies, and the modes they leave under the user's umask."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from builder.util import atomic_copy, atomic_write_bytes, create_beside


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=lambda m: f"umask-{m:03o}")
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_takes_the_umask_and_leaves_no_temp_file(tmp_path, umask):
    out = tmp_path / "new" / "deeper" / "model.onnx"
    atomic_write_bytes(out, b"one")
    atomic_write_bytes(out, b"two")  # replacing an existing file
    assert out.read_bytes() == b"two"
    assert _mode(out) == 0o666 & ~umask
    assert _mode(out.parent) == _mode(out.parent.parent) == 0o777 & ~umask
    assert [p.name for p in out.parent.iterdir()] == ["model.onnx"]


def test_a_failed_write_removes_its_temp_file_and_keeps_the_old_one(tmp_path, umask):
    out = tmp_path / "results.json"
    atomic_write_bytes(out, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(out, "not bytes")  # type: ignore[arg-type]
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_copies_take_the_umask_not_the_private_modes_of_temp_sources(tmp_path, umask):
    with tempfile.TemporaryDirectory() as tmp:  # 0700, and mkstemp files are 0600
        src = Path(tmp) / "saved_model"
        (src / "variables").mkdir(parents=True)
        fd, name = tempfile.mkstemp(dir=src / "variables")
        os.write(fd, b"weights")
        os.close(fd)
        (src / "saved_model.pb").write_bytes(b"graph")
        os.chmod(src / "saved_model.pb", 0o600)
        atomic_copy(src, tmp_path / "out" / "saved_model")
        atomic_copy(src / "saved_model.pb", tmp_path / "out" / "model.pb")

    dst = tmp_path / "out" / "saved_model"
    assert (dst / "variables" / Path(name).name).read_bytes() == b"weights"
    for folder in (dst, dst / "variables"):
        assert _mode(folder) == 0o777 & ~umask, folder
    for file in (dst / "saved_model.pb", dst / "variables" / Path(name).name, tmp_path / "out" / "model.pb"):
        assert _mode(file) == 0o666 & ~umask, file
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.pb", "saved_model"]


def test_create_beside_makes_a_new_hidden_file_each_time(tmp_path, umask):
    made = [create_beside(tmp_path / "m.onnx", ".onnx") for _ in range(3)]
    for fd, _ in made:
        os.close(fd)
    paths = [p for _, p in made]
    assert len(set(paths)) == 3
    assert all(p.name.startswith(".m.onnx.") and p.suffix == ".onnx" for p in paths)
    assert all(_mode(p) == 0o666 & ~umask for p in paths)
