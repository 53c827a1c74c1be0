"""A variant's `nncf:` options: what quantize.nncf and search.nncf pass to NNCF, declared once here (the
converter's keyword arguments are these fields) and registered as a section of the recipe's variants."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from builder.config.common import Strict
from builder.config.sections import Section, register


class NncfPtq(Strict):
    """NNCF's post-training quantization options (with or without accuracy control)."""

    preset: Literal["performance", "mixed"] = "performance"
    subset_size: int | None = Field(None, ge=1, le=100_000, description=(
        "calibration samples NNCF uses (the first ones); default: every one, so every distinct image counts"))
    fast_bias_correction: bool = True
    ignored_scope: list[str] | None = None
    model_type: Literal["transformer"] | None = None
    overflow_fix: Literal["enable", "first_layer_only", "disable"] = Field("enable", description=(
        "7-bit weights where int8 dot products can saturate: CPUs without VNNI (AVX2 only) need it in every layer "
        "(EfficientNet-Lite0 int8 top-1 agreement on such a CPU: 0.76 disable, 0.80 first_layer_only, 0.90 enable)"))


class Nncf(NncfPtq):
    """A variant's `nncf:` section."""

    max_accuracy_drop: float | None = Field(None, gt=0, le=1, description="set to quantize with accuracy control")

    def ptq_options(self) -> dict:
        """The options NNCF's quantize (with or without accuracy control) takes."""
        return self.model_dump(include=set(NncfPtq.model_fields))


register(Section("variant", "nncf", Nncf, "NNCF's options for this variant's OpenVINO int8 (quantize.nncf, "
                 "search.nncf)"))
