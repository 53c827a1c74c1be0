"""builder.host.docker_tar: what comes back from a container lands whole, inside the work dir, or not at all."""

from __future__ import annotations

import io
import tarfile

import pytest

from builder.errors import EngineError
from builder.host.docker_tar import take_work_dir


def archive(files: dict[str, bytes]) -> bytes:
    """A tar as `get_archive` streams it: everything under the container folder's name."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"work/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def chunks(data: bytes, cut_at: int | None = None):
    """The stream in 1 KB chunks; a connection lost at `cut_at` bytes raises as the SDK does."""
    for start in range(0, len(data), 1024):
        if cut_at is not None and start >= cut_at:
            raise ConnectionResetError("connection lost")
        yield data[start:start + 1024]


def test_the_work_dir_comes_back_over_what_was_there(tmp_path):
    dest = tmp_path / "run"
    (dest / "work" / "records").mkdir(parents=True)
    (dest / "work" / "records" / "01.json").write_text("old")
    (dest / "kept.txt").write_text("kept")
    take_work_dir(chunks(archive({"work/records/01.json": b"new", "model.tflite": b"x" * 5000})), dest)
    assert (dest / "work" / "records" / "01.json").read_text() == "new"
    assert (dest / "model.tflite").stat().st_size == 5000
    assert (dest / "kept.txt").read_text() == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging folder left


def test_a_copy_cut_off_halfway_changes_nothing(tmp_path):
    dest = tmp_path / "run"
    dest.mkdir()
    (dest / "a.json").write_text("before")
    data = archive({"a.json": b"after", "big.bin": b"y" * 20000, "z.json": b"last"})
    with pytest.raises(ConnectionResetError):
        take_work_dir(chunks(data, cut_at=8192), dest)
    assert sorted(p.name for p in dest.iterdir()) == ["a.json"]
    assert (dest / "a.json").read_text() == "before"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_nothing_lands_outside_the_work_dir(tmp_path):
    dest = tmp_path / "run"
    dest.mkdir()
    with pytest.raises(EngineError, match="points outside"):
        take_work_dir(chunks(archive({"../escape.txt": b"no"})), dest)
    assert not (tmp_path / "escape.txt").exists()


def links(entries: dict[str, str], files: dict[str, bytes] | None = None) -> bytes:
    """A `get_archive` stream of symlinks (name -> link text) and files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, target in entries.items():
            info = tarfile.TarInfo(f"work/{name}")
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        for name, data in (files or {}).items():
            info = tarfile.TarInfo(f"work/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_a_chain_of_links_that_each_look_inside_is_refused(tmp_path):
    """a/b/up -> ../.. is the work dir itself, a/b/out -> up/.. reads lexically as a/b: together, its parent."""
    dest = tmp_path / "run"
    dest.mkdir()
    (tmp_path / "secret.txt").write_text("host file")
    with pytest.raises(EngineError, match="a/b/out"):
        take_work_dir(chunks(links({"a/b/up": "../..", "a/b/out": "up/.."}, {"model.tflite": b"m"})), dest)
    assert list(dest.iterdir()) == []  # refused before anything moved
    assert [p.name for p in tmp_path.iterdir()] == ["run", "secret.txt"]


def test_a_link_that_leads_out_through_one_an_earlier_copy_brought_is_removed(tmp_path):
    dest = tmp_path / "run"
    dest.mkdir()
    take_work_dir(chunks(links({"a/b/up": "../.."})), dest)  # alone, it stays inside
    assert (dest / "a" / "b" / "up").resolve() == dest.resolve()
    with pytest.raises(EngineError, match="a/b/out"):
        take_work_dir(chunks(links({"a/b/out": "up/.."})), dest)
    assert not (dest / "a" / "b" / "out").is_symlink()
    assert (dest / "a" / "b" / "up").is_symlink()
