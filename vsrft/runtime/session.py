"""ONNX Runtime sessions: provider choice, tiled inference, and weight hot-swap without re-export."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

log = logging.getLogger(__name__)

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(requested: list[str] | None = None) -> list[str]:
    """Best available first: TensorRT, CUDA, then CPU (always last, as the fallback)."""
    available = set(ort.get_available_providers())
    wanted = requested or list(PREFERRED_PROVIDERS)
    chosen = [p for p in dict.fromkeys(wanted) if p in available and p != "CPUExecutionProvider"]
    return chosen + ["CPUExecutionProvider"]


def session_options(threads: int = 0) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    # Spinning threads steal the CPU from decoding, encoding and fine-tuning beside inference.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


@dataclass(frozen=True)
class TilePlan:
    """Split an (h, w) LR frame into tiles of at most `tile` pixels a side with `overlap` context."""

    tile: int
    overlap: int

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
                 providers: list[str] | None = None, threads: int = 0, tile: int = 512) -> None:
        self.scale = scale
        self.proto = onnx.load_from_string(onnx_bytes)
        self._initializer_index = {init.name: i for i, init in enumerate(self.proto.graph.initializer)}
        self.threads = threads
        self.plan = TilePlan(tile=max(tile, 4 * receptive_radius + 8), overlap=receptive_radius + 2)
        self.providers = choose_providers(providers)
        self.session = self._make_session(onnx_bytes)

    def _make_session(self, data: bytes) -> ort.InferenceSession:
        try:
            sess = ort.InferenceSession(data, session_options(self.threads), providers=self.providers)
        except Exception as exc:  # noqa: BLE001 - a GPU provider failing to load falls back to CPU
            if self.providers == ["CPUExecutionProvider"]:
                raise
            log.warning("execution providers %s failed (%s); falling back to CPU", self.providers, exc)
            self.providers = ["CPUExecutionProvider"]
            sess = ort.InferenceSession(data, session_options(self.threads), providers=self.providers)
        return sess

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    @property
    def weight_names(self) -> set[str]:
        return set(self._initializer_index)

    def run(self, window: np.ndarray, session: ort.InferenceSession | None = None) -> np.ndarray:
        """window (C, h, w) float32 in [0, 1] -> (3, s*h, s*w) float32, tiled when large.

        `session` runs an earlier session instead (to blend old and new weights after a swap).
        """
        sess = session or self.session
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

    @staticmethod
    def _infer(session: ort.InferenceSession, window: np.ndarray) -> np.ndarray:
        return session.run(None, {"window": window[None]})[0][0]

    def swap_weights(self, state: dict[str, np.ndarray]) -> float:
        """Replace the graph's initializers with new weights and open a new session; returns seconds.

        `state` maps ONNX initializer names (as in the exported graph, equal to the PyTorch
        parameter names) to arrays. Unknown names are an error: a silent partial swap would
        leave the old weights in place.
        """
        t0 = time.perf_counter()
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
        self.session = self._make_session(self.proto.SerializeToString())
        return time.perf_counter() - t0
