"""Global motion between the LR frames of a window, for the multi-frame data-fidelity loss.

A neighbour frame y_k sees the same scene as the centre frame y_t through a small camera
motion. With an affine W_k from y_k's pixels to y_t's, the centre's HR output x_t must also
explain the neighbour: A W_k x_t = y_k. The neighbours sample the scene at other sub-pixel
phases, so this constrains what the centre frame alone cannot (A's null space). The motion is
estimated by ECC (affine) from a phase-correlation start, on the network's own output at twice
the LR resolution where the caller has it (`motion_view`), else on the LR frames. LR frames alias
fine texture, and aliasing changes with the sub-pixel phase that the motion is made of: on a
wood-grain sequence LR ECC aligned 2 of 20 frame pairs, and on a heron photo its warps matched
the ground truth to 39 dB against 46 dB from the output (`benchmarks/motion_accuracy.py`).
What moves otherwise than the scene as a whole is masked out by the loss.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

MOTION_RESOLUTION = 2       # motion is estimated on the network's output at this multiple of the LR size
# ECC iterations on the output views: from the phase-correlation start 20 reach what 100 did
# (ground-truth warp PSNR 39.87 against 39.82 dB on the benchmark set, 43.49 against 43.49 on
# the third) at 57 against 81 ms per 640x360 pair on the speed clip. Not on LR frames: there a
# capped ECC returns a wrong motion where 100 iterations diverge and are rejected (Wood: 9 of
# 20 pairs "aligned" at 23.8 dB).
VIEW_ITERATIONS = 20
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def luma(rgb: np.ndarray) -> np.ndarray:
    """(h, w, 3) or (3, h, w) RGB on any scale -> (h, w) float32 luma on the same scale."""
    rgb = np.asarray(rgb, np.float32)
    if rgb.shape[0] == 3 and rgb.shape[-1] != 3:
        rgb = rgb.transpose(1, 2, 0)
    return rgb @ _LUMA


def global_motion(centre: np.ndarray, other: np.ndarray, *, resolution: float = 1, max_shift: float = 0.25,
                  iterations: int = 100) -> np.ndarray | None:
    """(2, 3) affine taking `other`'s LR pixel coordinates to `centre`'s, or None when the frames
    do not align as a whole (ECC did not converge, or the motion is implausibly large).

    centre, other: (h, w) float32 luma at `resolution` times the LR frames' size (see
    `motion_view`). max_shift: largest translation as a fraction of the frame's smaller side.
    Phase correlation finds the translation, which starts ECC: motions of several pixels converge,
    over periodic texture too, where ECC from no motion (even coarse to fine) fell into the wrong period.
    """
    window = cv2.createHanningWindow(centre.shape[::-1], cv2.CV_64F)
    # phaseCorrelate writes into float32 inputs when given a window (OpenCV 5): float64 copies
    (dx, dy), _ = cv2.phaseCorrelate(other.astype(np.float64), centre.astype(np.float64), window)
    warp = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, 1e-6)
    try:
        _, warp = cv2.findTransformECC(other, centre, warp, cv2.MOTION_AFFINE, criteria, None, 3)
    except cv2.error:
        return None
    if not np.isfinite(warp).all():
        return None
    linear = warp[:, :2].astype(np.float64)
    # view pixel centre j is LR coordinate (j - c) / r with c = (r - 1) / 2
    c = (resolution - 1) / 2
    shift = (warp[:, 2] - c + linear @ np.array([c, c])) / resolution
    lr_size = min(centre.shape) / resolution
    if np.abs(linear - np.eye(2)).max() > 0.1 or np.abs(shift).max() > max_shift * lr_size:
        return None
    return np.concatenate([linear, shift[:, None]], 1).astype(np.float32)


def motion_view(hr: np.ndarray, lr_shape: tuple[int, int], resolution: int = MOTION_RESOLUTION) -> np.ndarray:
    """(3, H, W) network output in [0, 1] -> (r*h, r*w) float32 luma (0..255 scale) at `resolution`
    times the LR size (h, w): what motion is estimated on. Twice the LR size matched the full
    output's accuracy at a third of its ECC time."""
    h, w = lr_shape
    y = luma(hr) * np.float32(255)
    size = (resolution * w, resolution * h)
    return y if y.shape[::-1] == size else cv2.resize(y, size, interpolation=cv2.INTER_AREA)


def window_motions(frames: list[np.ndarray], centre: int) -> np.ndarray:
    """(len(frames), 2, 3) affines from each frame's pixels to frame `centre`'s, estimated on the
    LR frames (see `chain_motions` for the engine's estimate); NaN where a frame does not align,
    or is the centre frame itself (a window repeats frames at shot ends)."""
    out = np.full((len(frames), 2, 3), np.nan, np.float32)
    ref = luma(frames[centre])
    for i, frame in enumerate(frames):
        if i == centre or frame is frames[centre]:
            continue
        warp = global_motion(ref, luma(frame))
        if warp is not None:
            out[i] = warp
    return out


def chain_motions(views: list[np.ndarray], resolution: float = 1,
                  iterations: int = VIEW_ITERATIONS) -> list[np.ndarray | None]:
    """Motion between consecutive frames: item i is the affine from frame i+1's LR pixels to
    frame i's (None where they do not align). views: one per frame in stream order
    (`motion_view`s at `resolution`, or LR luma at 1). One estimate per frame, instead of one
    per (window, neighbour) pair: ECC on a 640x360 view costs ~60 ms."""
    return [global_motion(a, b, resolution=resolution, iterations=iterations) for a, b in zip(views, views[1:])]


def motion_between(chain: list[np.ndarray | None], source: int, target: int) -> np.ndarray | None:
    """(2, 3) affine from frame `source`'s LR pixels to frame `target`'s, composed along `chain`
    (see `chain_motions`); None where a link is missing."""
    if source > target:     # target <- target+1 <- ... <- source: chain[target] ... chain[source-1]
        links = [(chain[i], False) for i in range(target, source)]
    else:                   # target <- target-1 <- ... <- source: inverses of chain[target-1] ... chain[source]
        links = [(chain[i], True) for i in range(target - 1, source - 1, -1)]
    total = np.eye(3)
    for link, inverse in links:
        if link is None:
            return None
        m = np.eye(3)
        m[:2] = link
        total = total @ (np.linalg.inv(m) if inverse else m)
    return total[:2].astype(np.float32)


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
