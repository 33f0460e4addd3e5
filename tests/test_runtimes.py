"""The CPU runtimes (ONNX Runtime, OpenVINO, PyTorch; fp32 and bf16) against ONNX Runtime fp32, their
weight swaps, the `--runtime auto` probe and its cache, and the errors for what this machine lacks.

Real sessions throughout; bf16 cases run only where the CPU computes bf16 (AVX512_BF16 or AMX)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import cli_env, random_vsrnet
from vsrft.errors import VsrftError
from vsrft.models import checkpoint
from vsrft.network import to_uint8
from vsrft.runtime import backends
from vsrft.runtime.export import export_onnx
from vsrft.runtime.session import Runtime

CPU = ["CPUExecutionProvider"]
ROOT = Path(__file__).resolve().parents[1]
PAIRS = [(r, "fp32") for r in backends.available_runtimes()] + \
        [(r, "bf16") for r in backends.available_runtimes() if backends.supports_bf16(r)]
# Bounds in code values (0..255) against ONNX Runtime fp32 on real frames. fp32: rounding only.
# bf16 (8-bit mantissa in the convolutions): measured 0.27-0.29 mean, 2 max on vsrft-mse over 64 real
# frames (benchmarks/runtimes.py --quality); the bounds leave room for other CPUs' kernels.
FP32_MAX = 1
BF16_MEAN, BF16_MAX = 0.5, 4


def ids(pair: tuple[str, str]) -> str:
    return "/".join(pair)


@pytest.fixture(scope="module")
def mse() -> tuple[torch.nn.Module, bytes]:
    """The built-in vsrft-mse and its graph: bf16 errors are only meaningful on trained weights."""
    module, info = checkpoint.load("vsrft-mse")
    return module, export_onnx(module, 3 * info.frames)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """A real 5-frame window of the sample clip, (15, 144, 176) float32 in [0, 1]."""
    from vsrft.train.data import load_clip_frames

    rgb = load_clip_frames(ROOT / "samples" / "concert.mp4", max_frames=5)
    return np.concatenate([f.transpose(2, 0, 1) for f in rgb]).astype(np.float32) / 255


def make(model: torch.nn.Module, data: bytes, runtime: str, precision: str, **kw) -> Runtime:
    return Runtime(data, 4, model.receptive_radius, providers=CPU, runtime=runtime, precision=precision,
                   module=model, **kw)


def code_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(to_uint8(a).astype(np.int16) - to_uint8(b))


def check_close(got: np.ndarray, want: np.ndarray, precision: str) -> None:
    d = code_diff(got, want)
    if precision == "fp32":
        assert d.max() <= FP32_MAX, d.max()
    else:
        assert d.mean() <= BF16_MEAN and d.max() <= BF16_MAX, (d.mean(), d.max())


@pytest.mark.parametrize("pair", PAIRS, ids=ids)
def test_each_runtime_gives_the_frames_of_onnxruntime_fp32(mse, frames, pair) -> None:
    module, data = mse
    ref = make(module, data, "onnxruntime", "fp32").run(frames)
    rt = make(module, data, *pair)
    assert (rt.backend, rt.choice.precision) == pair
    check_close(rt.run(frames), ref, pair[1])
    # tiled frames too (tiles smaller than the frame), against ONNX Runtime's same tiles
    tiled = make(module, data, *pair, tile=64)
    check_close(tiled.run(frames), make(module, data, "onnxruntime", "fp32", tile=64).run(frames), pair[1])


@pytest.mark.parametrize("pair", PAIRS, ids=ids)
def test_hot_swap_gives_the_new_weights_output(mse, frames, pair) -> None:
    module, data = mse
    rt = make(module, data, *pair)
    before = rt.run(frames)
    torch.manual_seed(3)
    new = {k: v + 0.02 * torch.randn_like(v) * v.abs().mean() for k, v in module.state_dict().items()}
    other = checkpoint.build({"arch": "vsrnet", "channels": 32, "blocks": 6, "scale": 4, "frames": 5})
    other.load_state_dict(new)
    want = make(other.eval(), export_onnx(other.eval(), 15), "onnxruntime", "fp32").run(frames)
    old_session = rt.session
    seconds = rt.swap_weights({k: v.numpy() for k, v in new.items() if k in rt.weight_names})
    assert seconds > 0
    got = rt.run(frames)
    assert code_diff(got, before).max() > 2          # the swap changed the output ...
    check_close(got, want, pair[1])                  # ... to the new weights'
    check_close(rt.run(frames, old_session), before, "fp32")   # the old session still runs the old weights


def test_probe_picks_an_available_runtime_and_caches_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VSRFT_CACHE", str(tmp_path))
    net = random_vsrnet(seed=5)
    data = export_onnx(net, 15)
    first = make(net, data, "auto", "auto", bf16_default=True)
    allowed = {ids(p) for p in PAIRS if p[0] in backends.AUTO_RUNTIMES}
    if len(allowed) == 1:           # no OpenVINO here: nothing to choose from, nothing timed
        assert first.choice.label == "onnxruntime/fp32" and not first.choice.ms
        return
    assert first.choice.label in allowed and not first.choice.cached
    assert set(first.choice.ms) == allowed           # every pair available here was timed
    assert backends.probe_cache_path().is_file()
    second = make(net, data, "auto", "auto", bf16_default=True)
    assert second.choice.cached and second.choice.label == first.choice.label   # read, not timed again
    # another graph is probed again (the key holds the graph's structure, not its weights)
    bigger = random_vsrnet(channels=12, seed=5)
    assert not make(bigger, export_onnx(bigger, 15), "auto", "auto", bf16_default=True).choice.cached
    same_shape = random_vsrnet(seed=6)
    assert make(same_shape, export_onnx(same_shape, 15), "auto", "auto", bf16_default=True).choice.cached
    # fp32 only: without bf16_default, auto considers no bf16 pair
    fp32 = make(net, data, "auto", "auto")
    assert fp32.choice.precision == "fp32" and not fp32.choice.cached


def test_probe_result_runs_like_onnxruntime(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VSRFT_CACHE", str(tmp_path))
    net = random_vsrnet(seed=7)
    data = export_onnx(net, 15)
    x = np.random.default_rng(0).random((15, 40, 56), dtype=np.float32)
    check_close(make(net, data, "auto", "fp32").run(x), make(net, data, "onnxruntime", "fp32").run(x), "fp32")


def test_names_this_machine_cannot_run_are_one_line_errors() -> None:
    net = random_vsrnet(seed=1)
    data = export_onnx(net, 15)
    with pytest.raises(VsrftError, match="unknown runtime 'tensorrt'"):
        make(net, data, "tensorrt", "auto")
    with pytest.raises(VsrftError, match="bf16 is not available in ONNX Runtime"):
        make(net, data, "onnxruntime", "bf16")
    with pytest.raises(VsrftError, match="torch cannot run this model"):
        Runtime(data, 4, net.receptive_radius, providers=CPU, runtime="torch")      # no module to run
    if not backends.cpu_has_bf16():
        with pytest.raises(VsrftError, match="needs a CPU with AVX512_BF16 or AMX"):
            make(net, data, "auto", "bf16")


def _cli(tmp_path: Path, *args: str, hide_openvino: bool = False) -> subprocess.CompletedProcess:
    """`vsrft enhance` in a fresh interpreter; hide_openvino: as if it were not installed there."""
    code = ("import sys; " + ("sys.modules['openvino'] = None; " if hide_openvino else "")
            + "from vsrft.cli import main; sys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, "enhance", str(ROOT / "samples" / "concert.mp4"),
                           str(tmp_path / "out.mp4"), "--no-adapt", *args], capture_output=True, text=True,
                          env=cli_env(), timeout=300, stdin=subprocess.DEVNULL)


def test_cli_unavailable_runtime_is_one_line_error(tmp_path) -> None:
    run = _cli(tmp_path, "--runtime", "openvino", hide_openvino=True)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vsrft: error: runtime openvino is not installed"), run.stderr
    assert "pip install 'vsrft[openvino]'" in lines[0]
    run = _cli(tmp_path, "--runtime", "onnx")
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        "vsrft: error: --runtime must be one of auto, onnxruntime, openvino, torch, got 'onnx'"], run.stderr
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.skipif(not any(p == "bf16" for _, p in PAIRS), reason="no runtime here runs bf16 (needs AVX512_BF16 or AMX)")
def test_a_deep_source_leaves_an_automatic_bf16_for_fp32(mse, frames) -> None:
    """bf16 keeps 8 significant bits: with --precision auto, 16-bit input runs in float32 (the
    10-bit round-trip tests check the frames); a bf16 the user asked for stays."""
    from vsrft.models.checkpoint import ModelInfo
    from vsrft.network import Network

    module, data = mse
    runtime = next(r for r, p in PAIRS if p == "bf16")
    auto, forced = make(module, data, runtime, "auto"), make(module, data, runtime, "bf16")
    auto.choice = backends.Choice(runtime, "bf16")     # what the probe picks where bf16 is the faster
    auto.session = auto._make_session(auto.proto.SerializeToString())
    info = ModelInfo("vsrft-mse", {"arch": "vsrnet", "scale": 4, "frames": 5})
    deep = [(f.transpose(1, 2, 0) * 65535).astype(np.uint16) for f in frames.reshape(5, 3, *frames.shape[1:])]
    for rt, kept in ((auto, "fp32"), (forced, "bf16")):
        Network(module, info, rt, 4).infer(deep)
        assert rt.choice.precision == kept
    want = make(module, data, "onnxruntime", "fp32").run(frames)
    check_close(auto.run(frames), want, "fp32")
