"""The degradation operator A (blur, then downsampling by the scale) and its resamplers.

Everything here is a separable linear map written as explicit matrices, so the same
numbers are used by training (PyTorch), adaptation (PyTorch, differentiable), the
runtime's output resampling (NumPy) and `vsrft degrade`. Matrices follow PIL's
antialiased bicubic (a = -0.5, support widened by the downscale factor), which is what
``torch.nn.functional.interpolate(..., mode="bicubic", antialias=True)`` also computes.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:   # torch stays an optional import for the NumPy-only paths
    import torch


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    return np.where(
        x <= 1,
        ((a + 2) * x - (a + 3)) * x * x + 1,
        np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0),
    )


@lru_cache(maxsize=256)
def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 matrix of antialiased bicubic resampling along one axis."""
    ratio = n_in / n_out
    support_scale = max(ratio, 1.0)
    support = 2.0 * support_scale
    m = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        center = (i + 0.5) * ratio
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        j = np.arange(lo, hi)
        w = _cubic((j + 0.5 - center) / support_scale)
        total = w.sum()
        if total != 0:
            w = w / total
        m[i, lo:hi] = w
    m.setflags(write=False)
    return m.astype(np.float32)


@lru_cache(maxsize=64)
def gaussian_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) matrix of a 1-D Gaussian blur with edge replication; kernel size the odd >= 6 sigma."""
    if sigma <= 0:
        return np.eye(n, dtype=np.float32)
    size = int(math.ceil(6 * sigma)) | 1
    r = size // 2
    taps = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    taps /= taps.sum()
    m = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        for k, t in zip(range(-r, r + 1), taps):
            m[i, min(max(i + k, 0), n - 1)] += t
    return m.astype(np.float32)


@dataclass(frozen=True)
class Degradation:
    """A = D_scale · B: optional blur (Gaussian sigma in HR pixels, or a 2-D kernel) then bicubic down.

    A value object: printable, comparable, saved as JSON next to adapted weights.
    """

    scale: int = 4
    blur_sigma: float = 0.0
    kernel: tuple[tuple[float, ...], ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise ValueError(f"scale must be >= 1, got {self.scale}")
        if self.blur_sigma < 0:
            raise ValueError(f"blur sigma must be >= 0, got {self.blur_sigma}")
        if self.kernel is not None:
            k = np.asarray(self.kernel, dtype=np.float64)
            if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
                raise ValueError(f"blur kernel must be a 2-D array of odd size, got shape {k.shape}")
            if not np.isfinite(k).all() or abs(k.sum()) < 1e-8:
                raise ValueError("blur kernel must be finite with a non-zero sum")

    @classmethod
    def from_kernel_file(cls, path: str | Path, scale: int) -> "Degradation":
        k = np.load(path)
        k = np.asarray(k, dtype=np.float64)
        k = k / k.sum()
        return cls(scale=scale, kernel=tuple(tuple(float(v) for v in row) for row in k))

    def to_json(self) -> str:
        return json.dumps({"scale": self.scale, "blur_sigma": self.blur_sigma,
                           "kernel": None if self.kernel is None else [list(r) for r in self.kernel]})

    @classmethod
    def from_json(cls, text: str) -> "Degradation":
        d = json.loads(text)
        kernel = None if d.get("kernel") is None else tuple(tuple(r) for r in d["kernel"])
        return cls(scale=int(d["scale"]), blur_sigma=float(d.get("blur_sigma", 0.0)), kernel=kernel)

    def __str__(self) -> str:
        blur = (f"gaussian(sigma={self.blur_sigma:g})" if self.blur_sigma > 0
                else ("kernel" + str(np.asarray(self.kernel).shape) if self.kernel is not None else "none"))
        return f"A = bicubic_down(x{self.scale}) . blur[{blur}]"

    def axis_matrices(self, hr_h: int, hr_w: int) -> tuple[np.ndarray, np.ndarray]:
        """Separable (LR_h, HR_h) and (LR_w, HR_w) matrices of the whole operator (blur folded in)."""
        return _axis_matrices(self, hr_h, hr_w)


def lr_deblur_taps(op: Degradation, nsr: float = 1e-3, radius: int = 5) -> np.ndarray | None:
    """1-D taps (2*radius+1, summing to 1) that undo A's Gaussian blur in the LR domain, or None.

    Why: a Gaussian of sigma HR pixels before an antialiased downsampling by s is, to first order,
    a Gaussian of sigma/s LR pixels after it (the two convolutions commute and the antialiased
    image is nearly band-limited). So blurred footage is `g_{sigma/s} * D x`, and filtering it
    with the inverse of that small LR Gaussian gives the network `D x`, the bicubic-only input
    it was trained on. The LR blur is mild (gain 0.45 at Nyquist for sigma 1.6 at x4), so a
    regularised (Wiener, noise-to-signal `nsr`) inverse is well conditioned; it is applied along
    each axis. Kernels from files have no such closed form: None, as for no blur.
    """
    if op.kernel is not None or op.blur_sigma <= 0:
        return None
    sigma_lr = op.blur_sigma / op.scale
    f = (np.arange(4096) + 0.5) / 4096 - 0.5          # midpoints of one period of the LR spectrum
    g = np.exp(-2 * np.pi ** 2 * sigma_lr ** 2 * f ** 2)
    response = g / (g ** 2 + nsr)
    taps = np.array([np.mean(response * np.cos(2 * np.pi * f * k)) for k in range(-radius, radius + 1)])
    return (taps / taps.sum()).astype(np.float32)


@lru_cache(maxsize=64)
def _axis_matrices(op: Degradation, hr_h: int, hr_w: int) -> tuple[np.ndarray, np.ndarray]:
    """Cached per operator and frame size: the engine asks for the same ones every frame."""
    lr_h, lr_w = hr_h // op.scale, hr_w // op.scale
    mh, mw = resize_matrix(hr_h, lr_h), resize_matrix(hr_w, lr_w)
    if op.blur_sigma > 0:
        mh = mh @ gaussian_matrix(hr_h, op.blur_sigma)
        mw = mw @ gaussian_matrix(hr_w, op.blur_sigma)
    return mh, mw


def apply_separable(x: np.ndarray, mh: np.ndarray, mw: np.ndarray) -> np.ndarray:
    """Apply row/column matrices to an image. x: (H, W, C) or (H, W) float32 -> (h, w[, C])."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        return mh @ x @ mw.T
    y = np.tensordot(mh, x, axes=([1], [0]))          # (h, W, C)
    return np.tensordot(y, mw, axes=([1], [1])).transpose(0, 2, 1)  # (h, w, C)


def resize(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Antialiased bicubic resize of a float (H, W[, C]) image; the runtime's x2/x3 resampler."""
    return apply_separable(x, resize_matrix(x.shape[0], out_h), resize_matrix(x.shape[1], out_w))


def degrade(hr: np.ndarray, op: Degradation) -> np.ndarray:
    """A x for a float (H, W[, C]) image in NumPy: blur, then downsample by op.scale."""
    if op.kernel is not None:
        import cv2
        k = np.asarray(op.kernel, dtype=np.float32)
        hr = cv2.filter2D(np.asarray(hr, np.float32), -1, k[::-1, ::-1].copy(), borderType=cv2.BORDER_REPLICATE)
    mh, mw = op.axis_matrices(hr.shape[0], hr.shape[1])
    return apply_separable(hr, mh, mw)


def degrade_torch(hr: "torch.Tensor", op: Degradation) -> "torch.Tensor":
    """Differentiable A x. hr: (N, C, H, W) float -> (N, C, H // s, W // s)."""
    import torch
    import torch.nn.functional as F

    if op.kernel is not None:
        k = torch.tensor(op.kernel, dtype=hr.dtype, device=hr.device)
        kh, kw = k.shape
        c = hr.shape[1]
        hr = F.pad(hr, (kw // 2, kw // 2, kh // 2, kh // 2), mode="replicate")
        hr = F.conv2d(hr, k.expand(c, 1, kh, kw), groups=c)
    mh, mw = op.axis_matrices(hr.shape[-2], hr.shape[-1])
    return resize_torch_with(hr, mh, mw)


def resize_torch_with(x: "torch.Tensor", mh: np.ndarray, mw: np.ndarray) -> "torch.Tensor":
    """Apply separable matrices to (N, C, H, W): returns (N, C, mh.rows, mw.rows)."""
    import torch

    th = torch.from_numpy(np.ascontiguousarray(mh)).to(x.device, x.dtype)
    tw = torch.from_numpy(np.ascontiguousarray(mw)).to(x.device, x.dtype)
    return th @ x @ tw.T


def resize_torch(x: "torch.Tensor", out_h: int, out_w: int) -> "torch.Tensor":
    """Differentiable antialiased bicubic resize of (N, C, H, W), identical to `resize`."""
    return resize_torch_with(x, resize_matrix(x.shape[-2], out_h), resize_matrix(x.shape[-1], out_w))


@lru_cache(maxsize=32)
def pinv_matrices(op: Degradation, hr_h: int, hr_w: int) -> tuple[np.ndarray, np.ndarray]:
    """(HR_h, LR_h) and (HR_w, LR_w) pseudo-inverses of A's separable factors: A^+ = Mh^+ (x) Mw^+."""
    mh, mw = op.axis_matrices(hr_h, hr_w)
    return (np.linalg.pinv(mh.astype(np.float64), rcond=1e-4).astype(np.float32),
            np.linalg.pinv(mw.astype(np.float64), rcond=1e-4).astype(np.float32))


def pinv_apply_torch(r: "torch.Tensor", op: Degradation) -> "torch.Tensor":
    """A^+ r for a separable A: the HR correction the exact projection would make.
    r: (..., h, w) LR residual -> (..., s*h, s*w)."""
    import torch

    h, w = r.shape[-2:]
    ph, pw = pinv_matrices(op, h * op.scale, w * op.scale)
    return torch.from_numpy(ph) @ r @ torch.from_numpy(pw).T


def project(hr: np.ndarray, lr: np.ndarray, op: Degradation, strength: float = 1.0) -> np.ndarray:
    """Exact data-consistency projection x + A^+ (y - A x) for a separable A.

    hr: (3, H, W) float, lr: (3, h, w) float -> (3, H, W). A = Mh (x) Mw, so A^+ = Mh^+ (x) Mw^+.
    `strength` < 1 damps it for compressed or noisy inputs. Fixes only what y constrains.
    """
    if op.kernel is not None:
        raise ValueError("the projection needs a separable operator (Gaussian or no blur), not a 2-D kernel")
    mh, mw = op.axis_matrices(hr.shape[1], hr.shape[2])
    ph, pw = pinv_matrices(op, hr.shape[1], hr.shape[2])
    residual = lr - np.matmul(np.matmul(mh, hr), mw.T)
    return hr + strength * np.matmul(np.matmul(ph, residual), pw.T)
