"""`vsrft degrade`, `vsrft eval` and `vsrft compare` on real files."""
from __future__ import annotations

import json

import numpy as np

from helpers import SAMPLE, decoded_rgb, vsrft
from vsrft.degradation import Degradation, degrade


def test_degrade_uses_the_engine_operator_and_eval_reads_it_back(tmp_path) -> None:
    lr = tmp_path / "lr.mkv"
    run = vsrft("degrade", SAMPLE, lr, "--scale", "2", "--codec", "ffv1")
    assert run.returncode == 0, run.stderr
    got = decoded_rgb(lr)
    src = decoded_rgb(SAMPLE)
    assert len(got) == len(src) and got[0].shape == (72, 88, 3)
    ref = np.clip(np.rint(degrade(src[5].astype(np.float32), Degradation(scale=2))), 0, 255)
    assert np.abs(got[5].astype(float) - ref).mean() < 1.0          # only the 4:4:4 colour round trip differs
    same = vsrft("eval", lr, "--reference", lr, "--scale", "2", "--no-lpips", "--json")
    assert same.returncode == 0, same.stderr
    m = json.loads(same.stdout)["mean"]
    assert m["y_psnr"] is None and m["ssim"] == 1.0 and m["tof"] == 0.0      # identical: infinite PSNR


def test_eval_rejects_mismatched_inputs(tmp_path) -> None:
    lr = tmp_path / "lr.mkv"
    assert vsrft("degrade", SAMPLE, lr, "--scale", "2", "--codec", "ffv1").returncode == 0
    run = vsrft("eval", lr, "--reference", SAMPLE, "--no-lpips")
    assert run.returncode == 2 and "vsrft: error:" in run.stderr and "Traceback" not in run.stderr


def test_compare_writes_figures(tiny_model, tmp_path) -> None:
    run = vsrft("compare", SAMPLE, "--out", tmp_path / "cmp", "--model", tiny_model, "--frames", "6",
                "--adapt-steps", "2", "--frame", "10")
    assert run.returncode == 0, run.stderr
    for name in ("compare.png", "compare.mp4", "report.json"):
        assert (tmp_path / "cmp" / name).stat().st_size > 0
