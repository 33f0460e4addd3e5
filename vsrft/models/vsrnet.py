"""The built-in 5-frame VSR network: early fusion, residual blocks at half LR resolution, pixel shuffle.

Input  (N, 5*3, h, w) float RGB in [0, 1]: frames t-2..t+2 stacked on channels.
Output (N, 3, s*h, s*w): a learned residual on top of the bicubic-upsampled centre frame.

The stacked window is folded by space-to-depth (2x2) so the body runs at half LR
resolution with more channels: on a 2-core CPU the same FLOPs buy a deeper, wider net and
a larger receptive field than at full resolution. Odd sizes are edge-padded to even and
cropped back inside the graph. No other striding, so tiles overlapping by more than
`receptive_radius` LR pixels reproduce the untiled output.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

WINDOW = 5
CENTRE = WINDOW // 2


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x), inplace=True))


class VSRNet(nn.Module):
    """Early-fusion VSR CNN (ESPCN/EDSR family adapted to 5-frame windows)."""

    arch = "vsrnet"

    def __init__(self, channels: int = 32, blocks: int = 6, scale: int = 4, frames: int = WINDOW) -> None:
        super().__init__()
        self.channels, self.blocks, self.scale, self.frames = channels, blocks, scale, frames
        self.head = nn.Conv2d(3 * frames * 4, channels, 3, padding=1)
        self.body = nn.Sequential(*[ResidualBlock(channels) for _ in range(blocks)])
        self.body_tail = nn.Conv2d(channels, channels, 3, padding=1)
        self.upsample = nn.Conv2d(channels, 3 * (2 * scale) ** 2, 3, padding=1)
        with torch.no_grad():   # start close to plain bicubic, but not at the zero-gradient saddle
            self.upsample.weight.mul_(0.1)
            self.upsample.bias.zero_()
        self.register_buffer("bicubic_phases", bicubic_phase_kernels(scale), persistent=False)

    @property
    def config(self) -> dict:
        return {"arch": self.arch, "channels": self.channels, "blocks": self.blocks,
                "scale": self.scale, "frames": self.frames}

    @property
    def receptive_radius(self) -> int:
        """LR pixels of context each output pixel depends on (3x3 convs at half res, skip, padding)."""
        return 2 * (2 * self.blocks + 3) + 4

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        h, w = window.shape[-2:]
        c = 3 * (self.frames // 2)
        centre = window[:, c:c + 3]
        even = F.pad(window, (0, w % 2, 0, h % 2), mode="replicate")
        feat = self.head(F.pixel_unshuffle(even, 2))          # no activation: a ReLU here died in training
        feat = feat + self.body_tail(self.body(feat))
        residual = F.pixel_shuffle(self.upsample(feat), 2 * self.scale)
        residual = residual[..., : self.scale * h, : self.scale * w]
        base = F.pixel_shuffle(
            F.conv2d(F.pad(centre, (2, 2, 2, 2), mode="replicate"), self.bicubic_phases, groups=3), self.scale)
        return base + residual


def bicubic_phase_kernels(scale: int, a: float = -0.75) -> torch.Tensor:
    """(3*s*s, 1, 5, 5) grouped-conv weights whose pixel shuffle is bicubic upsampling by s.

    Same numbers as ``F.interpolate(mode="bicubic", align_corners=False)`` once the input is
    edge-padded by 2, but a plain convolution: ONNX Runtime's cubic Resize ran ~8x slower
    than the whole network on this CPU.
    """
    def w(x: float) -> float:
        x = abs(x)
        if x <= 1:
            return ((a + 2) * x - (a + 3)) * x * x + 1
        if x < 2:
            return (((x - 5) * x + 8) * x - 4) * a
        return 0.0

    taps = torch.zeros(scale, 5, dtype=torch.float64)
    for p in range(scale):
        u = (p + 0.5) / scale - 0.5          # source offset of phase p relative to LR pixel i
        f = math.floor(u)
        t = u - f
        for k, wt in zip(range(-1, 3), (w(t + 1), w(t), w(1 - t), w(2 - t))):
            taps[p, f + k + 2] += wt
    k2 = torch.einsum("pi,qj->pqij", taps, taps).reshape(scale * scale, 1, 5, 5)
    return k2.repeat(3, 1, 1, 1).float()
