"""Global motion between the LR frames of a window, for the multi-frame data-fidelity loss.

A neighbour frame y_k sees the same scene as the centre frame y_t through a small camera
motion. With an affine W_k from y_k's pixels to y_t's, the centre's HR output x_t must also
explain the neighbour: A W_k x_t = y_k. The neighbours sample the scene at other sub-pixel
phases, so this constrains what the centre frame alone cannot (A's null space). The motion is
estimated on the LR frames (ECC, affine), which is accurate to a few hundredths of an LR pixel
where the scene moves as a whole; what moves otherwise is masked out by the loss.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def luma(rgb: np.ndarray) -> np.ndarray:
    """(h, w, 3) or (3, h, w) RGB on any scale -> (h, w) float32 luma on the same scale."""
    rgb = np.asarray(rgb, np.float32)
    if rgb.shape[0] == 3 and rgb.shape[-1] != 3:
        rgb = rgb.transpose(1, 2, 0)
    return rgb @ _LUMA


def global_motion(centre: np.ndarray, other: np.ndarray, *, max_shift: float = 0.25,
                  iterations: int = 100) -> np.ndarray | None:
    """(2, 3) affine taking `other`'s pixel coordinates to `centre`'s, or None when the frames
    do not align as a whole (ECC did not converge, or the motion is implausibly large).

    centre, other: (h, w) float32 luma. max_shift: largest translation as a fraction of the
    frame's smaller side. Coarse to fine (halving while the smaller side is >= 64), so that
    motions of several pixels converge too.
    """
    pyramid = [(centre, other)]
    while min(pyramid[-1][0].shape) >= 64 and len(pyramid) < 4:
        pyramid.append((cv2.pyrDown(pyramid[-1][0]), cv2.pyrDown(pyramid[-1][1])))
    warp = np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, 1e-6)
    for level, (a, b) in reversed(list(enumerate(pyramid))):
        try:
            _, warp = cv2.findTransformECC(b, a, warp, cv2.MOTION_AFFINE, criteria, None, 3)
        except cv2.error:
            return None
        if level:       # to the next finer level (pyrDown's pixel j is centred on pixel 2j)
            warp = warp.copy()
            warp[:, 2] *= 2
    if not np.isfinite(warp).all():
        return None
    linear = warp[:, :2] - np.eye(2, dtype=np.float32)
    if np.abs(linear).max() > 0.1 or np.abs(warp[:, 2]).max() > max_shift * min(centre.shape):
        return None
    return warp


def window_motions(frames: list[np.ndarray], centre: int) -> np.ndarray:
    """(len(frames), 2, 3) affines from each frame's pixels to frame `centre`'s; NaN where a
    frame does not align, or is the centre frame itself (a window repeats frames at shot ends)."""
    out = np.full((len(frames), 2, 3), np.nan, np.float32)
    ref = luma(frames[centre])
    for i, frame in enumerate(frames):
        if i == centre or frame is frames[centre]:
            continue
        warp = global_motion(ref, luma(frame))
        if warp is not None:
            out[i] = warp
    return out


def hr_crop_theta(motion: np.ndarray, scale: int, offset: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """(2, 3) `torch.nn.functional.affine_grid` matrix (align_corners=False) that warps an HR crop
    of the centre frame into a neighbour's view.

    motion: (2, 3) LR affine from the neighbour's pixels to the centre's. offset: the crop's
    top-left LR pixel (y, x), the same in both frames. size: the HR crop's (H, W). LR pixel
    centre i is HR coordinate s*i + (s-1)/2.
    """
    a, b = motion[:, :2].astype(np.float64), motion[:, 2].astype(np.float64)
    c = (scale - 1) / 2
    hr = np.eye(3)                                   # HR pixel affine, full-frame coordinates
    hr[:2, :2], hr[:2, 2] = a, scale * b + c - a @ np.array([c, c])
    shift = np.eye(3)
    shift[:2, 2] = scale * offset[1], scale * offset[0]
    crop = np.linalg.inv(shift) @ hr @ shift         # the same, in the crop's pixel coordinates
    h, w = size
    norm = np.array([[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1], [0, 0, 1]])   # pixel -> [-1, 1]
    return (norm @ crop @ np.linalg.inv(norm))[:2].astype(np.float32)


def hr_sampling_grid(motion: np.ndarray, scale: int, offset: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """(H, W, 2) `grid_sample` grid of `hr_crop_theta`: for each HR pixel of the neighbour's
    crop, where it lies in the centre's crop, normalised to [-1, 1]."""
    theta = torch.from_numpy(hr_crop_theta(motion, scale, offset, size))[None]
    return F.affine_grid(theta, [1, 1, *size], align_corners=False)[0]
