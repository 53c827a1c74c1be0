"""EDSR baseline (Lim et al. 2017) in plain torch, matching the official EDSR-PyTorch weights.

The authors publish state dicts only (`edsr_baseline_x2-1bfb2ff8.pth` ...), in the
naming of their repository (sanghyun-son/EDSR-PyTorch, `src/model/edsr.py`):
`sub_mean`, `head.0`, `body.<i>.body.{0,2}` for the residual blocks, `body.<n>`
for the conv after them, `tail.0.<j>` for the upsampler and `tail.1`, `add_mean`.
Input and output are RGB in 0..255 (rgb_range 255), NCHW; the output is `scale`
times larger.
"""

from __future__ import annotations

import math

import torch
from torch import nn

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


def _conv(in_ch: int, out_ch: int, kernel: int = 3) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2)


class MeanShift(nn.Conv2d):
    """Adds (sign=1) or subtracts (sign=-1) the DIV2K mean as a fixed 1x1 conv (it is in the state dict)."""

    def __init__(self, sign: int, rgb_range: float = 255.0):
        super().__init__(3, 3, kernel_size=1)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1)
        self.bias.data = sign * rgb_range * torch.tensor(DIV2K_MEAN)
        for p in self.parameters():
            p.requires_grad = False


class ResBlock(nn.Module):
    def __init__(self, feats: int, res_scale: float):
        super().__init__()
        self.body = nn.Sequential(_conv(feats, feats), nn.ReLU(inplace=True), _conv(feats, feats))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


def _upsampler(scale: int, feats: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    if scale & (scale - 1) == 0:  # 2, 4, 8: repeated x2 pixel shuffles
        for _ in range(int(math.log2(scale))):
            layers += [_conv(feats, 4 * feats), nn.PixelShuffle(2)]
    elif scale == 3:
        layers += [_conv(feats, 9 * feats), nn.PixelShuffle(3)]
    else:
        raise ValueError(f"EDSR upsampling supports scales 2, 3, 4, 8, not {scale}")
    return nn.Sequential(*layers)


class EDSR(nn.Module):
    def __init__(self, scale: int = 2, resblocks: int = 16, feats: int = 64, res_scale: float = 1.0):
        super().__init__()
        self.sub_mean = MeanShift(-1)
        self.head = nn.Sequential(_conv(3, feats))
        self.body = nn.Sequential(*[ResBlock(feats, res_scale) for _ in range(resblocks)], _conv(feats, feats))
        self.tail = nn.Sequential(_upsampler(scale, feats), _conv(feats, 3))
        self.add_mean = MeanShift(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.sub_mean(x))
        return self.add_mean(self.tail(self.body(x) + x))


def edsr_baseline_x2() -> EDSR:
    """The paper's baseline: 16 residual blocks of 64 features, x2."""
    return EDSR(scale=2)


def edsr_baseline_x4() -> EDSR:
    return EDSR(scale=4)
