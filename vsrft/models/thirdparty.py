"""Third-party single-frame SR checkpoints, so users can bring the GAN model they already have.

Supported, as saved by BasicSR (``{"params": state_dict}`` or ``{"params_ema": ...}``):
Real-ESRGAN's SRVGGNetCompact (``realesr-general-x4v3``, ``realesr-animevideov3`` and friends)
and ESRGAN's RRDBNet (``RealESRGAN_x4plus``, ``_x4plus_anime_6B``, ``_x2plus``; see `rrdbnet`).
ncnn ``.param``/``.bin`` pairs of the same two networks are read by `vsrft.models.ncnn`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from vsrft.errors import VsrftError


class SRVGGNetCompact(nn.Module):
    """Same module names and maths as Real-ESRGAN's, so its state dicts load unchanged."""

    arch = "srvgg"
    frames = 1

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_conv: int = 16,
                 upscale: int = 4, act_type: str = "prelu", out_scale: int | None = None) -> None:
        """`out_scale` < `upscale` appends a bicubic resize of the output (what the sr-vulkan ncnn
        packages ship as the x2/x3 animevideov3 models: the x4 net, then a 0.5/0.75 resize)."""
        super().__init__()
        self.num_feat, self.num_conv, self.upscale, self.act_type = num_feat, num_conv, upscale, act_type
        self.scale = out_scale or upscale
        self.body = nn.ModuleList()
        self.body.append(nn.Conv2d(num_in_ch, num_feat, 3, 1, 1))
        self.body.append(self._activation(num_feat))
        for _ in range(num_conv):
            self.body.append(nn.Conv2d(num_feat, num_feat, 3, 1, 1))
            self.body.append(self._activation(num_feat))
        self.body.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.upsampler = nn.PixelShuffle(upscale)

    @property
    def layer_groups(self) -> dict[str, tuple[str, ...]]:
        """Parameter-name prefixes of the adaptation's layer subsets (`AdaptConfig.layers`):
        "upsample" is the last hidden conv, its activation and the output conv."""
        last = 2 * self.num_conv + 2
        tail = tuple(f"body.{i}." for i in range(last - 2, last + 1))
        head = ("body.0.", "body.1.")
        return {"head": head, "upsample": tail, "ends": head + tail,
                "body": tuple(f"body.{i}." for i in range(2, last - 2))}

    def _activation(self, n: int) -> nn.Module:
        if self.act_type == "relu":
            return nn.ReLU(inplace=True)
        if self.act_type == "prelu":
            return nn.PReLU(num_parameters=n)
        return nn.LeakyReLU(negative_slope=0.1, inplace=True)

    @property
    def config(self) -> dict:
        config = {"arch": self.arch, "num_feat": self.num_feat, "num_conv": self.num_conv,
                  "scale": self.scale, "act_type": self.act_type, "frames": 1}
        if self.scale != self.upscale:
            config["net_scale"] = self.upscale
        return config

    @property
    def receptive_radius(self) -> int:
        return self.num_conv + 2 + (self.scale != self.upscale)

    def split(self, layers: str) -> tuple[Callable[[torch.Tensor], torch.Tensor],
                                          Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] | None:
        """(front, tail) with forward(x) == tail(front(x), x), the front being the layers that do
        not move when only `layers` adapt (features on the LR grid); None when nothing is frozen
        in front of them."""
        if layers != "upsample":
            return None
        first_moving = 2 * self.num_conv
        return (lambda x: self._run(x, 0, first_moving)), (lambda f, x: self._tail(self._run(f, first_moving), x))

    def _run(self, x: torch.Tensor, start: int, stop: int | None = None) -> torch.Tensor:
        for layer in self.body[start:stop]:
            x = layer(x)
        return x

    def _tail(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = self.upsampler(out)
        out = out + F.interpolate(x, scale_factor=self.upscale, mode="nearest")
        if self.scale != self.upscale:
            out = F.interpolate(out, scale_factor=self.scale / self.upscale, mode="bicubic", align_corners=False)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._tail(self._run(x, 0), x)


def recognise(blob: dict, path: Path) -> tuple[dict, dict]:
    """(config, state_dict) of a third-party checkpoint, or a VsrftError naming what is wrong."""
    state = blob.get("params_ema") or blob.get("params") or blob
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VsrftError(f"checkpoint {path} is neither a vsrft checkpoint nor a known state dict layout")
    if "conv_first.weight" in state and "body.0.rdb1.conv1.weight" in state:
        return _recognise_rrdb(state, path), state
    convs = sorted(int(k.split(".")[1]) for k in state if k.startswith("body.") and k.endswith(".weight")
                   and state[k].dim() == 4)
    if not convs or "body.0.weight" not in state:
        keys = ", ".join(list(state)[:4])
        raise VsrftError(f"checkpoint {path} has an unsupported layout (keys {keys}, ...); "
                         "supported: vsrft checkpoints, Real-ESRGAN SRVGGNetCompact and RRDBNet")
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


def _recognise_rrdb(state: dict, path: Path) -> dict:
    """RRDBNet's config from its shapes: the scale shows in conv_first's input channels (3, 12, 48)."""
    first = state["conv_first.weight"]
    scale = {3: 4, 12: 2, 48: 1}.get(int(first.shape[1]))
    if scale is None:
        raise VsrftError(f"checkpoint {path}: RRDBNet with {first.shape[1]} input channels is not supported (need 3, 12 or 48)")
    if "conv_last.weight" not in state or state["conv_last.weight"].shape[0] != 3:
        raise VsrftError(f"checkpoint {path}: RRDBNet without a 3-channel conv_last is not supported")
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("body.")}
    return {"arch": "rrdb", "num_feat": int(first.shape[0]), "num_block": len(blocks),
            "num_grow_ch": int(state["body.0.rdb1.conv1.weight"].shape[0]), "scale": scale, "frames": 1}
