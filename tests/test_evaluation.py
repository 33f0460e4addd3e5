"""Tests for vsrft.evaluation: the held-out set, degradation, metrics per sequence, the table, the script.

Small synthetic data only (scikit-image's bundled photos, a few frames of ~96x64), never /work/data.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from vsrft.degradation import Degradation, degrade
from vsrft.evaluation import (BICUBIC, GROUND_TRUTH, EvalSequence, bar_checks, bicubic_sequence, clip_sequences,
                              degrade_sequence, evaluate, model_table, photo_sequences, split_method, to_markdown,
                              upscale_sequence)
from vsrft.metrics import lpips_available
from vsrft.train.data import camera_window, is_held_out

skimage_data = pytest.importorskip("skimage.data")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.ascontiguousarray(skimage_data.astronaut())          # 512x512 RGB


@pytest.fixture(scope="module")
def seq(photo: np.ndarray) -> EvalSequence:
    """8 frames of 96x64 camera motion over the astronaut."""
    win = camera_window(photo, 96, 8, np.random.default_rng(3))
    assert win is not None
    return EvalSequence("synthetic", [np.ascontiguousarray(f[16:80]) for f in win], "test")


# ---------------------------------------------------------------- degrade / upscale

def test_degrade_sequence_shape_dtype_and_operator(seq: EvalSequence) -> None:
    op = Degradation(scale=4)
    lr = degrade_sequence(seq.frames, op)
    assert len(lr) == len(seq.frames)
    assert all(f.shape == (16, 24, 3) and f.dtype == np.uint8 for f in lr)
    expected = np.clip(np.rint(degrade(seq.frames[0].astype(np.float32), op)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(lr[0], expected)


def test_degrade_sequence_keeps_flat_frames_flat_and_checks_sizes() -> None:
    flat = [np.full((32, 48, 3), 77, np.uint8)] * 2
    for f in degrade_sequence(flat, Degradation(scale=4, blur_sigma=1.0)):
        assert (f == 77).all()
    with pytest.raises(ValueError, match="divisible"):
        degrade_sequence([np.zeros((30, 48, 3), np.uint8)], Degradation(scale=4))
    with pytest.raises(ValueError, match="uint8"):
        degrade_sequence([np.zeros((32, 48, 3), np.float32)], Degradation(scale=4))


def test_bicubic_sequence_size(seq: EvalSequence) -> None:
    up = bicubic_sequence(degrade_sequence(seq.frames, Degradation(scale=4)), 4)
    assert all(f.shape == seq.frames[0].shape and f.dtype == np.uint8 for f in up)


# ---------------------------------------------------------------- metrics

def test_evaluate_identical_sequences_is_perfect(seq: EvalSequence) -> None:
    m = evaluate(seq.frames, seq.frames, 4)
    assert set(m) == {"y_psnr", "ssim", "lpips", "tof", "warp_gap"}
    assert m["y_psnr"] == math.inf
    assert m["ssim"] == pytest.approx(1.0)
    assert m["tof"] == 0.0
    assert m["warp_gap"] == 0.0
    if lpips_available():
        assert m["lpips"] == pytest.approx(0.0, abs=1e-6)
    else:
        assert math.isnan(m["lpips"])


def test_evaluate_without_lpips_weights_gives_nan(seq: EvalSequence, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    import vsrft.evaluation as ev

    monkeypatch.setattr(ev, "lpips_available", lambda: False)
    monkeypatch.setattr(ev, "_lpips_model", None)
    monkeypatch.setattr(ev, "_lpips_failed", False)
    m = evaluate(seq.frames[:3], seq.frames[:3], 4)
    assert math.isnan(m["lpips"]) and m["y_psnr"] == math.inf
    assert "pip install" in caplog.text


def test_evaluate_rejects_length_mismatch(seq: EvalSequence) -> None:
    with pytest.raises(ValueError, match="frames"):
        evaluate(seq.frames[:-1], seq.frames, 4)


@pytest.mark.skipif(not lpips_available(), reason="LPIPS weights not installed")
def test_batched_lpips_matches_per_frame(seq: EvalSequence) -> None:
    from vsrft.metrics import LPIPS

    up = bicubic_sequence(degrade_sequence(seq.frames, Degradation(scale=4)), 4)
    model = LPIPS()
    one_by_one = float(np.mean([model(a, b) for a, b in zip(up, seq.frames)]))
    assert evaluate(up, seq.frames, 4)["lpips"] == pytest.approx(one_by_one, rel=1e-4)


# ---------------------------------------------------------------- the table

def test_table_bicubic_row_is_worse_than_ground_truth_row(seq: EvalSequence) -> None:
    rows = model_table([], [seq], scale=4, include_ground_truth=True)
    assert [r["method"] for r in rows] == [GROUND_TRUTH, BICUBIC]
    gt, bic = rows[0]["mean"], rows[1]["mean"]
    assert gt["y_psnr"] == math.inf and math.isfinite(bic["y_psnr"])
    assert 15 < bic["y_psnr"] < 40
    assert bic["ssim"] < gt["ssim"]
    assert bic["tof"] > gt["tof"] == 0.0
    if lpips_available():
        assert bic["lpips"] > gt["lpips"] + 0.05
    assert set(rows[1]["per_sequence"]) == {"synthetic"}
    md = to_markdown(rows, per_sequence=True)
    assert "| bicubic |" in md and "| ground truth |" in md and "inf" in md and "synthetic" in md


def test_table_with_a_model_goes_through_the_enhancer(seq: EvalSequence, tiny_model: Path) -> None:
    seqs = [EvalSequence("photo:a", seq.frames), EvalSequence("clip:b", seq.frames[::-1], "reversed")]
    rows = model_table([str(tiny_model)], seqs, scale=4)
    assert [r["method"] for r in rows] == [BICUBIC, str(tiny_model)]
    row = rows[1]
    assert set(row["per_sequence"]) == {"photo:a", "clip:b"}
    assert row["mean"]["y_psnr"] == pytest.approx(
        np.mean([row["per_sequence"][n]["y_psnr"] for n in ("photo:a", "clip:b")]))
    assert row["groups"]["clip"] == pytest.approx(row["per_sequence"]["clip:b"], nan_ok=True)   # LPIPS: NaN without its weights
    assert row["frames"] == 16
    md = to_markdown(rows, per_sequence=True)
    assert "| photo (1) |" in md and "| clip (1) |" in md
    # the same frames straight through upscale_sequence give the same numbers
    lr = degrade_sequence(seq.frames, Degradation(scale=4))
    out = upscale_sequence(lr, str(tiny_model), 4)
    assert evaluate(out, seq.frames, 4)["y_psnr"] == pytest.approx(row["per_sequence"]["photo:a"]["y_psnr"])


def test_split_method() -> None:
    assert split_method("vsrft-gan+adapt") == ("vsrft-gan", True)
    assert split_method("/x/vsrft-mse.pt") == ("/x/vsrft-mse.pt", False)


def test_markdown_shows_nan_as_na_and_gain_over_bicubic() -> None:
    mean = {"y_psnr": 25.0, "ssim": 0.7, "lpips": math.nan, "tof": 0.3, "warp_gap": 1e-4}
    rows = [{"method": BICUBIC, "mean": dict(mean), "per_sequence": {}},
            {"method": "m", "mean": {**mean, "y_psnr": 26.25}, "per_sequence": {}}]
    md = to_markdown(rows)
    assert "n/a" in md and "+1.25" in md and "+1.00" in md     # gain, and the gap shown x1e-4


def test_bar_checks() -> None:
    def row(name: str, psnr: float, lp: float, t: float) -> dict:
        return {"method": name, "mean": {"y_psnr": psnr, "ssim": 0.8, "lpips": lp, "tof": t, "warp_gap": 0.0}}

    rows = [row(BICUBIC, 25.0, 0.45, 0.4), row("mse", 26.2, 0.30, 0.2), row("gan", 25.5, 0.20, 0.35)]
    checks = bar_checks(rows, "mse", "gan")
    assert [c["passed"] for c in checks] == [True, True, True]
    assert checks[0]["value"] == pytest.approx(1.2) and checks[2]["value"] == pytest.approx(1.75)
    rows[2]["mean"]["tof"] = 0.25
    rows[2]["mean"]["lpips"] = math.nan
    assert [c["passed"] for c in bar_checks(rows, "mse", "gan")] == [True, False, False]
    assert len(bar_checks(rows, "mse", None)) == 1


# ---------------------------------------------------------------- the held-out set

def _names(held: bool, n: int) -> list[str]:
    out, i = [], 0
    while len(out) < n:
        name = f"img{i:03d}.png"
        if is_held_out(Path(name), 0.12) == held:
            out.append(name)
        i += 1
    return out


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory: pytest.TempPathFactory, photo: np.ndarray) -> Path:
    """Colour photos, some held out and some not, plus one held-out grayscale photo."""
    d = tmp_path_factory.mktemp("photos")
    coffee = skimage_data.coffee()
    sources = [photo, coffee, np.ascontiguousarray(photo[:, ::-1]), np.ascontiguousarray(coffee[::-1])]
    held, train = _names(True, 4), _names(False, 3)
    for i, name in enumerate(held[:3] + train):
        cv2.imwrite(str(d / name), cv2.cvtColor(sources[i % len(sources)], cv2.COLOR_RGB2BGR))
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(d / held[3]), cv2.merge([gray, gray, gray]))
    return d


def test_photo_sequences_use_only_held_out_colour_photos(photo_folder: Path) -> None:
    kw = dict(count=5, frames=6, size=(96, 64), min_detail=0.0)
    seqs = photo_sequences([photo_folder], **kw)
    held = {Path(n).stem for n in _names(True, 3)}
    assert {s.name.split(":", 1)[1] for s in seqs} == held          # the grayscale one is skipped
    for s in seqs:
        assert len(s.frames) == 6 and s.size == (96, 64)
        assert all(f.dtype == np.uint8 and f.shape == (64, 96, 3) for f in s.frames)
    again = photo_sequences([photo_folder], **kw)
    assert [s.digest() for s in again] == [s.digest() for s in seqs]   # deterministic
    assert photo_sequences([photo_folder], seed=1, **kw)[0].digest() != seqs[0].digest()
    assert len(photo_sequences([photo_folder], **{**kw, "count": 2})) == 2
    assert photo_sequences([photo_folder], **{**kw, "min_detail": 1e6}) == []
    assert photo_sequences([photo_folder / "missing"], **kw) == []


def test_clip_sequences_downscale_crop_and_skip_missing(tmp_path: Path) -> None:
    import av

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=25)
        st.width, st.height, st.pix_fmt = 108, 90, "yuv420p"
        for t in range(14):
            img = np.zeros((90, 108, 3), np.uint8)
            img[:, :, 0] = (np.arange(108) * 2 + t * 3) % 256
            img[:, :, 1] = (np.arange(90)[:, None] * 2) % 256
            for p in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
    seqs = clip_sequences(frames=8, multiple=4, sources=[("clip:test", path, 3), ("clip:absent", None, 0),
                                                          ("clip:gone", tmp_path / "no.mp4", 0)])
    assert [s.name for s in seqs] == ["clip:test"]
    s = seqs[0]
    assert len(s.frames) == 8 and s.size == (52, 44)     # 54x45 after 2x area downscale, cropped to x4
    assert "frames 3-10" in s.source


# ---------------------------------------------------------------- the script

def _script():
    spec = importlib.util.spec_from_file_location("quality_models", ROOT / "benchmarks" / "quality_models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_script_refuses_unknown_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert _script().main(["--models", "no-such-model-xyz", "--quick"]) == 2
    assert "no-such-model-xyz" in capsys.readouterr().err


def test_script_roles() -> None:
    role = _script()._role
    assert role(["/r/vsrft-gan.pt", "/r/vsrft-mse.pt"], None, "mse", 0) == "/r/vsrft-mse.pt"
    assert role(["a", "b"], None, "gan", 1) == "b"
    assert role(["a"], None, "gan", 1) is None
    assert role(["a"], "x", "gan", 1) == "x"
    assert role(["vsrft-mse+adapt", "vsrft-mse"], None, "mse", 0) == "vsrft-mse"
