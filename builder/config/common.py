"""Shared vocabulary of recipes and targets."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

# auto: the fastest artifact that meets the variant's gates (an accuracy-aware search, quant_search)
Precision = Literal["fp32", "fp16", "dynamic", "int8", "int16x8", "auto"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "dynamic", "int8", "int16x8", "auto")
Task = Literal["classification", "detection", "segmentation", "super_resolution", "ocr", "generic"]
IoDtype = Literal["float32", "int8", "uint8"]
Platform = Literal["linux/amd64", "linux/arm64"]

class Strict(BaseModel):
    """Every config model: unknown keys are errors, not silent defaults; no NaN or infinity in numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


_KINDS = ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "named pipe (FIFO)"),
          (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))


def kind_of(mode: int) -> str:
    """What an `os.stat` mode is, in words."""
    return next((name for test, name in _KINDS if test(mode)), "special file")


def path_kind(path: Path) -> str | None:
    """What `path` is (symlinks followed), or None if it does not exist; ValueError if it cannot be read."""
    try:
        return kind_of(path.stat().st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
