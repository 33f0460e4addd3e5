"""Read ncnn ``.param``/``.bin`` pairs (what Video2X and realesrgan-ncnn-vulkan users have on disk).

Only two graph shapes are accepted, each mapped one to one onto a torch module whose state
dict matches BasicSR's, so the result adapts and exports like any other vsrft model:

* Real-ESRGAN SRVGGNetCompact (``realesr-animevideov3``, ``realesr-general``): Convolution +
  PReLU (or a conv-fused ReLU / LeakyReLU 0.1) chain, PixelShuffle, nearest Interp of the
  input, BinaryOp add, optionally a trailing bicubic Interp that rescales the output (the
  sr-vulkan packages ship x2/x3 as the x4 net followed by a 0.5/0.75 bicubic resize).
* ESRGAN RRDBNet x4 (``RealESRGAN_x4plus``, ``_x4plus_anime_6B``): 1 + 15*blocks + 5 convolutions
  with Split/Concat/Eltwise, and two nearest x2 Interps.

Anything else (other layer types, quantised weights, other wiring) is refused with a one-line
``VsrftError`` rather than guessed at.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vsrft.errors import VsrftError

MAGIC = 7767517
FP16_TAG = 0x01306B47
SRVGG_TYPES = {"Input", "Split", "Convolution", "PReLU", "PixelShuffle", "Interp", "BinaryOp"}
RRDB_TYPES = {"Input", "Split", "Convolution", "Concat", "Eltwise", "BinaryOp", "Interp"}
# ncnn Convolution activation_type (param 9): 0 none, 1 ReLU, 2 LeakyReLU(slope), 3 clip, 4 sigmoid ...
ACT_NONE, ACT_RELU, ACT_LEAKY = 0, 1, 2
INTERP_NEAREST, INTERP_BICUBIC = 1, 3


@dataclass
class Layer:
    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, int | float | list[float]] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    def int(self, key: int, default: int = 0) -> int:
        return int(self.params.get(key, default))  # type: ignore[arg-type]

    def float(self, key: int, default: float = 0.0) -> float:
        return float(self.params.get(key, default))  # type: ignore[arg-type]


def _value(text: str) -> int | float:
    return float(text) if re.search(r"[.eE]", text) else int(text)


def parse_param(path: Path) -> list[Layer]:
    """The layers of a text ``.param`` file, in file order (ncnn's load and execution order)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise VsrftError(f"cannot read ncnn model {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise VsrftError(f"ncnn model {path} is not a text .param file (binary .param.bin is not supported)") from None
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != [str(MAGIC)]:
        raise VsrftError(f"{path} is not an ncnn .param file (first line is not the magic {MAGIC})")
    try:
        layer_count = int(lines[1][0])
        layers = []
        for tokens in lines[2:]:
            n_in, n_out = int(tokens[2]), int(tokens[3])
            ins, outs = tokens[4:4 + n_in], tokens[4 + n_in:4 + n_in + n_out]
            if len(ins) != n_in or len(outs) != n_out:
                raise ValueError(f"layer {tokens[1]} lists fewer blobs than it declares")
            params: dict[int, int | float | list[float]] = {}
            for kv in tokens[4 + n_in + n_out:]:
                key_text, value = kv.split("=", 1)
                key = int(key_text)
                if key <= -23300:  # array parameter: "-233xx=n,v1,...,vn" for id xx
                    items = value.split(",")
                    params[-key - 23300] = [float(_value(v)) for v in items[1:1 + int(items[0])]]
                else:
                    params[key] = _value(value)
            layers.append(Layer(tokens[0], tokens[1], ins, outs, params))
    except (IndexError, ValueError) as exc:
        raise VsrftError(f"ncnn model {path} is malformed: {exc}") from None
    if len(layers) != layer_count:
        raise VsrftError(f"ncnn model {path} is malformed: header says {layer_count} layers, file has {len(layers)}")
    return layers


class _Reader:
    """Sequential reader of the ``.bin``, following ncnn's ModelBin rules."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise VsrftError(f"ncnn weights {self.path} are truncated (need {self.pos + n} bytes, file has {len(self.data)})")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def fp32(self, count: int) -> np.ndarray:
        return np.frombuffer(self.take(4 * count), dtype="<f4").copy()

    def flagged(self, count: int, layer: Layer) -> np.ndarray:
        """Weight data preceded by ncnn's 4-byte flag: 0 = fp32 raw, 0x01306B47 = fp16."""
        tag = int.from_bytes(self.take(4), "little")
        if tag == 0:
            return self.fp32(count)
        if tag == FP16_TAG:
            data = self.take((2 * count + 3) // 4 * 4)  # fp16 data is padded to 4 bytes
            return np.frombuffer(data[:2 * count], dtype="<f2").astype(np.float32)
        raise VsrftError(f"ncnn weights {self.path}: layer {layer.name} is quantised (flag 0x{tag:08x}); "
                         "only fp32 and fp16 weights are supported")


def read_weights(layers: list[Layer], bin_path: Path) -> None:
    """Attach each layer's weights from the ``.bin`` (fills ``Layer.weights``)."""
    try:
        data = bin_path.read_bytes()
    except OSError as exc:
        raise VsrftError(f"cannot read ncnn weights {bin_path}: {exc.strerror or exc}") from None
    reader = _Reader(data, bin_path)
    for layer in layers:
        if layer.type == "Convolution":
            if layer.int(8) or layer.int(19):
                raise VsrftError(f"ncnn model: layer {layer.name} is an int8 or dynamic-weight Convolution (unsupported)")
            out, k, size = layer.int(0), layer.int(1), layer.int(6)
            kh = layer.int(11, k)
            if out <= 0 or k <= 0 or size % (out * k * kh):
                raise VsrftError(f"ncnn model: layer {layer.name} has inconsistent sizes (0={out} 1={k} 6={size})")
            layer.weights["weight"] = reader.flagged(size, layer).reshape(out, size // (out * k * kh), kh, k)
            if layer.int(5):
                layer.weights["bias"] = reader.fp32(out)
        elif layer.type == "PReLU":
            layer.weights["weight"] = reader.fp32(layer.int(0))
    if reader.pos != len(data):
        raise VsrftError(f"ncnn weights {bin_path} do not match the .param "
                         f"({len(data) - reader.pos} bytes left over after the last layer)")


def _refuse_types(layers: list[Layer], allowed: set[str], path: Path) -> None:
    for layer in layers:
        if layer.type not in allowed:
            raise VsrftError(f"ncnn model {path}: layer type {layer.type} ({layer.name}) is not supported; "
                             "supported graphs: Real-ESRGAN SRVGGNetCompact and RRDBNet")


def _conv_state(conv: Layer, prefix: str, path: Path) -> dict[str, torch.Tensor]:
    if (conv.int(1) != 3 or conv.int(11, 3) != 3 or conv.int(2, 1) != 1 or conv.int(12, 1) != 1
            or conv.int(3, 1) != 1 or conv.int(13, 1) != 1 or conv.int(4) != 1 or conv.int(14, 1) != 1):
        raise VsrftError(f"ncnn model {path}: {conv.name} is not a 3x3 stride-1 pad-1 convolution")
    if "bias" not in conv.weights:
        raise VsrftError(f"ncnn model {path}: {conv.name} has no bias")
    return {f"{prefix}.weight": torch.from_numpy(conv.weights["weight"]),
            f"{prefix}.bias": torch.from_numpy(conv.weights["bias"])}


def _activation(conv: Layer) -> tuple[int, float]:
    act = conv.int(9)
    slope = conv.params.get(10, [0.0])
    return act, float(slope[0]) if isinstance(slope, list) and slope else 0.0


def _srvgg(layers: list[Layer], path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    _refuse_types(layers, SRVGG_TYPES, path)
    convs = [layer for layer in layers if layer.type == "Convolution"]
    prelus = [layer for layer in layers if layer.type == "PReLU"]
    shuffles = [layer for layer in layers if layer.type == "PixelShuffle"]
    interps = [layer for layer in layers if layer.type == "Interp"]
    adds = [layer for layer in layers if layer.type == "BinaryOp"]
    if len(convs) < 3 or len(shuffles) != 1 or len(adds) != 1 or adds[0].int(0) != 0 or not 1 <= len(interps) <= 2:
        raise VsrftError(f"ncnn model {path}: Convolution/PixelShuffle graph is not SRVGGNetCompact-shaped")
    if prelus:
        act_type = "prelu"
        if len(prelus) != len(convs) - 1:
            raise VsrftError(f"ncnn model {path}: {len(prelus)} PReLU for {len(convs)} convolutions; not SRVGGNetCompact")
    else:
        acts = {_activation(c) for c in convs[:-1]}
        if acts == {(ACT_RELU, 0.0)}:
            act_type = "relu"
        elif len(acts) == 1 and next(iter(acts))[0] == ACT_LEAKY and abs(next(iter(acts))[1] - 0.1) < 1e-6:
            act_type = "leakyrelu"
        else:
            raise VsrftError(f"ncnn model {path}: activation {sorted(acts)} is not SRVGGNetCompact's")
    if _activation(convs[-1])[0] != ACT_NONE or (prelus and any(_activation(c)[0] for c in convs)):
        raise VsrftError(f"ncnn model {path}: unexpected fused activation; not SRVGGNetCompact")
    net_scale = shuffles[0].int(0)
    skip = interps[0]
    if (skip.int(0) != INTERP_NEAREST or abs(skip.float(1) - net_scale) > 1e-6 or abs(skip.float(2) - net_scale) > 1e-6
            or convs[-1].int(0) != 3 * net_scale * net_scale):
        raise VsrftError(f"ncnn model {path}: input skip / PixelShuffle x{net_scale} do not match; not SRVGGNetCompact")
    scale = net_scale
    if len(interps) == 2:
        final = interps[1]
        factor = final.float(1)
        scale = round(net_scale * factor)
        if (final.int(0) != INTERP_BICUBIC or final.int(6) or abs(final.float(2) - factor) > 1e-6
                or abs(net_scale * factor - scale) > 1e-4 or not 1 <= scale <= net_scale):
            raise VsrftError(f"ncnn model {path}: final Interp (type {final.int(0)}, x{factor}) is not a bicubic "
                             "rescale to an integer scale")
        if final.inputs != adds[0].outputs:
            raise VsrftError(f"ncnn model {path}: the final Interp does not rescale the network output")
    state: dict[str, torch.Tensor] = {}
    for i, conv in enumerate(convs):
        state.update(_conv_state(conv, f"body.{2 * i}", path))
    for i, prelu in enumerate(prelus):
        state[f"body.{2 * i + 1}.weight"] = torch.from_numpy(prelu.weights["weight"])
    if convs[0].weights["weight"].shape[1] != 3:
        raise VsrftError(f"ncnn model {path}: first convolution takes {convs[0].weights['weight'].shape[1]} channels, not 3")
    config = {"arch": "srvgg", "num_feat": int(convs[0].int(0)), "num_conv": len(convs) - 2, "scale": scale,
              "act_type": act_type, "frames": 1}
    if scale != net_scale:
        config["net_scale"] = net_scale
    return config, state


def _rrdb(layers: list[Layer], path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    _refuse_types(layers, RRDB_TYPES, path)
    convs = [layer for layer in layers if layer.type == "Convolution"]
    interps = [layer for layer in layers if layer.type == "Interp"]
    eltwise = [layer for layer in layers if layer.type == "Eltwise"]
    num_block, rest = divmod(len(convs) - 6, 15)
    if rest or num_block < 1:
        raise VsrftError(f"ncnn model {path}: {len(convs)} convolutions is not 6 + 15*blocks; not RRDBNet")
    if len(interps) != 2 or any(i.int(0) != INTERP_NEAREST or i.float(1) != 2 or i.float(2) != 2 for i in interps):
        raise VsrftError(f"ncnn model {path}: RRDBNet needs exactly two nearest x2 Interp layers")
    if len(eltwise) != 4 * num_block or any(e.int(0) != 1 or e.params.get(1) != [0.2, 1.0] for e in eltwise):
        raise VsrftError(f"ncnn model {path}: residual Eltwise layers are not RRDBNet's (sum, 0.2 / 1.0)")
    names = ["conv_first"]
    for b in range(num_block):
        names += [f"body.{b}.rdb{r}.conv{c}" for r in (1, 2, 3) for c in range(1, 6)]
    names += ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]
    leaky = {n for n in names if n.endswith(("conv1", "conv2", "conv3", "conv4")) or n in ("conv_up1", "conv_up2", "conv_hr")}
    state: dict[str, torch.Tensor] = {}
    for name, conv in zip(names, convs):
        act, slope = _activation(conv)
        want = (ACT_LEAKY, 0.2) if name in leaky else (ACT_NONE, 0.0)
        if act != want[0] or abs(slope - want[1]) > 1e-6:
            raise VsrftError(f"ncnn model {path}: {conv.name} ({name}) has activation {act} (slope {slope}), "
                             f"RRDBNet needs {want[0]}")
        state.update(_conv_state(conv, name, path))
    in_ch = convs[0].weights["weight"].shape[1]
    if in_ch != 3:
        raise VsrftError(f"ncnn model {path}: RRDBNet with {in_ch} input channels (pixel-unshuffled x2/x1) "
                         "is not supported from ncnn")
    config = {"arch": "rrdb", "num_feat": int(convs[0].int(0)), "num_block": num_block,
              "num_grow_ch": int(convs[1].int(0)), "scale": 4, "frames": 1}
    return config, state


def load_ncnn(param_path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config, BasicSR-named state dict) of an ncnn model; the ``.bin`` lies next to the ``.param``."""
    param_path = Path(param_path)
    bin_path = param_path.with_suffix(".bin")
    if not bin_path.is_file():
        raise VsrftError(f"ncnn model {param_path} has no weights file {bin_path.name} next to it")
    layers = parse_param(param_path)
    types = {layer.type for layer in layers}
    for layer in layers:  # refuse before reading weights whose layout we cannot know
        if layer.type not in SRVGG_TYPES | RRDB_TYPES:
            raise VsrftError(f"ncnn model {param_path}: layer type {layer.type} ({layer.name}) is not supported; "
                             "supported graphs: Real-ESRGAN SRVGGNetCompact and RRDBNet")
    read_weights(layers, bin_path)
    if "PixelShuffle" in types:
        return _srvgg(layers, param_path)
    if "Eltwise" in types or "Concat" in types:
        return _rrdb(layers, param_path)
    raise VsrftError(f"ncnn model {param_path}: graph is neither SRVGGNetCompact (no PixelShuffle) "
                     "nor RRDBNet (no dense blocks)")
