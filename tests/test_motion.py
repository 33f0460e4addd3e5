"""Global motion for the multi-frame loss: the estimate, and the HR warp it drives, on real frames."""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from helpers import SAMPLE, decoded_rgb
from vsrft.adapt.finetune import TrainingWindow
from vsrft.adapt.motion import (chain_motions, global_motion, hr_sampling_grid, luma, motion_between,
                                motion_view, window_motions)
from vsrft.degradation import Degradation, degrade, degrade_torch

SCALE = 4


def _camera(hr: np.ndarray, dx: float, dy: float, angle: float = 0.0) -> np.ndarray:
    """The HR frame a camera moved by (dx, dy) HR pixels and rotated by `angle` degrees would see:
    its pixel p shows the scene at M p."""
    h, w = hr.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    m[:, 2] += (dx, dy)
    return cv2.warpAffine(hr, m, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)


def _scene() -> np.ndarray:
    frame = decoded_rgb(SAMPLE)[34]
    h, w = frame.shape[0] // SCALE * SCALE, frame.shape[1] // SCALE * SCALE
    return np.ascontiguousarray(frame[:h, :w]).astype(np.float32)


def test_global_motion_finds_a_sub_pixel_shift_of_a_real_frame() -> None:
    hr = _scene()
    op = Degradation(SCALE)
    centre = degrade(hr, op)
    other = degrade(_camera(hr, 5.0, -3.0), op)          # 1.25, -0.75 LR pixels
    warp = global_motion(luma(centre), luma(other))
    assert warp is not None
    assert np.abs(warp[:, :2] - np.eye(2)).max() < 0.01
    assert abs(warp[0, 2] - 1.25) < 0.05 and abs(warp[1, 2] + 0.75) < 0.05


def test_the_hr_warp_of_the_centre_explains_the_neighbour() -> None:
    # A W_k x_t = y_k: the centre's HR frame, warped by the motion estimated on LR frames alone,
    # then degraded, reproduces the neighbour's LR frame; without the warp it does not.
    hr = _scene()
    op = Degradation(SCALE, blur_sigma=1.6)
    moved = _camera(hr, 6.0, 2.0, angle=0.5)
    centre, other = degrade(hr, op), degrade(moved, op)
    warp = global_motion(luma(centre), luma(other))
    assert warp is not None
    x = torch.from_numpy(hr.transpose(2, 0, 1))[None] / 255
    offset, size = (3, 5), (24, 32)                    # an LR crop, as the fine-tuner samples them
    crop = x[..., SCALE * offset[0]:SCALE * (offset[0] + size[0]), SCALE * offset[1]:SCALE * (offset[1] + size[1])]
    grid = hr_sampling_grid(warp, SCALE, offset, (SCALE * size[0], SCALE * size[1]))[None]
    warped = F.grid_sample(crop, grid, mode="bicubic", padding_mode="border", align_corners=False)
    target = torch.from_numpy(other.transpose(2, 0, 1))[None, :, offset[0]:offset[0] + size[0],
                                                         offset[1]:offset[1] + size[1]] / 255
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))    # away from the crop's edges
    err_warped = (degrade_torch(warped, op) - target)[inner].abs().mean().item()
    err_unwarped = (degrade_torch(crop, op) - target)[inner].abs().mean().item()
    assert err_warped < 1.5 / 255
    assert err_warped < 0.2 * err_unwarped


def test_frames_that_do_not_align_are_left_out() -> None:
    hr = _scene()
    op = Degradation(SCALE)
    centre = degrade(hr, op)
    noise = np.random.default_rng(0).uniform(0, 255, centre.shape).astype(np.float32)
    shifted = degrade(_camera(hr, 4.0, 0.0), op)
    motions = window_motions([shifted, centre, noise], 1)
    assert np.isfinite(motions[0]).all() and abs(motions[0][0, 2] - 1.0) < 0.05
    assert np.isnan(motions[1]).all() and np.isnan(motions[2]).all()
    frames = [f.astype(np.uint8) for f in (shifted, centre, noise)]
    win = TrainingWindow.from_frames(np.zeros((12, *centre.shape[:2]), np.float32), frames, neighbours=True)
    assert win.neighbours is not None and win.neighbours.shape == (1, 3, *centre.shape[:2])
    assert TrainingWindow.from_frames(win.stack, frames, neighbours=False).neighbours is None


def test_phase_correlation_start_aligns_a_motion_of_several_pixels() -> None:
    # ECC started from no motion lands at (-27, -13) here
    frame = decoded_rgb(SAMPLE)[34].astype(np.float32)
    other = _camera(frame, 20.0, -11.0)
    warp = global_motion(luma(frame), luma(other))
    assert warp is not None
    assert abs(warp[0, 2] - 20.0) < 0.1 and abs(warp[1, 2] + 11.0) < 0.1


def test_motion_estimated_on_a_view_at_twice_the_lr_size_is_in_lr_pixels() -> None:
    # the engine estimates on the network's output at 2x the LR size; the fine-tuner needs LR units
    hr = _scene()
    h, w = hr.shape[:2]
    moved = _camera(hr, 6.0, -5.0, angle=0.4)        # its pixel p shows the scene at M p
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 0.4, 1.0)
    m[:, 2] += (6.0, -5.0)
    c = (SCALE - 1) / 2                               # LR pixel i is HR coordinate SCALE * i + c
    truth = np.concatenate([m[:, :2], ((m[:, 2] - c + m[:, :2] @ [c, c]) / SCALE)[:, None]], 1)
    views = [motion_view(f.transpose(2, 0, 1) / 255, (h // SCALE, w // SCALE)) for f in (hr, moved)]
    assert views[0].shape == (2 * h // SCALE, 2 * w // SCALE)
    warp = global_motion(*views, resolution=2)
    assert warp is not None
    assert np.abs(warp[:, :2] - truth[:, :2]).max() < 0.003
    assert np.abs(warp[:, 2] - truth[:, 2]).max() < 0.04         # LR pixels (a view's pixel is 0.5)


def test_chained_motions_compose_to_the_direct_estimate() -> None:
    # the engine estimates consecutive frames only and composes the rest; both directions
    hr = _scene()
    path = [_camera(hr, 3.0 * i, -2.0 * i, angle=0.2 * i) for i in range(3)]
    views = [motion_view(f.transpose(2, 0, 1) / 255, (hr.shape[0] // SCALE, hr.shape[1] // SCALE)) for f in path]
    chain = chain_motions(views, 2)
    assert len(chain) == 2 and all(m is not None for m in chain)
    direct = global_motion(views[0], views[2], resolution=2)
    composed = motion_between(chain, 2, 0)
    assert np.abs(composed - direct).max() < 0.03
    back = np.vstack([motion_between(chain, 0, 2), [0, 0, 1]]) @ np.vstack([composed, [0, 0, 1]])
    assert np.abs(back - np.eye(3)).max() < 1e-5
    assert np.abs(motion_between(chain, 1, 0) - chain[0]).max() < 1e-6
    assert motion_between([chain[0], None], 2, 0) is None
