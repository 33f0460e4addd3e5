"""Per-frame fidelity metrics (PSNR, SSIM) computed the way SR papers report them.

Numbers are only comparable with published ones if the colour conversion, border crop and SSIM
window match the common SR evaluation code (BasicSR / the MATLAB scripts), so those choices are
fixed here rather than left to callers:

- Y is BT.601 "studio swing" luma as MATLAB's ``rgb2ycbcr``: ``16 + 65.481 R + 128.553 G + 24.966 B``
  with RGB in [0, 1]; the result stays a float in [0, 255] (not rounded to uint8).
- ``border`` pixels are cropped from each side before measuring (use the SR scale factor).
- SSIM is Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, L = 255,
  evaluated only where the window fits inside the (cropped) image.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["y_channel", "psnr_y", "ssim_y", "psnr_rgb"]

_DATA_RANGE = 255.0
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64)


def _as_rgb_float(img: np.ndarray, name: str = "image") -> np.ndarray:
    """HxWx3 uint8 (or float in [0, 255]) -> HxWx3 float64 in [0, 255]; rejects other layouts."""
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{name} must be an HxWx3 RGB array, got shape {arr.shape}")
    if not (arr.dtype == np.uint8 or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must be uint8 or float in [0, 255], got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _check_pair(out: np.ndarray, ref: np.ndarray) -> None:
    if np.shape(out) != np.shape(ref):
        raise ValueError(f"output and reference differ in shape: {np.shape(out)} vs {np.shape(ref)}")


def _crop(img: np.ndarray, border: int) -> np.ndarray:
    """Drop ``border`` pixels on each side (rows and columns); the SR convention for scale-sized edges."""
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    if border == 0:
        return img
    h, w = img.shape[:2]
    if 2 * border >= h or 2 * border >= w:
        raise ValueError(f"border {border} leaves nothing of a {h}x{w} image")
    return img[border:h - border, border:w - border]


def y_channel(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma as MATLAB ``rgb2ycbcr`` (the SR-paper convention), unrounded.

    rgb: HxWx3 RGB, uint8 or float in [0, 255]. Returns HxW float64 in [16, 235] for in-range input.
    """
    arr = _as_rgb_float(rgb)
    return 16.0 + (arr @ _Y_WEIGHTS) / 255.0


def _psnr_from_mse(mse: float) -> float:
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(_DATA_RANGE ** 2 / mse)


def psnr_y(out: np.ndarray, ref: np.ndarray, border: int = 0) -> float:
    """PSNR in dB on the Y channel, ``border`` pixels cropped per side; ``math.inf`` if identical.

    out, ref: HxWx3 RGB, uint8 or float in [0, 255], same shape.
    """
    _check_pair(out, ref)
    diff = _crop(y_channel(out), border) - _crop(y_channel(ref), border)
    return _psnr_from_mse(float(np.mean(diff * diff)))


def psnr_rgb(out: np.ndarray, ref: np.ndarray, border: int = 0) -> float:
    """PSNR in dB over all three RGB channels (MSE pooled over channels); ``math.inf`` if identical.

    out, ref: HxWx3 RGB, uint8 or float in [0, 255], same shape.
    """
    _check_pair(out, ref)
    diff = _crop(_as_rgb_float(out, "output"), border) - _crop(_as_rgb_float(ref, "reference"), border)
    return _psnr_from_mse(float(np.mean(diff * diff)))


def _ssim_plane(x: np.ndarray, y: np.ndarray) -> float:
    """Mean SSIM of two HxW float64 planes in [0, 255], window positions fully inside the image only."""
    c1 = (0.01 * _DATA_RANGE) ** 2
    c2 = (0.03 * _DATA_RANGE) ** 2
    g = cv2.getGaussianKernel(11, 1.5)
    window = g @ g.T
    r = 5  # half window: keep only 'valid' positions, as the reference SR code does
    if x.shape[0] <= 2 * r or x.shape[1] <= 2 * r:
        raise ValueError(f"SSIM needs at least 11x11 pixels, got {x.shape[0]}x{x.shape[1]}")

    def filt(a: np.ndarray) -> np.ndarray:
        return cv2.filter2D(a, -1, window)[r:-r, r:-r]

    mu_x, mu_y = filt(x), filt(y)
    mu_x2, mu_y2, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x = filt(x * x) - mu_x2
    var_y = filt(y * y) - mu_y2
    cov = filt(x * y) - mu_xy
    ssim_map = ((2 * mu_xy + c1) * (2 * cov + c2)) / ((mu_x2 + mu_y2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


def ssim_y(out: np.ndarray, ref: np.ndarray, border: int = 0) -> float:
    """SSIM (Wang et al., Gaussian 11x11, sigma 1.5) on the Y channel, ``border`` cropped per side.

    out, ref: HxWx3 RGB, uint8 or float in [0, 255], same shape; the cropped image must be >= 11x11.
    Returns 1.0 for identical inputs.
    """
    _check_pair(out, ref)
    return _ssim_plane(_crop(y_channel(out), border), _crop(y_channel(ref), border))
