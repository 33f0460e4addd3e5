"""Checkpoints: plain state dicts plus metadata (architecture, scale, training degradation).

A checkpoint file is ``torch.save({"format": "vsrft-checkpoint", "config": {...},
"meta": {...}, "state_dict": {...}})``. Third-party single-frame layouts (Real-ESRGAN's
SRVGGNetCompact and RRDBNet ``params``/``params_ema`` dicts) are recognised by their keys, and
an ncnn ``.param`` path (its ``.bin`` next to it) is read by `vsrft.models.ncnn`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from vsrft.errors import VsrftError
from vsrft.models.vsrnet import VSRNet

FORMAT = "vsrft-checkpoint"
WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass
class ModelInfo:
    name: str
    config: dict
    meta: dict = field(default_factory=dict)

    @property
    def scale(self) -> int:
        return int(self.config["scale"])

    @property
    def frames(self) -> int:
        return int(self.config.get("frames", 1))


def build(config: dict) -> nn.Module:
    arch = config.get("arch")
    if arch == "vsrnet":
        return VSRNet(channels=int(config["channels"]), blocks=int(config["blocks"]),
                      scale=int(config["scale"]), frames=int(config.get("frames", 5)))
    if arch == "srvgg":
        from vsrft.models.thirdparty import SRVGGNetCompact
        return SRVGGNetCompact(num_feat=int(config["num_feat"]), num_conv=int(config["num_conv"]),
                               upscale=int(config.get("net_scale", config["scale"])),
                               act_type=config.get("act_type", "prelu"), out_scale=int(config["scale"]))
    if arch == "rrdb":
        from vsrft.models.rrdbnet import RRDBNet
        return RRDBNet(num_feat=int(config["num_feat"]), num_block=int(config["num_block"]),
                       num_grow_ch=int(config.get("num_grow_ch", 32)), scale=int(config["scale"]))
    raise VsrftError(f"unknown model architecture {arch!r}")


def save(path: str | Path, model: nn.Module, config: dict, meta: dict | None = None) -> None:
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save({"format": FORMAT, "config": dict(config), "meta": dict(meta or {}), "state_dict": state}, str(path))


def builtin_names() -> list[str]:
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.pt"))


def load(name_or_path: str | Path) -> tuple[nn.Module, ModelInfo]:
    """Load a built-in model by name or a checkpoint by path; errors name the mismatch."""
    path = Path(name_or_path)
    builtin = WEIGHTS_DIR / f"{name_or_path}.pt"
    if builtin.is_file() and not path.exists():
        path = builtin
    if not path.is_file():
        known = ", ".join(builtin_names()) or "none"
        raise VsrftError(f"model {str(name_or_path)!r} is neither a built-in model ({known}) nor a checkpoint file")
    if path.suffix.lower() == ".bin" and path.with_suffix(".param").is_file():
        path = path.with_suffix(".param")
    if path.suffix.lower() == ".onnx":       # written by --save-adapted: rebuilt from its metadata and weights
        from vsrft.runtime.export import load_onnx_model
        return load_onnx_model(path)
    if path.suffix.lower() == ".param":
        from vsrft.models.ncnn import load_ncnn
        config, state = load_ncnn(path)
        return _finish(config, state, {"source": "ncnn model", "path": str(path)}, path)
    try:
        blob: Any = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise VsrftError(f"cannot read checkpoint {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}") from None
    if not isinstance(blob, dict):
        raise VsrftError(f"checkpoint {path} holds a {type(blob).__name__}, not a state dict")
    if blob.get("format") == FORMAT:
        config, meta, state = blob["config"], blob.get("meta", {}), blob["state_dict"]
    else:
        from vsrft.models.thirdparty import recognise
        config, state = recognise(blob, path)
        meta = {"source": "third-party checkpoint", "path": str(path)}
    return _finish(config, state, meta, path)


def _finish(config: dict, state: dict, meta: dict, path: Path) -> tuple[nn.Module, ModelInfo]:
    model = build(config)
    _load_state(model, state, path)
    model.eval()
    return model, ModelInfo(name=path.stem, config=config, meta=meta)


def _load_state(model: nn.Module, state: dict, path: Path) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise VsrftError(f"checkpoint {path} does not fit {type(model).__name__}: "
                         f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise VsrftError(f"checkpoint {path} does not fit {type(model).__name__}: "
                             f"{k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}")
    model.load_state_dict(state)
