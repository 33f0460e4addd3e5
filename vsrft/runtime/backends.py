"""CPU inference runtimes for the exported ONNX graph, and the per-machine choice among them.

Three runtimes can run a network on the CPU:

- ``onnxruntime``: its CPU execution provider, float32 (the reference, always there);
- ``openvino``: reads the same ONNX bytes; float32 or bfloat16 (`INFERENCE_PRECISION_HINT`) on
  CPUs that compute bf16 natively (AVX512_BF16 or AMX); optional (``pip install 'vsrft[openvino]'``);
- ``torch``: the PyTorch module in channels_last, float32 or bf16 autocast (only when asked for:
  `AUTO_RUNTIMES`).

The ONNX graph stays the interchange: every runtime is built from the graph's initializers, and a
weight swap edits them (`Runtime.swap_weights`) and rebuilds the runtime's session from them
(OpenVINO recompiles, PyTorch loads them into a fresh copy of the module).

`choose` picks the fastest available (runtime, precision) of `AUTO_RUNTIMES` for a graph on this
machine by timing a few inferences of the graph itself at a small size, and caches the choice on
disk, keyed by the CPU model and flags, the graph's structure, the candidates and the library
versions (docs/speed.md, "Runtimes").
"""
from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import logging
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vsrft.errors import VsrftError

log = logging.getLogger(__name__)

RUNTIMES = ("onnxruntime", "openvino", "torch")
# What `--runtime auto` chooses from. Not torch: alone it can be the fastest (bf16 autocast, 2.2x ONNX
# Runtime on a quiet Zen with AVX512_BF16), but its OpenMP threads collapse beside the decoder's and the
# encoder's: `vsrft enhance --no-adapt` took 108 s with it against 27 s with OpenVINO bf16 and 31 s with
# ONNX Runtime (docs/speed.md, "Runtimes"), which a probe of the graph alone cannot see.
AUTO_RUNTIMES = ("onnxruntime", "openvino")
CPU_PRECISIONS = ("fp32", "bf16")
_INSTALL = {"openvino": "pip install 'vsrft[openvino]' (or pip install openvino)"}

# Where bf16 costs at most 0.02 dB Y-PSNR against ground truth (benchmarks/runtimes.py --quality,
# docs/speed.md "bf16 quality"): these models may run in bf16 under --precision auto on CPUs that
# have it; any other model stays float32 unless --precision bf16 asks for it. Built-in models by
# name, third-party ones by `export.weights_digest` (a file name says nothing about its weights).
BF16_DEFAULT_MODELS: frozenset[str] = frozenset({
    "vsrft-mse", "vsrft-gan",
    "weights:83054632e6a84540",     # Real-ESRGAN animevideov3 x4 (ncnn REALESRGAN_ANIMAVIDEOV3_UP4X)
})


def bf16_default(name: str, module: Any) -> bool:
    """The model is one whose bf16 loss was measured at <= 0.02 dB (`BF16_DEFAULT_MODELS`)."""
    if name in BF16_DEFAULT_MODELS:
        return True
    from vsrft.runtime.export import weights_digest
    return f"weights:{weights_digest(module)}" in BF16_DEFAULT_MODELS

# The CPU features that decide which kernels the runtimes use (part of the probe's cache key).
_KEY_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
              "amx_tile", "amx_bf16", "amx_int8", "amx_fp16", "asimd", "bf16", "sve")


# ------------------------------------------------------------------------------------ the machine

@lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    """{"model": CPU model name, "flags": the relevant feature flags present, "cores": physical
    cores this process may use} from /proc/cpuinfo (other systems: platform's best guess)."""
    model, flags, cores = platform.processor() or platform.machine(), set(), set()
    phys = core = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        text = ""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    proc = None
    for line in text.splitlines() + [""]:
        key, _, value = (s.strip() for s in line.partition(":"))
        if key == "processor":
            proc = int(value) if value.isdigit() else None
        elif key in ("model name", "Model name") and value:
            model = value
        elif key in ("flags", "Features"):
            flags.update(value.split())
        elif key == "physical id":
            phys = value
        elif key == "core id":
            core = value
        elif not line.strip():
            if proc is not None and (allowed is None or proc in allowed):
                cores.add((phys, core) if core is not None else ("cpu", proc))
            proc = phys = core = None
    n = len(cores) or len(allowed or ()) or os.cpu_count() or 1
    return {"model": model, "flags": sorted(f for f in flags if f in _KEY_FLAGS), "cores": n}


def physical_cores() -> int:
    return int(cpu_info()["cores"])


def cpu_has_bf16() -> bool:
    """The CPU computes bf16 dot products natively (x86 AVX512_BF16 or AMX-BF16; Arm BF16)."""
    flags = set(cpu_info()["flags"])
    return bool(flags & {"avx512_bf16", "amx_bf16"}) or (platform.machine() in ("aarch64", "arm64") and "bf16" in flags)


def available(runtime: str) -> bool:
    if runtime in ("onnxruntime", "torch"):
        return True
    if runtime == "openvino":
        return importlib.util.find_spec("openvino") is not None
    return False


def available_runtimes() -> list[str]:
    return [r for r in RUNTIMES if available(r)]


def supports_bf16(runtime: str) -> bool:
    """The runtime computes in bf16 on this CPU at the CPU's rate (never emulated)."""
    if runtime == "onnxruntime" or not available(runtime) or not cpu_has_bf16():
        return False      # ONNX Runtime's CPU EP has no bf16 convolutions
    if runtime == "openvino":
        return "BF16" in _ov_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    import torch
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def check(runtime: str, precision: str) -> None:
    """A runtime or precision named by the user that this machine cannot run: one-line error."""
    if runtime not in ("auto", *RUNTIMES):
        raise VsrftError(f"unknown runtime {runtime!r}: use auto, {', '.join(RUNTIMES)}")
    if precision not in ("auto", *CPU_PRECISIONS):
        raise VsrftError(f"unknown precision {precision!r}: use auto, {', '.join(CPU_PRECISIONS)}")
    if runtime != "auto" and not available(runtime):
        raise VsrftError(f"runtime {runtime} is not installed here ({_INSTALL.get(runtime, 'pip install ' + runtime)}); "
                         f"available: {', '.join(available_runtimes())}")
    if precision == "bf16":
        if not cpu_has_bf16():
            raise VsrftError(f"--precision bf16 needs a CPU with AVX512_BF16 or AMX ({cpu_info()['model']} has "
                             "neither); use fp32")
        able = [r for r in available_runtimes() if supports_bf16(r)]
        if runtime != "auto" and runtime not in able:
            raise VsrftError(f"runtime {runtime} has no bf16 on the CPU; bf16 runs with: {', '.join(able) or 'none here'}")


# ------------------------------------------------------------------------------------ sessions

class OpenVinoSession:
    """A compiled OpenVINO model of the ONNX bytes; `__call__` (1, C, h, w) -> (1, 3, H, W)."""

    def __init__(self, onnx_bytes: bytes, precision: str, threads: int = 0) -> None:
        core = _ov_core()
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                  "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                  # its default thread count on a 2-core VM was slower than the core count (docs/speed.md)
                  "INFERENCE_NUM_THREADS": int(threads or physical_cores())}
        self.compiled = core.compile_model(core.read_model(onnx_bytes), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.request.infer({0: x}, share_inputs=True)[0].copy()


class TorchSession:
    """The PyTorch module with the graph's weights, channels_last, fp32 or bf16 autocast."""

    def __init__(self, module: Any, precision: str) -> None:
        import torch
        self.module = module.eval().to(memory_format=torch.channels_last)
        self.bf16 = precision == "bf16"

    @classmethod
    def from_weights(cls, base: Any, weights: dict[str, np.ndarray], precision: str) -> "TorchSession":
        """A fresh copy of `base` with the named weights (the ONNX initializer names, equal to the
        module's parameter names; the others keep `base`'s values)."""
        import torch
        module = copy.deepcopy(base)
        own = module.state_dict()
        module.load_state_dict({k: torch.from_numpy(np.array(weights[k], dtype=np.float32)).reshape(v.shape)
                                if k in weights else v for k, v in own.items()})
        return cls(module, precision)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch
        t = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
            return self.module(t).float().contiguous().numpy()


@lru_cache(maxsize=1)
def _ov_core():
    import openvino as ov
    return ov.Core()


# ------------------------------------------------------------------------------------ the probe

@dataclass
class Choice:
    runtime: str
    precision: str
    ms: dict[str, float] = field(default_factory=dict)   # "runtime/precision" -> median ms at the probe size
    cached: bool = False                                   # read from the probe cache, nothing timed

    @property
    def label(self) -> str:
        return f"{self.runtime}/{self.precision}"


PROBE_SIZE = (96, 160)      # LR h, w: large enough for the runtimes' threading to matter
PROBE_WARMUP, PROBE_ROUNDS = 2, 5


def probe_cache_path() -> Path:
    from vsrft.runtime.export import cache_dir
    return cache_dir().parent / "runtime-probe.json"


def graph_digest(onnx_bytes: bytes) -> str:
    """The graph's structure (nodes, attributes, initializer names and shapes), not its weights:
    new weights run at the same speed, so a probe holds for every adaptation of a model."""
    import onnx
    proto = onnx.load_from_string(onnx_bytes)
    h = hashlib.sha256()
    for node in proto.graph.node:
        h.update(node.SerializeToString(deterministic=True) if node.op_type != "Constant" else node.op_type.encode())
    for init in proto.graph.initializer:
        h.update(f"{init.name}{tuple(init.dims)}{init.data_type}".encode())
    return h.hexdigest()[:16]


def _versions(runtimes: list[str]) -> dict[str, str]:
    import onnxruntime
    import torch
    out = {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__}
    if "openvino" in runtimes:
        import openvino
        out["openvino"] = openvino.__version__
    return out


def candidates(runtime: str, precision: str, bf16_default: bool,
               usable: tuple[str, ...] = RUNTIMES) -> list[tuple[str, str]]:
    """(runtime, precision) pairs `choose` may pick from, after `check(runtime, precision)`; `usable`:
    the runtimes the caller can build (the torch runtime needs the PyTorch module)."""
    runtimes = [r for r in available_runtimes() if r in usable and r in AUTO_RUNTIMES] if runtime == "auto" else [runtime]
    out = []
    for r in runtimes:
        if precision in ("auto", "fp32"):
            out.append((r, "fp32"))
        if (precision == "bf16" or (precision == "auto" and bf16_default)) and supports_bf16(r):
            out.append((r, "bf16"))
    return out


def choose(onnx_bytes: bytes, make_session: Callable[[str, str, bytes], Callable[[np.ndarray], np.ndarray]],
           in_channels: int, *, runtime: str = "auto", precision: str = "auto", bf16_default: bool = False,
           threads: int = 0, usable: tuple[str, ...] = RUNTIMES) -> Choice:
    """The fastest of the `candidates` for this graph on this machine, from the cache when it has
    this key, else timed (`PROBE_ROUNDS` interleaved rounds at `PROBE_SIZE`, medians) and cached.

    `make_session(runtime, precision, onnx_bytes)` builds a session as the `Runtime` would."""
    check(runtime, precision)
    if runtime not in ("auto", *usable):
        raise VsrftError(f"runtime {runtime} cannot run this model here (it runs with: {', '.join(usable)})")
    pairs = candidates(runtime, precision, bf16_default, usable)
    if not pairs:
        raise VsrftError(f"no runtime here can run --runtime {runtime} --precision {precision}")
    if len(pairs) == 1:
        return Choice(*pairs[0])
    info = cpu_info()
    key_text = json.dumps({"cpu": info["model"], "flags": info["flags"], "cores": info["cores"], "threads": threads,
                           "graph": graph_digest(onnx_bytes), "candidates": pairs,
                           "versions": _versions([r for r, _ in pairs])}, sort_keys=True)
    key = hashlib.sha256(key_text.encode()).hexdigest()[:24]
    path = probe_cache_path()
    cache = _read_cache(path)
    hit = cache.get(key)
    if hit and tuple(hit.get("choice", ())) in {tuple(p) for p in pairs}:
        return Choice(hit["choice"][0], hit["choice"][1], hit.get("ms", {}), cached=True)
    ms = probe(onnx_bytes, make_session, in_channels, pairs)
    best = min(pairs, key=lambda p: ms[f"{p[0]}/{p[1]}"])
    log.info("runtime probe (%dx%d, ms): %s -> %s/%s", PROBE_SIZE[1], PROBE_SIZE[0],
             ", ".join(f"{k} {v:.1f}" for k, v in ms.items()), *best)
    cache = _read_cache(path)           # another process may have written meanwhile
    cache[key] = {"choice": list(best), "ms": ms, "key": json.loads(key_text), "when": time.strftime("%Y-%m-%d %H:%M")}
    _write_cache(path, cache)
    return Choice(best[0], best[1], ms)


def probe(onnx_bytes: bytes, make_session: Callable[[str, str, bytes], Callable[[np.ndarray], np.ndarray]],
          in_channels: int, pairs: list[tuple[str, str]]) -> dict[str, float]:
    """Median ms of one inference at `PROBE_SIZE` per pair, rounds interleaved (A, B, A, B, ...)."""
    x = np.random.default_rng(0).random((1, in_channels, *PROBE_SIZE), dtype=np.float32)
    sessions = {}
    for r, p in pairs:
        try:
            sess = make_session(r, p, onnx_bytes)
            if not callable(sess):              # an ONNX Runtime session
                sess = (lambda s, name: lambda v: s.run(None, {name: v})[0])(sess, sess.get_inputs()[0].name)
            for _ in range(PROBE_WARMUP):       # the first calls at a shape prepare kernels and buffers
                sess(x)
            sessions[f"{r}/{p}"] = sess
        except Exception as exc:  # noqa: BLE001 - a runtime that cannot run this graph is skipped
            log.warning("runtime %s/%s cannot run this model (%s: %s); not considered", r, p,
                        type(exc).__name__, str(exc).splitlines()[0][:160] if str(exc) else "")
    if not sessions:
        raise VsrftError("no runtime could run this model")
    medians = interleaved_medians(sessions, x, PROBE_ROUNDS)
    return {k: round(1e3 * v, 2) for k, v in medians.items()} | \
        {f"{r}/{p}": float("inf") for r, p in pairs if f"{r}/{p}" not in sessions}


def interleaved_medians(fns: dict[str, Callable[[np.ndarray], Any]], x: np.ndarray, rounds: int) -> dict[str, float]:
    """Median seconds of `fn(x)` per name over `rounds`, the names interleaved in each round (A, B,
    A, B, ...), so that a busy machine slows them alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn(x)
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, cache: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True, default=str))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot cache the runtime probe in %s: %s", path, exc)


# ------------------------------------------------------------------------------------ process defaults

_DEFAULTS: dict[str, str] = {}


def set_defaults(runtime: str | None = None, precision: str | None = None) -> None:
    """The runtime and precision of every later `Network.load` of this process that names none
    (the command line's --runtime/--precision, `vsrft.options.make_enhancer`); None: not set, so
    $VSRFT_RUNTIME/$VSRFT_PRECISION, else auto. Checked here: a runtime that is not installed is a
    one-line error before any model is loaded."""
    check(runtime or "auto", precision or "auto")
    for key, value in (("runtime", runtime), ("precision", precision)):
        if value is None:
            _DEFAULTS.pop(key, None)
        else:
            _DEFAULTS[key] = value


def default_runtime() -> str:
    return _DEFAULTS.get("runtime") or os.environ.get("VSRFT_RUNTIME") or "auto"


def default_precision() -> str:
    return _DEFAULTS.get("precision") or os.environ.get("VSRFT_PRECISION") or "auto"
