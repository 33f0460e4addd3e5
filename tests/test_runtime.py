"""ONNX export and ONNX Runtime sessions against the PyTorch network they come from."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from helpers import decoded_rgb, ffmpeg, random_vsrnet, vsrft
from vsrft.runtime.export import cached_export, export_onnx
from vsrft.runtime.session import Runtime, TilePlan, choose_providers

CPU = "CPUExecutionProvider"
# a provider ONNX Runtime knows but this installation lacks (a GPU provider on a CPU-only wheel)
UNAVAILABLE = next(p for p in ort.get_all_providers() if p not in ort.get_available_providers())


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
    requests = [None, [], [CPU], [UNAVAILABLE], ["CUDAExecutionProvider"],
                ["TensorrtExecutionProvider", "CUDAExecutionProvider"], [CPU, *available], list(reversed(available))]
    for req in requests:
        chosen = choose_providers(req)
        assert chosen[-1] == CPU, (req, chosen)
        assert chosen.count(CPU) == 1
        assert set(chosen) <= set(available)


def test_unavailable_provider_falls_back_to_cpu(net, onnx_bytes) -> None:
    rt = Runtime(onnx_bytes, scale=4, receptive_radius=net.receptive_radius, providers=[UNAVAILABLE])
    assert rt.provider == CPU
    x = window(8, 8)
    assert np.abs(rt.run(x) - torch_out(net, x)).max() < 1e-4


def test_unknown_provider_is_an_error() -> None:
    from vsrft.errors import VsrftError

    with pytest.raises(VsrftError, match="did you mean CUDAExecutionProvider"):
        choose_providers(["CUDAExecutionProvder"])
    with pytest.raises(VsrftError, match="'NoSuchExecutionProvider'"):
        choose_providers([CPU, "NoSuchExecutionProvider"])


def test_export_cache_reuses_bytes_and_tracks_weights(net, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VSRFT_CACHE", str(tmp_path))
    a = cached_export(net, 15, key="k")
    files = list(tmp_path.rglob("*.onnx"))
    assert len(files) == 1
    assert cached_export(net, 15, key="k") == a                  # a cache hit
    b = cached_export(random_vsrnet(seed=5), 15, key="k")        # other weights: another graph
    assert b != a and len(list(tmp_path.rglob("*.onnx"))) == 2


def test_float16_graph_with_io_binding_matches_float32(net, onnx_bytes) -> None:
    """The GPU configuration (float16 graph, I/O binding) exercised on the CPU provider."""
    fp32 = Runtime(onnx_bytes, scale=4, receptive_radius=net.receptive_radius)
    assert not fp32.fp16 and not fp32.io_binding          # "auto" on the CPU: float32, plain run()
    fp16 = Runtime(onnx_bytes, scale=4, receptive_radius=net.receptive_radius, precision="fp16", io_binding=True)
    assert fp16.fp16 and fp16.io_binding
    assert all(init.data_type == 10 for init in fp16.proto.graph.initializer if init.data_type in (1, 10))
    x = window(24, 40)
    a, b = fp32.run(x), fp16.run(x)
    assert b.dtype == np.float32 and b.shape == a.shape
    assert 0 < np.abs(a - b).max() < 4e-3                  # float16 rounding, far below 1/255
    state = {k: v.numpy() * 1.1 for k, v in net.state_dict().items() if k in fp32.weight_names}
    fp32.swap_weights(state)
    fp16.swap_weights(state)                                # float32 weights cast into the float16 graph
    assert np.abs(fp32.run(x) - fp16.run(x)).max() < 4e-3


@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(),
                    reason="no CUDA execution provider in this onnxruntime build (CPU-only machine)")
def test_cuda_provider_matches_cpu(net, onnx_bytes) -> None:
    gpu = Runtime(onnx_bytes, scale=4, receptive_radius=net.receptive_radius)
    assert gpu.provider in ("TensorrtExecutionProvider", "CUDAExecutionProvider") and gpu.io_binding
    cpu = Runtime(onnx_bytes, scale=4, receptive_radius=net.receptive_radius, providers=[CPU])
    x = window(64, 96)
    assert np.abs(gpu.run(x) - cpu.run(x)).max() < 4e-3


def test_tile_plan_shrinks_to_a_floor() -> None:
    plan = TilePlan(tile=512, overlap=10)
    smaller = plan.shrunk(300)
    assert smaller == TilePlan(tile=150, overlap=10)
    assert TilePlan(tile=60, overlap=10).shrunk(1000) is None    # 30 - 2 * 10 < 16 pixels of core


def test_out_of_memory_is_retried_with_smaller_tiles(tiny_model, tmp_path) -> None:
    """A real allocation failure: the inference arena capped below what an untiled frame needs."""
    src = tmp_path / "big.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=256x192:rate=10", "-frames:v", "3", "-pix_fmt", "yuv420p", src)
    common = ("--model", tiny_model, "--no-adapt", "--codec", "ffv1", "--tile", "1024")
    ref = vsrft("enhance", src, tmp_path / "ref.mkv", *common, "-q")
    assert ref.returncode == 0, ref.stderr
    run = vsrft("enhance", src, tmp_path / "small.mkv", *common, "--memory-limit", "16", "-q")
    assert run.returncode == 0, run.stderr
    assert "retrying the frame with" in run.stderr
    a, b = decoded_rgb(tmp_path / "ref.mkv"), decoded_rgb(tmp_path / "small.mkv")
    assert len(a) == len(b) == 3
    assert all(np.array_equal(x, y) for x, y in zip(a, b))         # tiles reproduce the untiled frame
    fail = vsrft("enhance", src, tmp_path / "none.mkv", *common, "--memory-limit", "1", "-q")
    assert fail.returncode == 2 and "vsrft: error: out of memory even with" in fail.stderr
    assert "Traceback" not in fail.stderr and not (tmp_path / "none.mkv").exists()


def test_saved_adapted_onnx_runs_with_model_and_plain_onnxruntime(tiny_model, clip, tmp_path) -> None:
    """--save-adapted: one self-describing ONNX file per shot plus a manifest; each file, given to
    --model (adaptation off) or run by plain ONNX Runtime, reproduces the adapted run's frames."""
    import json

    from vsrft.adapt import AdaptConfig
    from vsrft.engine import Enhancer, enhance

    src = clip("cut")                                     # two shots of 12 frames
    enh = Enhancer(model=str(tiny_model), adapt_sync=True, project=False,     # the graphs' own output
                   adapt_config=AdaptConfig(steps=3, batch=4, patch=32, min_gain_db=-100, min_neighbour_gain_db=-100,
                                            max_flicker_ratio=None))
    enh.keep_decisions = True
    enhance(src, tmp_path / "adapted.mkv", enhancer=enh, codec="ffv1", pix_fmt="bgr0")
    adapted = decoded_rgb(tmp_path / "adapted.mkv")
    manifest = json.loads(enh.save_adapted(tmp_path / "saved").read_text())
    shots = manifest["shots"]
    assert [(s["first_frame"], s["last_frame"], s["adapted"]) for s in shots] == [(0, 11, True), (12, 23, True)]
    assert len(set(s["file"] for s in shots)) == 2 and manifest["frames_total"] == 24
    assert manifest["projected"] is False

    lr = decoded_rgb(src)
    for shot in shots:
        path = tmp_path / "saved" / shot["file"]
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        meta = sess.get_modelmeta().custom_metadata_map
        assert meta["vsrft.scale"] == "4" and meta["vsrft.frames"] == "5" and meta["vsrft.colour_order"] == "RGB"
        assert meta["vsrft.input_filter"] == "null" and "NCHW" in meta["vsrft.layout"]
        assert sess.get_inputs()[0].name == "input" and sess.get_inputs()[0].shape[1] == 15
        first, last = shot["first_frame"], shot["last_frame"]
        for t in range(first, last + 1):
            window = [lr[min(max(i, first), last)] for i in range(t - 2, t + 3)]      # edge frames repeated
            x = np.concatenate(window, axis=2).transpose(2, 0, 1)[None].astype(np.float32) / 255
            (hr,) = sess.run(None, {"input": x})
            out = np.clip(hr[0].transpose(1, 2, 0) * 255 + 0.5, 0, 255).astype(np.uint8)
            assert np.abs(out.astype(int) - adapted[t]).max() <= 1, t
        # the same file through --model (no adaptation): that shot's frames again
        run = vsrft("enhance", src, tmp_path / f"{first}.mkv", "--model", path, "--no-adapt", "--codec", "ffv1",
                    "--pix-fmt", "bgr0", "-q")
        assert run.returncode == 0, run.stderr
        again = decoded_rgb(tmp_path / f"{first}.mkv")
        assert all(np.array_equal(again[t], adapted[t]) for t in range(first, last + 1))
