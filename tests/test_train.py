"""A tiny training run on generated images: the training command works end to end and resumes."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from helpers import vsrft
from vsrft.models import checkpoint


def _images(folder, n: int = 6) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        img = cv2.resize(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8), (400, 300), interpolation=cv2.INTER_CUBIC)
        cv2.circle(img, (int(rng.integers(50, 350)), 150), 40, (255, 255, 255), 3)
        cv2.imwrite(str(folder / f"img{i}.png"), img)


def test_tiny_training_run_and_resume(tmp_path) -> None:
    data = tmp_path / "photos"
    data.mkdir()
    _images(data)
    out = tmp_path / "m.pt"
    common = ["--out", out, "--channels", "8", "--blocks", "1", "--batch", "2", "--lr-patch", "16",
              "--log-every", "2", "--threads", "1"]
    run = vsrft("train", data, "--steps", "4", *common)
    assert run.returncode == 0, run.stderr
    model, info = checkpoint.load(out)
    assert info.meta["steps"] == 4 and "bicubic_down(x4)" in info.meta["degradation"]
    assert info.config == {"arch": "vsrnet", "channels": 8, "blocks": 1, "scale": 4, "frames": 5}
    first = {k: v.clone() for k, v in model.state_dict().items()}
    run = vsrft("train", data, "--steps", "6", "--resume", *common)
    assert run.returncode == 0, run.stderr
    model2, info2 = checkpoint.load(out)
    assert info2.meta["steps"] == 6
    assert any(not torch.equal(first[k], v) for k, v in model2.state_dict().items())
    assert "resumed at step 4" in run.stderr
