"""How raw per-anchor detection outputs become boxes: mediapipe's SsdAnchorsCalculator options (the anchors) and
TensorsToDetectionsCalculator's (the decoding), by their mediapipe names so a graph's .pbtxt can be copied."""

from __future__ import annotations

from pydantic import Field, model_validator

from builder.config.common import Strict


class SsdAnchors(Strict):
    num_layers: int = Field(ge=1, le=32)
    min_scale: float = Field(gt=0)
    max_scale: float = Field(gt=0)
    input_size_height: int = Field(ge=1, le=1 << 16)
    input_size_width: int = Field(ge=1, le=1 << 16)
    anchor_offset_x: float = 0.5
    anchor_offset_y: float = 0.5
    strides: list[int] = Field(min_length=1, description="one per layer")
    aspect_ratios: list[float] = Field([1.0], min_length=1)
    reduce_boxes_in_lowest_layer: bool = False
    interpolated_scale_aspect_ratio: float = 1.0
    fixed_anchor_size: bool = False

    @model_validator(mode="after")
    def _a_stride_per_layer(self):
        if len(self.strides) != self.num_layers:
            raise ValueError(f"strides: give one per layer ({self.num_layers}), not {len(self.strides)}")
        if min(self.strides) < 1 or min(self.aspect_ratios) <= 0:
            raise ValueError("strides and aspect_ratios must be > 0")
        return self


class Detection(Strict):
    """Decoding raw outputs: boxes (1, anchors, >=4) as centre x, y, width, height offsets, divided by the scales
    and scaled by the anchor; scores (1, anchors, classes) as logits (a sigmoid makes them probabilities)."""

    anchors: SsdAnchors
    x_scale: float = Field(gt=0)
    y_scale: float = Field(gt=0)
    w_scale: float = Field(gt=0)
    h_scale: float = Field(gt=0)
    min_score: float = Field(0.5, ge=0, le=1, description="detections below this probability are dropped")
    iou: float = Field(0.3, gt=0, le=1, description="non-maximum suppression: a box overlapping a better one by "
                                                    "more than this is dropped")
