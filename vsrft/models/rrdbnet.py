"""ESRGAN's RRDBNet (Real-ESRGAN ``RealESRGAN_x4plus``, ``_x4plus_anime_6B``, ``_x2plus``).

Module names and maths follow BasicSR's ``basicsr/archs/rrdbnet_arch.py`` so its ``.pth``
state dicts (``params`` / ``params_ema``) load unchanged: conv_first, body.N.rdbK.conv1..5,
conv_body, conv_up1, conv_up2, conv_hr, conv_last; LeakyReLU 0.2; residuals scaled by 0.2;
two nearest-neighbour x2 upsamplings. For x2 (x1) the input is pixel-unshuffled by 2 (4)
first, so conv_first sees 12 (48) channels.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; the block's output is scaled by 0.2 onto its input."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Three dense blocks in series, again with a 0.2-scaled residual."""

    def __init__(self, num_feat: int, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """BasicSR's RRDBNet (3 -> 3 channels), with the arch/config interface of vsrft's models."""

    arch = "rrdb"
    frames = 1

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, scale: int = 4, num_feat: int = 64,
                 num_block: int = 23, num_grow_ch: int = 32) -> None:
        super().__init__()
        if scale not in (1, 2, 4):
            raise ValueError(f"RRDBNet supports scale 1, 2 or 4, not {scale}")
        self.scale, self.num_feat, self.num_block, self.num_grow_ch = scale, num_feat, num_block, num_grow_ch
        self.unshuffle = {4: 1, 2: 2, 1: 4}[scale]
        self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle ** 2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    @property
    def config(self) -> dict:
        return {"arch": self.arch, "num_feat": self.num_feat, "num_block": self.num_block,
                "num_grow_ch": self.num_grow_ch, "scale": self.scale, "frames": 1}

    @property
    def layer_groups(self) -> dict[str, tuple[str, ...]]:
        """Parameter-name prefixes of the adaptation's layer subsets (`AdaptConfig.layers`)."""
        tail = ("conv_up1.", "conv_up2.", "conv_hr.", "conv_last.")
        return {"head": ("conv_first.",), "body": ("body.", "conv_body."), "upsample": tail,
                "ends": ("conv_first.", *tail)}

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        return feat + self.conv_body(self.body(feat))

    def _upsample(self, feat: torch.Tensor) -> torch.Tensor:
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))

    def split(self, layers: str) -> tuple[Callable[[torch.Tensor], torch.Tensor],
                                          Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] | None:
        """(front, tail) with forward(x) == tail(front(x), x) when only the upsampling layers adapt
        (the body's features, on the LR grid at x4); None otherwise."""
        if layers != "upsample" or self.unshuffle != 1:
            return None
        return self._features, (lambda feat, x: self._upsample(feat))

    @property
    def receptive_radius(self) -> int:
        """Tile overlap in LR pixels. The exact receptive field (~16 px per RRDB) would make tiles
        the whole frame; the dense blocks' influence decays within a few pixels, and Real-ESRGAN's
        own tiler pads by 10, so 32 keeps seams well below 8-bit rounding in practice."""
        return 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.unshuffle > 1:
            # BasicSR asserts divisible sizes; pad by reflection and cut to the next multiple instead,
            # unconditionally, so the ONNX trace stays right for every tile size
            r = self.unshuffle
            x = F.pad(x, (0, r, 0, r), mode="reflect")
            x = x[..., : (h + r - 1) // r * r, : (w + r - 1) // r * r]
            x = F.pixel_unshuffle(x, r)
        out = self._upsample(self._features(x))
        if self.unshuffle > 1:
            out = out[..., : h * self.scale, : w * self.scale]
        return out
