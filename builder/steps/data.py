"""data.prepare: calibration and validation samples as .npy files the other steps share."""

from __future__ import annotations

import json

import numpy as np

from builder import datasets
from builder.steps.base import Step, StepContext, StepParams
from builder.util import atomic_write_bytes, npy_bytes
from builder.workdir import INPUTS


class PrepareData(Step):
    kind = "data.prepare"
    stage = "toolchain"
    summary = "preprocess calibration/validation images into .npy (resize, crop, mean/std, layout)"

    def run(self, ctx: StepContext, params: StepParams) -> dict:
        recipe = ctx.recipe
        record: dict = {"warnings": []}
        calibration = recipe.calibration
        validation = recipe.validation or calibration
        sets = (("calibration", calibration, "calibration"),
                ("validation", validation, "validation" if recipe.validation else "calibration"))
        for name, dataset, folder_name in sets:
            if dataset is None:
                continue
            folder = ctx.workdir / INPUTS / folder_name
            samples, labels, warning = datasets.build(dataset, folder, recipe.input)
            atomic_write_bytes(ctx.output(name), npy_bytes(samples))
            if name == "validation":
                atomic_write_bytes(ctx.output("labels"), json.dumps(labels).encode())
            if warning and warning not in record["warnings"]:
                record["warnings"].append(warning)
                ctx.log.warning(warning)
            record[name] = {"samples": int(samples.shape[0]), "shape": list(samples.shape[1:]),
                            "labeled": labels is not None, "mean": float(np.mean(samples))}
            ctx.log.info("%s: %d samples of %s", name, samples.shape[0], list(samples.shape[1:]))
        if recipe.validation is None and calibration is not None:
            record["warnings"].append("no validation set: validating on the calibration samples")
        return record
