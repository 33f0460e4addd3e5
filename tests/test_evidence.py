"""The temporal check on the HR output (vsrft.adapt.evidence): no ground truth, real frames."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import SAMPLE, decoded_rgb
from vsrft.adapt import AdaptConfig, finetune
from vsrft.adapt.evidence import temporal_evidence
from vsrft.degradation import Degradation
from vsrft.engine import Enhancer, describe_adaptation


@pytest.fixture(scope="module")
def sample_frames() -> list[np.ndarray]:
    return decoded_rgb(SAMPLE)[30:42]          # inside the sample's second shot: a pan


class Bicubic(nn.Module):
    """x4 bicubic of the centre frame of a 1-frame stack, plus optional per-call noise (flicker)."""

    def __init__(self, flicker: float = 0.0, grid: bool = False) -> None:
        super().__init__()
        self.flicker, self.grid = flicker, grid
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
        if self.grid:    # the collapse seen on a GAN model: a copy of the LR pixel grid
            up = F.interpolate(x, scale_factor=4, mode="nearest")
        if self.flicker:
            g = torch.Generator().manual_seed(self.calls)
            up = up + self.flicker * torch.randn(up.shape, generator=g)
        self.calls += 1
        return up


def _stacks(frames: list[np.ndarray]) -> torch.Tensor:
    """Single-frame windows: the network input (the frame) then the centre frame, in [0, 1]."""
    a = np.stack([np.concatenate([f, f], axis=2).transpose(2, 0, 1) for f in frames]).astype(np.float32)
    return torch.from_numpy(a / 255)


@pytest.mark.parametrize("project", [False, True])
def test_invented_flicker_scores_worse_than_a_stable_upscale(sample_frames, project: bool) -> None:
    ev = temporal_evidence(Bicubic(), Bicubic(flicker=0.03), _stacks(sample_frames[:6]), Degradation(4), 4, project)
    assert ev is not None and ev.frames == 6
    assert ev.after > 1.5 * ev.before and ev.ratio > 1.5
    back = temporal_evidence(Bicubic(flicker=0.03), Bicubic(), _stacks(sample_frames[:6]), Degradation(4), 4, project)
    assert back.ratio < 1 / 1.5


def test_a_copy_of_the_lr_grid_scores_worse_than_an_upscale(sample_frames) -> None:
    """Blocks that stay on the pixel grid while the scene pans do not move with it."""
    ev = temporal_evidence(Bicubic(), Bicubic(grid=True), _stacks(sample_frames[:6]), Degradation(4), 4, True)
    assert ev.ratio > 1.2


def test_too_few_frames_give_no_evidence(sample_frames) -> None:
    assert temporal_evidence(Bicubic(), Bicubic(), _stacks(sample_frames[:2]), Degradation(4), 4, False) is None


def _windows(adaptation_window, frames: list[np.ndarray]) -> list[np.ndarray]:
    pad = [frames[0]] * 2 + frames + [frames[-1]] * 2
    return [adaptation_window(pad[i:i + 5]) for i in range(len(frames))]


def test_an_lr_accepted_adaptation_is_vetoed_by_the_temporal_check(tiny_model, sample_frames) -> None:
    enh = Enhancer(model=str(tiny_model), adapt=False)
    data = _windows(enh.network.adaptation_window, sample_frames[:8])
    cfg = AdaptConfig(steps=10, lr=1e-3, batch=4, patch=32, min_gain_db=-np.inf, min_neighbour_gain_db=-np.inf,
                      neighbours=False, max_flicker_ratio=None)
    state, res = finetune(enh.network.module, data, Degradation(4), 4, cfg)
    assert res.accepted and state is not None and np.isnan(res.flicker_after)   # no check asked for
    # the same fit, judged over time: any ratio above 0 fails a bound of 0, none fails infinity
    state, res = finetune(enh.network.module, data, Degradation(4), 4, replace(cfg, max_flicker_ratio=0.0))
    assert not res.accepted and state is None
    assert res.reason.startswith("less stable over time") and res.flicker_after > 0
    assert describe_adaptation(res).endswith("kept the base network: the adapted output flickered more")
    state, res = finetune(enh.network.module, data, Degradation(4), 4, replace(cfg, max_flicker_ratio=np.inf))
    assert res.accepted and state is not None and "warping error" in res.reason


def test_projection_is_on_when_adapting_and_off_without(tiny_model) -> None:
    assert Enhancer(model=str(tiny_model)).project
    assert not Enhancer(model=str(tiny_model), adapt=False).project
    assert not Enhancer(model=str(tiny_model), project=False).project
    assert Enhancer(model=str(tiny_model), adapt=False, project=True).project
    assert not Enhancer(model=str(tiny_model), blur=1.6).project     # the input deblur's job
    assert Enhancer(model=str(tiny_model), blur=1.6, project=True).project


def test_fine_tuning_on_cached_features_equals_the_full_forward(sample_frames) -> None:
    """Only the last layers move: the frozen front runs once per window instead of on every crop,
    and the adaptation is the same (same crops, same steps, to float rounding)."""
    from vsrft.adapt.finetune import TrainingWindow, on_frozen_features
    from vsrft.models.thirdparty import SRVGGNetCompact

    torch.manual_seed(0)
    net = SRVGGNetCompact(num_feat=8, num_conv=3).eval()
    windows = [np.ascontiguousarray(w) for w in _stacks([f[:48, :64] for f in sample_frames[:6]]).mul(255).numpy()]
    cached = on_frozen_features(net, "upsample", [TrainingWindow(w) for w in windows], 10 ** 9)
    assert cached is not None and cached[0][0].stack.shape[0] == 8 + 6
    assert on_frozen_features(net, "body", [TrainingWindow(w) for w in windows], 10 ** 9) is None
    cfg = AdaptConfig(steps=20, batch=2, patch=24, lr=1e-3, min_gain_db=-np.inf, min_neighbour_gain_db=-np.inf,
                      neighbours=False, max_flicker_ratio=np.inf)
    state_a, res_a = finetune(net, windows, Degradation(4), 4, cfg)
    state_b, res_b = finetune(net, windows, Degradation(4), 4, replace(cfg, cache_features=False))
    assert res_a.front_cached and not res_b.front_cached
    assert res_a.steps == res_b.steps == 20
    np.testing.assert_allclose(res_a.losses, res_b.losses, rtol=1e-4)
    assert res_a.flicker_after == pytest.approx(res_b.flicker_after, rel=1e-3)
    for k in state_a:
        torch.testing.assert_close(state_a[k], state_b[k], rtol=1e-3, atol=1e-5)
