"""Training windows synthesised from still photos with camera-like motion, and from real clips.

A sample is (lr, hr): lr (5*3, p, p) float in [0, 1] quantised to 8 bits, hr (3, s*p, s*p),
the centre frame's ground truth.  Motion per window: a pan of a few HR pixels per frame,
a small zoom and rotation, plus sub-pixel jitter, so the network learns to fuse real
sub-pixel shifts.  LR frames come from the same operator A the engine uses.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from vsrft.degradation import Degradation, degrade_torch

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
VIDEO_EXTS = {".mp4", ".mkv", ".avi", ".mov", ".webm"}


def is_held_out(path: Path, fraction: float) -> bool:
    """Deterministic split by file name, so training and validation agree without a list file."""
    h = int(hashlib.sha1(path.name.encode()).hexdigest()[:8], 16)
    return (h % 1000) < fraction * 1000


def find_media(folders: list[str | Path]) -> tuple[list[Path], list[Path]]:
    images, videos = [], []
    for folder in folders:
        folder = Path(folder)
        files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
        for p in files:
            ext = p.suffix.lower()
            if ext in IMAGE_EXTS:
                images.append(p)
            elif ext in VIDEO_EXTS:
                videos.append(p)
    return images, videos


def load_photo(path: Path, max_side: int = 1600) -> np.ndarray | None:
    """RGB uint8; photos larger than max_side are halved (antialiased) to wash out compression."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None or min(img.shape[:2]) < 96:
        return None
    while max(img.shape[:2]) > max_side:
        img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_clip_frames(path: Path, max_frames: int = 300) -> list[np.ndarray]:
    import av
    frames = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            if len(frames) >= max_frames:
                break
    return frames


@dataclass
class Motion:
    """Camera motion per frame in HR pixels / radians / relative zoom."""
    max_pan: float = 4.0
    max_zoom: float = 0.01
    max_rot: float = math.radians(0.6)
    jitter: float = 0.5


def camera_window(img: np.ndarray, size: int, frames: int, rng: np.random.Generator,
                  motion: Motion = Motion()) -> np.ndarray | None:
    """(frames, size, size, 3) uint8: a virtual camera moving over a still photo."""
    h, w = img.shape[:2]
    vx, vy = rng.uniform(-motion.max_pan, motion.max_pan, 2)
    dz = rng.uniform(-motion.max_zoom, motion.max_zoom)
    dr = rng.uniform(-motion.max_rot, motion.max_rot)
    margin = size * 0.75 + frames * (abs(vx) + abs(vy)) + 8
    if w < 2 * margin or h < 2 * margin:
        return None
    cx, cy = rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)
    base_zoom = rng.uniform(0.8, 1.0)
    out = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        k = t - frames // 2
        z = base_zoom * (1 + dz * k)
        a = dr * k
        jx, jy = rng.uniform(-motion.jitter, motion.jitter, 2) if k else (0.0, 0.0)
        px, py = cx + vx * k + jx, cy + vy * k + jy
        ca, sa = math.cos(a) * z, math.sin(a) * z
        # output pixel (u, v) samples the photo at centre + R·z·(u - size/2, v - size/2)
        m = np.array([[ca, -sa, px - ca * size / 2 + sa * size / 2],
                      [sa, ca, py - sa * size / 2 - ca * size / 2]], np.float32)
        out[t] = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_REFLECT)
    return out


def clip_window(frames: list[np.ndarray], size: int, n: int, rng: np.random.Generator) -> np.ndarray | None:
    h, w = frames[0].shape[:2]
    if h < size or w < size or len(frames) < n:
        return None
    t0 = int(rng.integers(0, len(frames) - n + 1))
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return np.stack([f[y:y + size, x:x + size] for f in frames[t0:t0 + n]])


class WindowSampler:
    """Draws batches of (lr windows, hr centre frames) from photos and clips."""

    def __init__(self, photos: list[np.ndarray], clips: list[list[np.ndarray]], op: Degradation,
                 lr_patch: int = 48, frames: int = 5, clip_share: float = 0.2, seed: int = 0) -> None:
        if not photos and not clips:
            raise ValueError("no training media: give folders with photos or clips")
        self.photos, self.clips, self.op = photos, clips, op
        self.lr_patch, self.frames, self.clip_share = lr_patch, frames, clip_share
        self.rng = np.random.default_rng(seed)

    def _one(self) -> np.ndarray:
        size = self.lr_patch * self.op.scale
        for _ in range(1000):
            if self.clips and (not self.photos or self.rng.random() < self.clip_share):
                win = clip_window(self.clips[int(self.rng.integers(len(self.clips)))], size, self.frames, self.rng)
            else:
                win = camera_window(self.photos[int(self.rng.integers(len(self.photos)))], size, self.frames, self.rng)
            if win is None:
                continue
            if self.rng.random() < 0.5:
                win = win[:, :, ::-1]
            if self.rng.random() < 0.5:
                win = win[::-1]          # time reversal is also plausible motion
            return np.ascontiguousarray(win)
        raise ValueError(f"no photo or clip is large enough for {size}x{size} HR windows with motion; "
                         "use larger images or a smaller --lr-patch")

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        hr = torch.from_numpy(np.stack([self._one() for _ in range(n)])).float().div_(255)  # (n,T,S,S,3)
        n_, t, s, _, _ = hr.shape
        hr = hr.permute(0, 1, 4, 2, 3).reshape(n_ * t, 3, s, s)
        lr = degrade_torch(hr, self.op).clamp_(0, 1).mul_(255).round_().div_(255)
        lr = lr.reshape(n_, t * 3, s // self.op.scale, s // self.op.scale)
        centre = hr.reshape(n_, t, 3, s, s)[:, t // 2]
        return lr, centre
