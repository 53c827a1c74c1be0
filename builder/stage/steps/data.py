"""data.prepare: calibration or validation samples as .npy files that later steps share."""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
from pydantic import Field

from builder.config.recipe import Dataset, InputSpec
from builder.stage import datasets
from builder.stage.steps.base import PlanScope, Step, StepContext, StepParams
from builder.util import atomic_write_bytes, npy_bytes
from builder.workdir import INPUTS

CALIBRATION_FLOOR = 64  # distinct images below which post-training quantization is warned about


class PrepareData(Step):
    kind = "data.prepare"
    stage = "toolchain"
    summary = "preprocess calibration/validation images into .npy (resize, crop, mean/std, layout)"

    class Params(StepParams):
        dataset: Literal["calibration", "validation"]
        samples_from: Literal["calibration", "validation"] | None = Field(
            None, description="the recipe's dataset read: without a validation set, validation reuses calibration's")
        data: Dataset | None = Field(None, description="that dataset as the recipe gives it")
        input: InputSpec | None = Field(None, description="the recipe's input spec: how images become tensors")

    @classmethod
    def resolve_params(cls, scope: PlanScope, params: dict) -> dict:
        recipe = scope.recipe
        name = params.get("dataset")
        source = name if getattr(recipe, name, None) is not None else "calibration"
        dataset = getattr(recipe, source)
        return {"samples_from": source, "data": dataset.model_dump(mode="json") if dataset else None,
                "input": recipe.input.model_dump(mode="json")}

    @classmethod
    def file_inputs(cls, params: dict) -> dict[str, str]:
        """The fetched files (with their index.json); synthetic samples read none."""
        data = params.get("data") or {}
        return {} if data.get("synthetic") else {"files": f"{INPUTS}/{params['samples_from']}"}

    def run(self, ctx: StepContext, params: Params) -> dict:
        name, source = params.dataset, params.samples_from
        files = ctx.input("files") if "files" in ctx.call.inputs else None
        samples, labels, warning = datasets.build(params.data, files, params.input)
        photos = datasets.photos(params.data, files, params.input)
        atomic_write_bytes(ctx.output(name), npy_bytes(samples))
        if name == "validation":
            atomic_write_bytes(ctx.output("labels"), json.dumps(labels).encode())
            boxes = datasets.build_boxes(params.data, files, params.input) if files else None
            atomic_write_bytes(ctx.output("boxes"), json.dumps(boxes).encode())
            atomic_write_bytes(ctx.output("photos"), json.dumps(photos).encode())
        images = len(set(photos))
        warnings = [warning] if warning else []
        if source != name:
            warnings.append("no validation set in the recipe: validating on the calibration images, which flatters "
                            "every quantized variant; give `validation:` images the quantizer never saw")
        if name == "calibration" and not params.data.synthetic and images < CALIBRATION_FLOOR:
            warnings.append(f"calibration has {images} distinct image(s), fewer than {CALIBRATION_FLOOR}: int8 ranges "
                            "fitted to so few photos lose accuracy on others; give at least "
                            f"{CALIBRATION_FLOOR} distinct images of the deployment's domain (crops of one do not count)")
        for w in warnings:
            ctx.log.warning(w)
        ctx.log.info("%s: %d samples of %s from %d distinct image(s)", name, samples.shape[0], list(samples.shape[1:]),
                     images)
        return {"warnings": warnings, name: {"samples": int(samples.shape[0]), "images": images,
                                            "shape": list(samples.shape[1:]), "labeled": labels is not None,
                                            "mean": float(np.mean(samples))}}
