"""Temporal-consistency metrics for video super-resolution (see docs/method.md, "Measuring").

Per-frame fidelity cannot see flicker or temporal wobble, so these compare how an output sequence
changes from frame to frame with how the ground truth (or, without ground truth, the input) changes.

Conventions for every function here:

- frames are sequences (lists, or a TxHxWx3 array) of HxWx3 RGB frames, all the same shape;
- uint8 frames are scaled to [0, 1]; float frames are taken to be in [0, 1] already (unlike
  ``fidelity``, which works in [0, 255]), so squared-error results are on the [0, 1] scale;
- optical flow is computed on 8-bit grayscale (float input is scaled by 255 and rounded for that).

Lower is better for all of them.
"""
from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from vsrft.metrics.lpips import LPIPS

__all__ = ["tof", "warping_error", "warping_error_gap", "warping_errors", "tmse", "tlp", "flicker"]

Frames = Sequence[np.ndarray]


def _check_frames(frames: Frames, name: str, min_len: int = 2) -> None:
    if len(frames) < min_len:
        raise ValueError(f"{name} needs at least {min_len} frames, got {len(frames)}")
    shape = np.shape(frames[0])
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"{name} frames must be HxWx3 RGB, got shape {shape}")
    for i, f in enumerate(frames):
        if np.shape(f) != shape:
            raise ValueError(f"{name} frame {i} has shape {np.shape(f)}, frame 0 has {shape}")


def _check_pair(out: Frames, ref: Frames) -> None:
    _check_frames(out, "output")
    _check_frames(ref, "reference")
    if len(out) != len(ref) or np.shape(out[0]) != np.shape(ref[0]):
        raise ValueError(f"output ({len(out)} x {np.shape(out[0])}) and reference "
                         f"({len(ref)} x {np.shape(ref[0])}) sequences differ")


def _unit(frame: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> float32 in [0, 1]; float input is assumed to be in [0, 1] already."""
    arr = np.asarray(frame)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32, copy=False)
    raise ValueError(f"frames must be uint8 or float in [0, 1], got dtype {arr.dtype}")


def _gray8(frame: np.ndarray) -> np.ndarray:
    """HxWx3 RGB (uint8, or float in [0, 1]) -> HxW uint8 grayscale, the input optical flow expects."""
    arr = np.asarray(frame)
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(_unit(arr) * 255.0), 0, 255).astype(np.uint8)
    return cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2GRAY)


def _farneback(prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """TecoGAN's flow settings; HxWx2 float32 flow from prev to cur."""
    return cv2.calcOpticalFlowFarneback(prev, cur, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def tof(out_frames: Frames, ref_frames: Frames) -> float:
    """tOF (TecoGAN): mean over t of the per-pixel mean L2 norm of OF(out) - OF(ref), in pixels.

    OF is Farneback flow between consecutive grayscale frames (t-1 -> t). Identical sequences give 0.
    out_frames, ref_frames: T >= 2 HxWx3 RGB frames each, same shapes.
    """
    _check_pair(out_frames, ref_frames)
    out_g = [_gray8(f) for f in out_frames]
    ref_g = [_gray8(f) for f in ref_frames]
    vals = []
    for t in range(1, len(out_g)):
        diff = _farneback(out_g[t - 1], out_g[t]) - _farneback(ref_g[t - 1], ref_g[t])
        vals.append(float(np.mean(np.sqrt(np.sum(diff * diff, axis=2)))))
    return float(np.mean(vals))


def _dis_flow(dis: cv2.DISOpticalFlow, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return dis.calc(a, b, None)


def _sample(img: np.ndarray, grid_x: np.ndarray, grid_y: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward warp: out(x) = img(x + flow(x)), bilinear, zeros outside."""
    return cv2.remap(img, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _flows_and_masks(ref_frames: Frames) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each t: (flow t -> t+1 from the reference, HxW bool mask of non-occluded pixels).

    A pixel is kept when the forward flow lands inside the frame and the forward-backward check
    |F + B(x + F)|^2 <= 0.01 (|F|^2 + |B(x + F)|^2) + 0.5 holds (Sundaram et al. 2010).
    """
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    gray = [_gray8(f) for f in ref_frames]
    h, w = gray[0].shape
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    result = []
    for t in range(len(gray) - 1):
        fwd = _dis_flow(dis, gray[t], gray[t + 1])
        bwd = _dis_flow(dis, gray[t + 1], gray[t])
        bwd_at = _sample(bwd, grid_x, grid_y, fwd)
        cycle = np.sum((fwd + bwd_at) ** 2, axis=2)
        bound = 0.01 * (np.sum(fwd ** 2, axis=2) + np.sum(bwd_at ** 2, axis=2)) + 0.5
        tx, ty = grid_x + fwd[..., 0], grid_y + fwd[..., 1]
        inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
        result.append((fwd, (cycle <= bound) & inside))
    return result


def _warp_error(frames: Frames, flows: list[tuple[np.ndarray, np.ndarray]]) -> float:
    h, w = np.shape(frames[0])[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    vals = []
    for t, (fwd, mask) in enumerate(flows):
        if not mask.any():
            continue
        cur = _unit(frames[t])
        warped = _sample(np.ascontiguousarray(_unit(frames[t + 1])), grid_x, grid_y, fwd)
        sq = np.mean((cur - warped) ** 2, axis=2)
        vals.append(float(sq[mask].mean()))
    return float(np.mean(vals)) if vals else math.nan


def warping_error(frames: Frames, flow_source_frames: Frames) -> float:
    """Mean squared error between frame t and frame t+1 warped back to t with ground-truth flow.

    Flow comes from ``flow_source_frames`` (the ground truth; OpenCV DIS, MEDIUM preset), occluded
    pixels are dropped by a forward-backward check, the squared difference is averaged over
    channels and unmasked pixels, then over t. [0, 1] scale: uint8 frames are divided by 255, float
    frames must already be in [0, 1]. NaN if every pixel is occluded. It rewards blur, so report
    ``warping_error(out, gt) - warping_error(gt, gt)`` (see ``warping_error_gap``) next to PSNR/LPIPS.
    frames, flow_source_frames: T >= 2 HxWx3 RGB frames each, same shapes.
    """
    _check_pair(frames, flow_source_frames)
    return _warp_error(frames, _flows_and_masks(flow_source_frames))


def warping_errors(candidates: Sequence[Frames], flow_source_frames: Frames) -> list[float]:
    """`warping_error` of each candidate sequence along one motion, estimated once.

    The no-reference use: flow from the input (upsampled to the output size) ranks outputs of the
    same input by how well their content moves with the scene. candidates: sequences shaped like
    flow_source_frames (T >= 2 HxWx3 each)."""
    for frames in candidates:
        _check_pair(frames, flow_source_frames)
    flows = _flows_and_masks(flow_source_frames)
    return [_warp_error(frames, flows) for frames in candidates]


def warping_error_gap(out_frames: Frames, ref_frames: Frames) -> float:
    """``warping_error(out, ref) - warping_error(ref, ref)``, computing the reference flow once.

    The reference's own residual (flow error, lighting changes) cancels out; > 0 means the output
    is less consistent along the true motion than the ground truth is.
    """
    _check_pair(out_frames, ref_frames)
    flows = _flows_and_masks(ref_frames)
    return _warp_error(out_frames, flows) - _warp_error(ref_frames, flows)


def tmse(out_frames: Frames, ref_frames: Frames) -> float:
    """Flow-free tMSE: mean over t, pixels and channels of ((b[t] - b[t-1]) - (g[t] - g[t-1]))^2.

    [0, 1] scale (uint8 divided by 255, float taken as [0, 1]). Identical sequences give 0.
    out_frames, ref_frames: T >= 2 HxWx3 RGB frames each, same shapes.
    """
    _check_pair(out_frames, ref_frames)
    vals = []
    prev_b, prev_g = _unit(out_frames[0]), _unit(ref_frames[0])
    for t in range(1, len(out_frames)):
        cur_b, cur_g = _unit(out_frames[t]), _unit(ref_frames[t])
        d = (cur_b - prev_b) - (cur_g - prev_g)
        vals.append(float(np.mean(d * d)))
        prev_b, prev_g = cur_b, cur_g
    return float(np.mean(vals))


def tlp(out_frames: Frames, ref_frames: Frames, model: LPIPS | None = None) -> float:
    """tLP (TecoGAN): mean over t of |LPIPS(b[t-1], b[t]) - LPIPS(g[t-1], g[t])|.

    Frames must be uint8 (or float in [0, 255], as LPIPS takes them) and at least 31x31. Pass a
    shared ``model`` to avoid reloading the weights; raises ``VsrftError`` if they are not installed.
    """
    _check_pair(out_frames, ref_frames)
    model = model if model is not None else LPIPS()
    vals = []
    for t in range(1, len(out_frames)):
        vals.append(abs(model(out_frames[t - 1], out_frames[t]) - model(ref_frames[t - 1], ref_frames[t])))
    return float(np.mean(vals))


def flicker(frames: Frames, lr_frames: Frames | None = None, *,
            static_mask: np.ndarray | Sequence[np.ndarray] | None = None,
            threshold: float = 3.0 / 255.0) -> float:
    """No-reference flicker: mean |b[t] - b[t-1]| of the output where the input does not change.

    Real footage has no ground truth, but where the input is static a stable output should be too.
    Give either ``lr_frames`` (the input, any size: each is bicubic-upsampled to the output size and
    a pixel counts as static for pair (t-1, t) when its grayscale change is below ``threshold``, on
    the [0, 1] scale) or ``static_mask`` (one HxW bool mask for all pairs, or T-1 of them).
    The absolute change is averaged over channels and static pixels per pair, then over the pairs
    that have static pixels; [0, 1] scale. NaN if no pixel is static.
    frames: T >= 2 HxWx3 RGB output frames.
    """
    _check_frames(frames, "output")
    h, w = np.shape(frames[0])[:2]
    n_pairs = len(frames) - 1
    if (lr_frames is None) == (static_mask is None):
        raise ValueError("flicker needs exactly one of lr_frames or static_mask")
    if lr_frames is not None:
        _check_frames(lr_frames, "input")
        if len(lr_frames) != len(frames):
            raise ValueError(f"{len(lr_frames)} input frames for {len(frames)} output frames")
        up = []
        for f in lr_frames:
            g = _gray8(f).astype(np.float32) / 255.0
            up.append(g if g.shape == (h, w) else cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC))
        masks = [np.abs(up[t] - up[t - 1]) < threshold for t in range(1, len(up))]
    else:
        m = np.asarray(static_mask, dtype=bool)
        if m.shape == (h, w):
            masks = [m] * n_pairs
        elif m.shape == (n_pairs, h, w):
            masks = list(m)
        else:
            raise ValueError(f"static_mask must be {h}x{w} or {n_pairs}x{h}x{w}, got {m.shape}")
    vals = []
    prev = _unit(frames[0])
    for t in range(1, len(frames)):
        cur = _unit(frames[t])
        mask = masks[t - 1]
        if mask.any():
            vals.append(float(np.mean(np.abs(cur - prev), axis=2)[mask].mean()))
        prev = cur
    return float(np.mean(vals)) if vals else math.nan
