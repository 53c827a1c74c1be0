"""Tensor layouts, decided by the plan: a model's input layout (a converter may turn NCHW into NHWC) and the
layout the prepared samples have (the recipe's), so that calibration data reaches a model as it wants it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from builder.stage.steps.base import PlanScope, StepParams

Layout = Literal["NHWC", "NCHW", "other"]


class LayoutParams(StepParams):
    layout: Layout = Field("NHWC", description="the input model's tensor layout (resolved by the plan)")
    data_layout: Layout = Field("NHWC", description="the prepared samples' layout: the recipe's input.layout")


def layout_params(scope: PlanScope) -> dict:
    return {"layout": scope.layout or scope.recipe.input.layout, "data_layout": scope.recipe.input.layout}


_TRANSPOSE = {("NCHW", "NHWC"): (0, 2, 3, 1), ("NHWC", "NCHW"): (0, 3, 1, 2)}  # (samples', model's) -> axes


def samples_for(path: Path, params: LayoutParams) -> np.ndarray:
    """Preprocessed samples in the model's layout (e.g. NCHW -> NHWC for a model converted to NHWC)."""
    samples = np.load(path)
    if axes := _TRANSPOSE.get((params.data_layout, params.layout)):
        samples = np.ascontiguousarray(samples.transpose(*axes))
    return samples
