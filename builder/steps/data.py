"""data.prepare: calibration or validation samples as .npy files that later steps share."""

from __future__ import annotations

import json
from typing import Literal

import numpy as np

from builder import datasets
from builder.steps.base import Step, StepContext, StepParams
from builder.util import atomic_write_bytes, npy_bytes
from builder.workdir import INPUTS


class PrepareData(Step):
    kind = "data.prepare"
    stage = "toolchain"
    summary = "preprocess calibration/validation images into .npy (resize, crop, mean/std, layout)"

    class Params(StepParams):
        dataset: Literal["calibration", "validation"]

    def run(self, ctx: StepContext, params: Params) -> dict:
        recipe = ctx.recipe
        name = params.dataset
        # Without a validation set, validation reuses the calibration samples (and says so).
        source = name if getattr(recipe, name) is not None else "calibration"
        dataset = getattr(recipe, source)
        samples, labels, warning = datasets.build(dataset, ctx.workdir / INPUTS / source, recipe.input)
        atomic_write_bytes(ctx.output(name), npy_bytes(samples))
        if name == "validation":
            atomic_write_bytes(ctx.output("labels"), json.dumps(labels).encode())
        warnings = [warning] if warning else []
        if source != name:
            warnings.append("no validation set in the recipe: validating on the calibration samples")
        for w in warnings:
            ctx.log.warning(w)
        ctx.log.info("%s: %d samples of %s", name, samples.shape[0], list(samples.shape[1:]))
        return {"warnings": warnings, name: {"samples": int(samples.shape[0]), "shape": list(samples.shape[1:]),
                                            "labeled": labels is not None, "mean": float(np.mean(samples))}}
