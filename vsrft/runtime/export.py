"""Export a network to ONNX once, with dynamic height and width; cache the bytes on disk."""
from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from pathlib import Path

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


def export_onnx(model: nn.Module, in_channels: int) -> bytes:
    """ONNX bytes of `model` taking (1, in_channels, h, w) -> (1, 3, H, W), h and w dynamic."""
    model = model.eval()
    dummy = torch.rand(1, in_channels, 36, 52)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, dummy, buf, input_names=["window"], output_names=["hr"],
                          dynamic_axes={"window": {2: "h", 3: "w"}, "hr": {2: "H", 3: "W"}},
                          opset_version=OPSET, dynamo=False)
    return buf.getvalue()


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
