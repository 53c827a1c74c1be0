"""Which tensor layout each intermediate model expects (onnx2tf turns NCHW into NHWC).

Kept in `work/layouts.json`, keyed by the model's path in the work directory, so
that steps feeding calibration data to a model give it the layout it wants.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from builder.steps.base import StepContext
from builder.util import atomic_write_bytes
from builder.workdir import CALIBRATION, LAYOUTS


def _table(workdir: Path) -> dict:
    path = workdir / LAYOUTS
    return json.loads(path.read_text()) if path.exists() else {}


def _key(ctx: StepContext, model: Path) -> str:
    return str(model.relative_to(ctx.workdir))


def set_layout(ctx: StepContext, model: Path, layout: str) -> None:
    table = _table(ctx.workdir) | {_key(ctx, model): layout}
    atomic_write_bytes(ctx.workdir / LAYOUTS, json.dumps(table, indent=1, sort_keys=True).encode())


def layout_of(ctx: StepContext, model: Path) -> str:
    return _table(ctx.workdir).get(_key(ctx, model), ctx.recipe.input.layout)


def copy_layout(ctx: StepContext, src: Path, dst: Path) -> None:
    layout = layout_of(ctx, src)
    if layout != ctx.recipe.input.layout:
        set_layout(ctx, dst, layout)


def samples_for(ctx: StepContext, model: Path, which: str = CALIBRATION) -> np.ndarray:
    """Preprocessed samples, transposed NCHW -> NHWC when the model wants that."""
    samples = np.load(ctx.workdir / which)
    if ctx.recipe.input.layout == "NCHW" and layout_of(ctx, model) == "NHWC":
        samples = np.ascontiguousarray(samples.transpose(0, 2, 3, 1))
    return samples
