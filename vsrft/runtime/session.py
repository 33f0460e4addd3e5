"""Inference sessions: provider and runtime choice, tiled inference, and weight hot-swap without re-export.

ONNX Runtime runs the graph by default (and always on GPU providers); `runtime=` also runs it with
OpenVINO or PyTorch on the CPU (`vsrft.runtime.backends`), built from the same graph's weights."""
from __future__ import annotations

import difflib
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from vsrft.errors import VsrftError
from vsrft.runtime import backends
from vsrft.runtime.export import cache_dir, to_float16

log = logging.getLogger(__name__)

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


_WARNED_MISSING: set[str] = set()     # providers already warned about in this process


def check_providers(requested: list[str] | None) -> None:
    """Refuse a name ONNX Runtime does not know at all (a typo must not run silently on the CPU), and
    warn, once per process, about a known one that this installation cannot use (the CPU takes over)."""
    if not requested:
        return
    known = ort.get_all_providers()
    for name in requested:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6) or \
                [k for k in known if k.lower().startswith(name.lower())][:1]
            hint = f"did you mean {close[0]}? " if close else ""
            raise VsrftError(f"unknown execution provider {name!r}: {hint}ONNX Runtime has no such provider "
                             f"(available here: {', '.join(ort.get_available_providers())})")
    available = ort.get_available_providers()
    usable = [p for p in requested if p in available and p != "CPUExecutionProvider"]
    for name in dict.fromkeys(requested):
        if name not in available and name not in _WARNED_MISSING:
            _WARNED_MISSING.add(name)
            log.warning("execution provider %s is not available in this ONNX Runtime (it has %s): %s", name,
                        ", ".join(available), f"using {usable[0]}" if usable else "falling back to the CPU")


def choose_providers(requested: list[str] | None = None) -> list[str]:
    """Best available first: TensorRT, CUDA, then CPU (always last, as the fallback).

    `requested` names are checked first (`check_providers`): unknown is an error, unavailable a warning."""
    check_providers(requested)
    available = set(ort.get_available_providers())
    wanted = requested or list(PREFERRED_PROVIDERS)
    chosen = [p for p in dict.fromkeys(wanted) if p in available and p != "CPUExecutionProvider"]
    return chosen + ["CPUExecutionProvider"]


_MEMORY_LIMIT: list[int] = []    # the process-wide CPU arena cap, once registered


def limit_memory(megabytes: int) -> None:
    """Cap ONNX Runtime's CPU memory arena for every later session of this process.

    ONNX Runtime registers such an allocator once per process, so a second, different cap
    is refused rather than silently ignored.
    """
    limit = int(megabytes) * 1024 * 1024
    if _MEMORY_LIMIT:
        if _MEMORY_LIMIT[0] != limit:
            raise ValueError(f"the inference memory limit is already {_MEMORY_LIMIT[0] >> 20} MB in this process")
        return
    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(limit, -1, -1, -1))
    _MEMORY_LIMIT.append(limit)


def session_options(threads: int = 0) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    # Spinning threads steal the CPU from decoding, encoding and fine-tuning beside inference.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if _MEMORY_LIMIT:
        so.add_session_config_entry("session.use_env_allocators", "1")
    so.log_severity_level = 4          # failures reach us as exceptions; the log would repeat them
    return so


_OUT_OF_MEMORY = ("available memory of", "failed to allocate", "bad_alloc", "out of memory", "cudnn_status_alloc",
                  "cuda failure 2", "cudaerrormemoryallocation")


def is_out_of_memory(exc: BaseException) -> bool:
    """An allocation failure of any execution provider (CPU arena, CUDA, cuDNN, TensorRT)."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or any(k in text for k in _OUT_OF_MEMORY)


@dataclass(frozen=True)
class TilePlan:
    """Split an (h, w) LR frame into tiles of at most `tile` pixels a side with `overlap` context."""

    tile: int
    overlap: int

    def shrunk(self, frame_side: int) -> "TilePlan | None":
        """A plan with tiles half as large (after an out-of-memory), or None when it cannot shrink."""
        tile = min(self.tile, frame_side) // 2
        if tile - 2 * self.overlap < 16:
            return None
        return TilePlan(tile=tile, overlap=self.overlap)

    def spans(self, n: int) -> list[tuple[int, int, int, int]]:
        """Per tile along one axis: (read_start, read_end, keep_start, keep_end) in LR pixels."""
        if n <= self.tile:
            return [(0, n, 0, n)]
        core = self.tile - 2 * self.overlap
        count = math.ceil(n / core)
        core = math.ceil(n / count)
        out = []
        for i in range(count):
            k0, k1 = i * core, min(n, (i + 1) * core)
            out.append((max(0, k0 - self.overlap), min(n, k1 + self.overlap), k0, k1))
        return out


class Runtime:
    """One ONNX Runtime session for a network; `run` upscales a stacked window.

    State that is truly state: the session and the parsed model whose initializers are
    replaced on `swap_weights`.
    """

    def __init__(self, onnx_bytes: bytes, scale: int, receptive_radius: int, *,
                 providers: list[str] | None = None, threads: int = 0, tile: int = 512,
                 precision: str = "auto", io_binding: bool | None = None, runtime: str = "onnxruntime",
                 module: "torch.nn.Module | None" = None, bf16_default: bool = False) -> None:
        """`runtime`: onnxruntime, openvino, torch (needs `module`, the network the graph was exported
        from) or auto (the fastest here, `backends.choose`); GPU execution providers, when present,
        keep their priority over auto. `precision`: auto (float16 on CUDA; on the CPU bf16 where
        `bf16_default` and the CPU has it, if faster), fp32, fp16 (ONNX Runtime) or bf16 (CPU)."""
        if precision not in ("auto", "fp32", "fp16", "bf16"):
            raise ValueError(f"precision must be auto, fp32, fp16 or bf16, got {precision!r}")
        self.scale = scale
        self.threads = threads
        self.plan = TilePlan(tile=max(tile, 4 * receptive_radius + 8), overlap=receptive_radius + 2)
        self.providers = choose_providers(providers)
        self._precision = precision
        self._fp32_bytes = onnx_bytes
        self._module = module
        self.choice = self._choose_backend(runtime, bf16_default)
        self._configure()
        self.io_binding = self.backend == "onnxruntime" and (self.device != "cpu" if io_binding is None else io_binding)
        self.session = self._make_session(self.proto.SerializeToString())

    def _choose_backend(self, runtime: str, bf16_default: bool) -> backends.Choice:
        gpu = self.providers[0] != "CPUExecutionProvider"
        if runtime == "onnxruntime" or self._precision == "fp16" or (gpu and runtime == "auto"):
            if self._precision == "bf16":
                where = f"on {self.providers[0]}" if gpu else "in ONNX Runtime's CPU provider"
                raise VsrftError(f"--precision bf16 is not available {where}: use fp32 or auto"
                                 + ("" if gpu else ", or --runtime openvino or torch"))
            return backends.Choice("onnxruntime", "fp16" if self._precision == "fp16" else "fp32")
        if gpu:
            log.warning("--runtime %s runs on the CPU although %s is available", runtime, self.providers[0])
            self.providers = ["CPUExecutionProvider"]
        usable = tuple(r for r in backends.RUNTIMES if r != "torch" or self._module is not None)
        return backends.choose(self._fp32_bytes, self._build_session, int(self._input_channels()), runtime=runtime,
                               precision=self._precision, bf16_default=bf16_default, threads=self.threads,
                               usable=usable)

    def keep_full_precision(self) -> None:
        """Leave a bf16 that `--precision auto` chose for float32 (from now on, same weights):
        for deep (> 8-bit) sources, whose precision bf16's 8 significant bits would lose."""
        if self._precision == "auto" and self.choice.precision == "bf16":
            log.info("a deep source: %s runs in float32 instead of bf16", self.choice.runtime)
            self.choice = backends.Choice(self.choice.runtime, "fp32")
            self.session = self._make_session(self.proto.SerializeToString())

    def _input_channels(self) -> int:
        proto = onnx.load_from_string(self._fp32_bytes)
        return proto.graph.input[0].type.tensor_type.shape.dim[1].dim_value

    @property
    def backend(self) -> str:
        return self.choice.runtime

    @property
    def label(self) -> str:
        """What runs the network: "onnxruntime/fp32 (CPUExecutionProvider)", "openvino/bf16", ..."""
        return self.choice.label + (f" ({self.provider})" if self.backend == "onnxruntime" else "")

    def _build_session(self, runtime: str, precision: str, data: bytes, state: dict | None = None):
        """A session of `runtime` at `precision` for the ONNX bytes (`state`: new weights for the
        torch runtime, put into a copy of the current module instead of reading them from `data`)."""
        if runtime == "onnxruntime":
            return ort.InferenceSession(data, session_options(self.threads), providers=["CPUExecutionProvider"])
        if runtime == "openvino":
            return backends.OpenVinoSession(data, precision, self.threads)
        if state is not None and isinstance(getattr(self, "session", None), backends.TorchSession):
            return backends.TorchSession.from_weights(self.session.module, state, precision)
        proto = onnx.load_from_string(data)
        weights = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
        return backends.TorchSession.from_weights(self._module, weights, precision)

    def _configure(self) -> None:
        """Graph precision for the chosen providers: float16 on CUDA (TensorRT converts by itself)."""
        first = self.providers[0]
        self.device = "cpu" if first == "CPUExecutionProvider" else "cuda"
        self.fp16 = self.backend == "onnxruntime" and (
            self._precision == "fp16" or (self._precision == "auto" and first == "CUDAExecutionProvider"))
        data = to_float16(self._fp32_bytes) if self.fp16 else self._fp32_bytes
        self.proto = onnx.load_from_string(data)
        self._initializer_index = {init.name: i for i, init in enumerate(self.proto.graph.initializer)}

    def _provider_options(self) -> list[dict[str, str]]:
        opts = {"TensorrtExecutionProvider": {"trt_fp16_enable": "True" if self._precision != "fp32" else "False",
                                              "trt_engine_cache_enable": "True",
                                              "trt_engine_cache_path": str(cache_dir().parent / "trt")},
                "CUDAExecutionProvider": {"cudnn_conv_algo_search": "HEURISTIC"}}
        return [opts.get(p, {}) for p in self.providers]

    def _make_session(self, data: bytes, state: dict | None = None):
        if self.backend != "onnxruntime":
            return self._build_session(self.backend, self.choice.precision, data, state)
        try:
            sess = ort.InferenceSession(data, session_options(self.threads), providers=self.providers,
                                        provider_options=self._provider_options())
        except Exception as exc:  # noqa: BLE001 - a GPU provider failing to load falls back to CPU
            if self.providers == ["CPUExecutionProvider"]:
                raise
            log.warning("execution providers %s failed (%s); falling back to CPU", self.providers, exc)
            self.providers = ["CPUExecutionProvider"]
            weights = {init.name: numpy_helper.to_array(init) for init in self.proto.graph.initializer}
            self._configure()
            self._set_initializers(weights)
            self.io_binding = False
            sess = ort.InferenceSession(self.proto.SerializeToString(), session_options(self.threads),
                                        providers=self.providers)
        return sess

    @property
    def provider(self) -> str:
        """The ONNX Runtime provider; CPUExecutionProvider for the other (CPU) runtimes."""
        if self.backend != "onnxruntime":
            return "CPUExecutionProvider"
        return self.session.get_providers()[0]

    @property
    def weight_names(self) -> set[str]:
        return set(self._initializer_index)

    def run(self, window: np.ndarray, session: ort.InferenceSession | None = None) -> np.ndarray:
        """window (C, h, w) float32 in [0, 1] -> (3, s*h, s*w) float32, tiled when large.

        `session` runs an earlier session instead (to blend old and new weights after a swap).
        """
        while True:
            try:
                return self._run_tiled(window, session or self.session)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                smaller = self.plan.shrunk(min(window.shape[1:]))
                if smaller is None:
                    raise VsrftError(f"out of memory even with {self.plan.tile}-pixel tiles (ONNX Runtime: "
                                     f"{str(exc).splitlines()[0][-160:]})") from None
                log.warning("out of memory with %d-pixel tiles; retrying the frame with %d-pixel tiles",
                            self.plan.tile, smaller.tile)
                self.plan = smaller

    def _run_tiled(self, window: np.ndarray, sess: ort.InferenceSession) -> np.ndarray:
        c, h, w = window.shape
        ys, xs = self.plan.spans(h), self.plan.spans(w)
        if len(ys) == 1 and len(xs) == 1:
            return self._infer(sess, window)
        s = self.scale
        out = np.empty((3, s * h, s * w), np.float32)
        for r0, r1, k0, k1 in ys:
            for c0, c1, j0, j1 in xs:
                hr = self._infer(sess, np.ascontiguousarray(window[:, r0:r1, c0:c1]))
                out[:, s * k0:s * k1, s * j0:s * j1] = hr[:, s * (k0 - r0):s * (k1 - r0), s * (j0 - c0):s * (j1 - c0)]
        return out

    def _infer(self, session, window: np.ndarray) -> np.ndarray:
        if not isinstance(session, ort.InferenceSession):
            return session(window[None])[0]
        if not self.io_binding:
            return session.run(None, {"window": window[None]})[0][0]
        # I/O binding: the input is copied to the device once and the output allocated there.
        binding = session.io_binding()
        binding.bind_ortvalue_input("window", ort.OrtValue.ortvalue_from_numpy(window[None], self.device, 0))
        binding.bind_output("hr", self.device)
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0][0]

    def swap_weights(self, state: dict[str, np.ndarray]) -> float:
        """Replace the graph's initializers with new weights and open a new session; returns seconds.

        `state` maps ONNX initializer names (as in the exported graph, equal to the PyTorch
        parameter names) to arrays. Unknown names are an error: a silent partial swap would
        leave the old weights in place.
        """
        t0 = time.perf_counter()
        self._set_initializers(state)
        data = b"" if self.backend == "torch" else self.proto.SerializeToString()
        self.session = self._make_session(data, state)
        return time.perf_counter() - t0

    def _set_initializers(self, state: dict[str, np.ndarray]) -> None:
        graph = self.proto.graph
        for name, value in state.items():
            i = self._initializer_index.get(name)
            if i is None:
                raise KeyError(f"no initializer named {name!r} in the ONNX graph")
            old = graph.initializer[i]
            arr = np.asarray(value, dtype=numpy_helper.to_array(old).dtype if old.data_type else np.float32)
            if tuple(arr.shape) != tuple(old.dims):
                raise ValueError(f"weight {name} has shape {arr.shape}, graph expects {tuple(old.dims)}")
            graph.initializer[i].CopyFrom(numpy_helper.from_array(arr, name))
