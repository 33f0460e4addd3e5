"""Third-party single-frame SR checkpoints, so users can bring the GAN model they already have.

Supported: Real-ESRGAN's SRVGGNetCompact (``realesr-general-x4v3``, ``realesr-animevideov3``
and friends), as saved by BasicSR: ``{"params": state_dict}`` or ``{"params_ema": ...}``.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from vsrft.errors import VsrftError


class SRVGGNetCompact(nn.Module):
    """Same module names and maths as Real-ESRGAN's, so its state dicts load unchanged."""

    arch = "srvgg"
    frames = 1

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_conv: int = 16,
                 upscale: int = 4, act_type: str = "prelu") -> None:
        super().__init__()
        self.num_feat, self.num_conv, self.scale, self.act_type = num_feat, num_conv, upscale, act_type
        self.body = nn.ModuleList()
        self.body.append(nn.Conv2d(num_in_ch, num_feat, 3, 1, 1))
        self.body.append(self._activation(num_feat))
        for _ in range(num_conv):
            self.body.append(nn.Conv2d(num_feat, num_feat, 3, 1, 1))
            self.body.append(self._activation(num_feat))
        self.body.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.upsampler = nn.PixelShuffle(upscale)

    def _activation(self, n: int) -> nn.Module:
        if self.act_type == "relu":
            return nn.ReLU(inplace=True)
        if self.act_type == "prelu":
            return nn.PReLU(num_parameters=n)
        return nn.LeakyReLU(negative_slope=0.1, inplace=True)

    @property
    def config(self) -> dict:
        return {"arch": self.arch, "num_feat": self.num_feat, "num_conv": self.num_conv,
                "scale": self.scale, "act_type": self.act_type, "frames": 1}

    @property
    def receptive_radius(self) -> int:
        return self.num_conv + 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        out = self.upsampler(out)
        return out + F.interpolate(x, scale_factor=self.scale, mode="nearest")


def recognise(blob: dict, path: Path) -> tuple[dict, dict]:
    """(config, state_dict) of a third-party checkpoint, or a VsrftError naming what is wrong."""
    state = blob.get("params_ema") or blob.get("params") or blob
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VsrftError(f"checkpoint {path} is neither a vsrft checkpoint nor a known state dict layout")
    convs = sorted(int(k.split(".")[1]) for k in state if k.startswith("body.") and k.endswith(".weight")
                   and state[k].dim() == 4)
    if not convs or "body.0.weight" not in state:
        keys = ", ".join(list(state)[:4])
        raise VsrftError(f"checkpoint {path} has an unsupported layout (keys {keys}, ...); "
                         "supported: vsrft checkpoints and Real-ESRGAN SRVGGNetCompact")
    first, last = state["body.0.weight"], state[f"body.{convs[-1]}.weight"]
    if first.shape[1] != 3:
        raise VsrftError(f"checkpoint {path}: SRVGGNetCompact with {first.shape[1]} input channels is not supported (need 3)")
    num_feat = int(first.shape[0])
    upscale = math.isqrt(int(last.shape[0]) // 3)
    if 3 * upscale * upscale != last.shape[0]:
        raise VsrftError(f"checkpoint {path}: last layer has {last.shape[0]} channels, not 3*scale^2")
    act = "prelu" if "body.1.weight" in state else "relu"
    config = {"arch": "srvgg", "num_feat": num_feat, "num_conv": len(convs) - 2, "scale": upscale,
              "act_type": act, "frames": 1}
    return config, state
