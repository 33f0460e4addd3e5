"""Evidence in the HR domain for keeping adapted weights.

LR consistency, ||A f(y) - y||, cannot see A's null space: an adapted network can explain the
input better and still be a worse upscale (a GAN model collapsing to a copy of the LR pixel
grid does). What the null space holds can be judged over time: detail that belongs to the
scene moves with it, invented detail flickers. So the adapted output is compared with the
starting network's output on the keyframe's consecutive frames by their warping error along
the motion of the input frames; no ground truth is needed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn as nn

from vsrft.degradation import Degradation, degrade_torch, pinv_apply_torch, resize_torch
from vsrft.metrics.temporal import warping_errors

MAX_SIDE = 128     # LR pixels: the centre crop of each frame the evidence is computed on
BORDER = 8         # HR pixels left out at the crop's edges (zero padding, warps from outside)


@dataclass(frozen=True)
class TemporalEvidence:
    """Warping errors ([0, 1] scale) of the starting and the adapted output on the same frames."""
    before: float
    after: float
    frames: int

    @property
    def ratio(self) -> float:
        return self.after / self.before if self.before > 0 else math.inf if self.after > 0 else 1.0


def centre_crop(stacks: torch.Tensor, side: int = MAX_SIDE) -> torch.Tensor:
    """(N, C, h, w) -> (N, C, min(h, side), min(w, side)), the centre."""
    h, w = stacks.shape[-2:]
    ch, cw = min(h, side), min(w, side)
    y, x = (h - ch) // 2, (w - cw) // 2
    return stacks[..., y:y + ch, x:x + cw]


def upscale_crops(module: nn.Module, stacks: torch.Tensor, op: Degradation, model_scale: int,
                  project: bool) -> torch.Tensor:
    """(N, C + 3, h, w) windows in [0, 1] (network input, then the centre frame as decoded) ->
    (N, 3, s*h, s*w): the output as the engine shows it (resampled to the requested scale and
    projected onto the input when `project`)."""
    with torch.no_grad():
        hr = module(stacks[:, :-3])
        if op.scale != model_scale:
            hr = resize_torch(hr, op.scale * stacks.shape[-2], op.scale * stacks.shape[-1])
        if project:
            hr = hr + pinv_apply_torch(stacks[:, -3:] - degrade_torch(hr, op), op)
        return hr.clamp(0, 1)


def temporal_evidence(start: nn.Module, adapted: nn.Module, stacks: torch.Tensor, op: Degradation,
                      model_scale: int, project: bool) -> TemporalEvidence | None:
    """Warping error of both networks' outputs over consecutive windows, along the optical flow of
    the input frames (DIS on the LR centre frames upsampled to the output size; occlusions left
    out). None with fewer than 3 windows.

    stacks: (N, C + 3, h, w) consecutive windows in [0, 1], in stream order."""
    if stacks.shape[0] < 3:
        return None
    crops = centre_crop(stacks)
    outs = [upscale_crops(m, crops, op, model_scale, project) for m in (start, adapted)]
    hh, ww = outs[0].shape[-2:]
    b = BORDER if min(hh, ww) > 4 * BORDER else 0

    def frames(t: torch.Tensor) -> list[np.ndarray]:
        a = t.permute(0, 2, 3, 1).numpy().astype(np.float32)
        return [np.ascontiguousarray(f[b:hh - b, b:ww - b]) for f in a]

    lr = crops[:, -3:].permute(0, 2, 3, 1).numpy().astype(np.float32)
    flow_source = [np.ascontiguousarray(cv2.resize(f, (ww, hh), interpolation=cv2.INTER_CUBIC)
                                        .clip(0, 1)[b:hh - b, b:ww - b]) for f in lr]
    before, after = warping_errors([frames(outs[0]), frames(outs[1])], flow_source)
    return TemporalEvidence(before, after, int(stacks.shape[0]))
