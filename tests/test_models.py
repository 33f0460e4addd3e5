"""Checkpoints: vsrft's own, mismatched ones, Real-ESRGAN SRVGGNetCompact state dicts, built-in models."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import decoded_rgb, leftovers, probe, random_vsrnet, vsrft
from vsrft.errors import VsrftError
from vsrft.models import checkpoint
from vsrft.models.thirdparty import SRVGGNetCompact


def test_checkpoint_round_trip(tmp_path) -> None:
    model = random_vsrnet(seed=3)
    path = tmp_path / "m.pt"
    checkpoint.save(path, model, model.config, {"description": "x"})
    loaded, info = checkpoint.load(path)
    assert info.config == model.config and info.meta == {"description": "x"} and info.name == "m"
    x = torch.rand(1, 15, 9, 11)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("change, message", [
    ({"channels": 16}, r"head\.weight has shape \(8, 60, 3, 3\), expected \(16, 60, 3, 3\)"),   # 8 channels saved
    ({"blocks": 2}, r"missing \['body\.1\.conv1\.weight'"),                                       # 1 block saved
])
def test_a_checkpoint_that_does_not_fit_names_the_mismatch(tmp_path, change, message) -> None:
    model = random_vsrnet()
    path = tmp_path / "bad.pt"
    checkpoint.save(path, model, {**model.config, **change})
    with pytest.raises(VsrftError, match=message):
        checkpoint.load(path)


def test_unreadable_checkpoints(tmp_path) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(VsrftError, match="cannot read checkpoint"):
        checkpoint.load(text)
    odd = tmp_path / "odd.pth"
    torch.save({"something": {"else": torch.zeros(2)}}, odd)
    with pytest.raises(VsrftError, match="neither a vsrft checkpoint nor a known state dict layout|unsupported layout"):
        checkpoint.load(odd)
    with pytest.raises(VsrftError, match="neither a built-in model"):
        checkpoint.load(tmp_path / "missing.pt")


def test_mismatched_checkpoint_on_the_command_line(tmp_path, clip) -> None:
    model = random_vsrnet()
    path = tmp_path / "bad.pt"
    checkpoint.save(path, model, {**model.config, "channels": 16})
    out = tmp_path / "out.mp4"
    run = vsrft("enhance", clip("mp4"), out, "--model", path, "--no-adapt")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert len(run.stderr_lines) == 1 and run.stderr_lines[0].startswith("vsrft: error: ")
    assert "head.weight" in run.stderr
    assert not out.exists() and leftovers(tmp_path) == []


def random_srvgg(seed: int = 0, **kw) -> SRVGGNetCompact:
    torch.manual_seed(seed)
    net = SRVGGNetCompact(num_feat=8, num_conv=2, upscale=4, **kw)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    return net.eval()


@pytest.mark.parametrize("key", ["params", "params_ema"])
def test_realesrgan_state_dict_is_recognised(tmp_path, key: str) -> None:
    net = random_srvgg()
    path = tmp_path / "realesr-tiny.pth"
    torch.save({key: net.state_dict()}, path)
    loaded, info = checkpoint.load(path)
    assert info.config == {"arch": "srvgg", "num_feat": 8, "num_conv": 2, "scale": 4, "act_type": "prelu", "frames": 1}
    x = torch.rand(1, 3, 7, 9)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_realesrgan_model_through_onnx_runtime(tmp_path) -> None:
    from vsrft.network import Network

    net = random_srvgg(seed=1)
    path = tmp_path / "realesr-tiny.pth"
    torch.save({"params": net.state_dict()}, path)
    network = Network.load(str(path), 4)
    assert network.frames == 1
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (13, 17, 3), dtype=np.uint8) for _ in range(5)]
    got = network.infer(frames)                                   # only the centre frame is used
    with torch.no_grad():
        want = net(torch.from_numpy(frames[2]).permute(2, 0, 1)[None].float() / 255).numpy()[0]
    assert np.abs(got - want).max() < 1e-4


def test_realesrgan_model_on_the_command_line(tmp_path, clip) -> None:
    net = random_srvgg(seed=2)
    path = tmp_path / "realesr-tiny.pth"
    torch.save({"params": net.state_dict()}, path)
    out = tmp_path / "out.mp4"
    run = vsrft("enhance", clip("mp4"), out, "--model", path, "--no-adapt")
    assert run.returncode == 0, run.stderr
    src, dst = probe(clip("mp4")), probe(out)
    assert (dst.width, dst.height) == (256, 192) and dst.times == src.times
    assert len(decoded_rgb(out)) == 24


def test_builtin_models_are_listed() -> None:
    names = checkpoint.builtin_names()
    if not names:
        pytest.skip("no built-in weights in vsrft/models/weights/ yet")
    run = vsrft("models")
    assert run.returncode == 0, run.stderr
    listed = [line.split()[0] for line in run.stdout.splitlines() if line.strip()]
    assert listed == names
    for name in names:
        _, info = checkpoint.load(name)
        assert info.scale == 4
