"""Export a network to ONNX once, with dynamic height and width; cache the bytes on disk."""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

log = logging.getLogger(__name__)
OPSET = 17


def cache_dir() -> Path:
    root = os.environ.get("VSRFT_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "vsrft")
    return Path(root) / "onnx"


def weights_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def export_onnx(model: nn.Module, in_channels: int, input_name: str = "window", output_name: str = "hr") -> bytes:
    """ONNX bytes of `model` taking (1, in_channels, h, w) -> (1, 3, H, W), h and w dynamic."""
    model = model.eval()
    dummy = torch.rand(1, in_channels, 36, 52)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, dummy, buf, input_names=[input_name], output_names=[output_name],
                          dynamic_axes={input_name: {2: "h", 3: "w"}, output_name: {2: "H", 3: "W"}},
                          opset_version=OPSET, dynamo=False)
    return buf.getvalue()


# ---------------------------------------------------------------- ONNX files for other tools (--save-adapted)

TOOL_FORMAT = "vsrft-onnx-1"
TOOL_INPUT, TOOL_OUTPUT = "input", "output"      # vs-mlrt's TensorRT backend names the input "input"


def export_for_tools(model: nn.Module, config: dict, meta: dict[str, Any]) -> bytes:
    """A self-describing ONNX file of `model` (docs/onnx.md): input "input" (1, 3*frames, h, w),
    output "output" (1, 3, scale*h, scale*w), and `metadata_props` that say how to feed it (scale,
    frames, layout, value range, colour order, the input filter to apply first), plus what
    `load_onnx_model` needs to rebuild the PyTorch module (its config; the initializers carry the
    parameter names), so that the file also works with `--model` and can be adapted again."""
    import onnx

    frames = int(config.get("frames", 1))
    proto = onnx.load_from_string(export_onnx(model, 3 * frames, TOOL_INPUT, TOOL_OUTPUT))
    props = {
        "vsrft.format": TOOL_FORMAT,
        "vsrft.config": json.dumps(config, sort_keys=True),
        "vsrft.scale": str(int(config["scale"])),
        "vsrft.frames": str(frames),
        "vsrft.layout": (f"input NCHW (1, {3 * frames}, h, w): frames t-{frames // 2}..t+{frames // 2} in order, "
                         "each R, G, B, stacked on channels (edge frames repeated at clip ends); output NCHW "
                         f"(1, 3, {config['scale']}h, {config['scale']}w) RGB"),
        "vsrft.value_range": "0..1 float32 in and out; clip the output to 0..1",
        "vsrft.colour_order": "RGB",
        "vsrft.receptive_radius": str(int(getattr(model, "receptive_radius", 16))),
    }
    props.update({f"vsrft.{k}": v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
                  for k, v in meta.items()})
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = "vsrft model; see the metadata_props and vsrft's docs/onnx.md"
    return proto.SerializeToString()


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """The `metadata_props` of an ONNX file, as a dict."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def load_onnx_model(path: Path) -> tuple[nn.Module, Any]:
    """A PyTorch module and its ModelInfo from an ONNX file written by `export_for_tools`.

    Why rebuild instead of running the graph as is: adaptation differentiates through the
    PyTorch module, and the engine exports that module itself (the same graph, since the
    weights are the same), so a saved file works like any checkpoint, adaptation included."""
    import onnx
    from onnx import numpy_helper

    from vsrft.errors import VsrftError
    from vsrft.models import checkpoint

    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise VsrftError(f"cannot read ONNX model {path} ({type(exc).__name__})") from None
    props = {p.key: p.value for p in proto.metadata_props}
    if props.get("vsrft.format") != TOOL_FORMAT:
        raise VsrftError(f"{path} is an ONNX model vsrft did not write: --model takes the ONNX files of "
                         "--save-adapted (their metadata describes the network); run others with ONNX Runtime")
    config = json.loads(props["vsrft.config"])
    module = checkpoint.build(config)
    weights = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in proto.graph.initializer}
    own = module.state_dict()
    missing = [k for k in own if k not in weights and k in dict(module.named_parameters())]
    if missing:
        raise VsrftError(f"{path} lacks the weights {missing[:3]} of its {config.get('arch')} network")
    module.load_state_dict({k: weights.get(k, v) for k, v in own.items()})
    module.eval()
    meta: dict[str, Any] = {"source": "vsrft ONNX file", "path": str(path)}
    for key, value in props.items():
        if key.startswith("vsrft.") and key not in ("vsrft.format", "vsrft.config"):
            try:
                meta[key[6:]] = json.loads(value)
            except ValueError:
                meta[key[6:]] = value
    return module, checkpoint.ModelInfo(name=path.stem, config=config, meta=meta)


def cached_export(model: nn.Module, in_channels: int, key: str) -> bytes:
    """Export unless an identical graph (same config, weights and torch) is cached."""
    digest = hashlib.sha256(f"{key}|{weights_digest(model)}|{torch.__version__}|{OPSET}".encode()).hexdigest()[:24]
    path = cache_dir() / f"{digest}.onnx"
    if path.is_file():
        return path.read_bytes()
    data = export_onnx(model, in_channels)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot cache ONNX export in %s: %s", path.parent, exc)
    return data


def to_float16(onnx_bytes: bytes) -> bytes:
    """The same graph computing in float16 (for CUDA and TensorRT), float32 at its edges.

    Float initializers and Constant tensors become float16; a Cast after the input and one before
    the output keep the interface float32, so callers and weight swaps see no difference
    (`Runtime.swap_weights` casts new weights to each initializer's type).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    g = model.graph
    for init in g.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype("float16"), init.name))
    for node in g.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                    attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype("float16"), attr.t.name))
    (inp,), (out,) = g.input, g.output
    inner_in, inner_out = f"{inp.name}_f16", f"{out.name}_f16"
    for node in g.node:
        node.input[:] = [inner_in if x == inp.name else x for x in node.input]
        node.output[:] = [inner_out if x == out.name else x for x in node.output]
    g.node.insert(0, helper.make_node("Cast", [inp.name], [inner_in], to=TensorProto.FLOAT16))
    g.node.append(helper.make_node("Cast", [inner_out], [out.name], to=TensorProto.FLOAT))
    del g.value_info[:]
    return model.SerializeToString()
