"""ONNX export and ONNX Runtime sessions against the PyTorch network they come from."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from helpers import random_vsrnet
from vsrft.runtime.export import cached_export, export_onnx
from vsrft.runtime.session import Runtime, TilePlan, choose_providers

CPU = "CPUExecutionProvider"


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    return random_vsrnet(seed=1)


@pytest.fixture(scope="module")
def onnx_bytes(net) -> bytes:
    return export_onnx(net, 15)


def torch_out(model: torch.nn.Module, window: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(window)[None]).numpy()[0]


def window(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A stacked 5-frame window (15, h, w) in [0, 1] with structure (not just noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 0.5 + 0.3 * np.sin(xx / 3.0 + yy / 5.0)
    frames = [np.clip(base + 0.1 * k + 0.1 * rng.standard_normal((3, h, w)), 0, 1) for k in range(5)]
    return np.concatenate(frames).astype(np.float32)


@pytest.mark.parametrize("h, w", [(48, 64), (29, 37), (5, 3), (3, 5), (2, 2), (1, 1), (1, 7), (64, 1)])
def test_ort_equals_pytorch(net, onnx_bytes, h: int, w: int) -> None:
    rt = Runtime(onnx_bytes, scale=4, receptive_radius=net.receptive_radius, providers=[CPU])
    x = window(h, w, seed=h * 100 + w)
    got = rt.run(x)
    want = torch_out(net, x)
    assert got.shape == want.shape == (3, 4 * h, 4 * w)
    assert np.abs(got - want).max() < 1e-4


def test_random_weights_are_not_plain_bicubic(net) -> None:
    """The test network must do something: otherwise 'equals PyTorch' would prove little."""
    x = window(24, 32)
    bicubic = torch.nn.functional.interpolate(torch.from_numpy(x[6:9])[None], scale_factor=4, mode="bicubic",
                                              align_corners=False).numpy()[0]
    assert np.abs(torch_out(net, x) - bicubic).mean() > 0.01


def test_tile_plan_covers_every_pixel_once() -> None:
    plan = TilePlan(tile=64, overlap=16)
    for n in (1, 63, 64, 65, 90, 96, 97, 500):
        spans = plan.spans(n)
        kept = [i for _, _, k0, k1 in spans for i in range(k0, k1)]
        assert kept == list(range(n))
        for r0, r1, k0, k1 in spans:
            assert 0 <= r0 <= k0 < k1 <= r1 <= n and r1 - r0 <= 64
            assert k0 - r0 >= min(16, k0) and r1 - k1 >= min(16, n - k1)   # context on every inner side


def test_tiled_equals_untiled(net, onnx_bytes) -> None:
    h, w = 70, 90
    small = Runtime(onnx_bytes, scale=4, receptive_radius=net.receptive_radius, providers=[CPU], tile=1)
    whole = Runtime(onnx_bytes, scale=4, receptive_radius=net.receptive_radius, providers=[CPU], tile=512)
    assert len(small.plan.spans(h)) == 3 and len(small.plan.spans(w)) == 3    # really 3 x 3 tiles
    assert len(whole.plan.spans(h)) == 1 and len(whole.plan.spans(w)) == 1
    x = window(h, w, seed=7)
    tiled, untiled = small.run(x), whole.run(x)
    assert np.abs(tiled - untiled).max() < 1e-4
    assert np.abs(tiled - torch_out(net, x)).max() < 1e-4


def test_swap_weights_equals_pytorch_with_those_weights(net, onnx_bytes) -> None:
    other = random_vsrnet(seed=2)
    x = window(20, 28, seed=3)
    rt = Runtime(onnx_bytes, scale=4, receptive_radius=net.receptive_radius, providers=[CPU])
    before = rt.run(x)
    state = {k: v.numpy() for k, v in other.state_dict().items()}
    assert set(state) <= rt.weight_names, "every parameter must be a swappable initializer"
    rt.swap_weights(state)
    after = rt.run(x)
    assert np.abs(after - torch_out(other, x)).max() < 1e-4
    assert np.abs(after - before).max() > 1e-2          # the swap changed something
    rt.swap_weights({k: v.numpy() for k, v in net.state_dict().items()})
    assert np.abs(rt.run(x) - before).max() < 1e-6      # and swapping back restores the original


def test_swap_weights_rejects_unknown_names_and_shapes(net, onnx_bytes) -> None:
    rt = Runtime(onnx_bytes, scale=4, receptive_radius=net.receptive_radius, providers=[CPU])
    with pytest.raises(KeyError, match="no_such_weight"):
        rt.swap_weights({"no_such_weight": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="head.weight"):
        rt.swap_weights({"head.weight": np.zeros((1, 2, 3, 3), np.float32)})


def test_provider_list_ends_with_cpu() -> None:
    available = ort.get_available_providers()
    requests = [None, [], [CPU], ["NoSuchExecutionProvider"], ["CUDAExecutionProvider"],
                ["TensorrtExecutionProvider", "CUDAExecutionProvider"], [CPU, *available], list(reversed(available))]
    for req in requests:
        chosen = choose_providers(req)
        assert chosen[-1] == CPU, (req, chosen)
        assert chosen.count(CPU) == 1
        assert set(chosen) <= set(available)


def test_unavailable_provider_falls_back_to_cpu(net, onnx_bytes) -> None:
    rt = Runtime(onnx_bytes, scale=4, receptive_radius=net.receptive_radius, providers=["NoSuchExecutionProvider"])
    assert rt.provider == CPU
    x = window(8, 8)
    assert np.abs(rt.run(x) - torch_out(net, x)).max() < 1e-4


def test_export_cache_reuses_bytes_and_tracks_weights(net, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VSRFT_CACHE", str(tmp_path))
    a = cached_export(net, 15, key="k")
    files = list(tmp_path.rglob("*.onnx"))
    assert len(files) == 1
    assert cached_export(net, 15, key="k") == a                  # a cache hit
    b = cached_export(random_vsrnet(seed=5), 15, key="k")        # other weights: another graph
    assert b != a and len(list(tmp_path.rglob("*.onnx"))) == 2
