"""The network as the engine sees it: a loaded model, its ONNX runtime, and the output resampler.

The built-in networks are x4. For another scale the x4 output is resampled to the
requested size with the same antialiased bicubic the degradation operator uses, so that
adaptation can differentiate through exactly what the runtime computes.
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn

from vsrft.degradation import resize_matrix
from vsrft.errors import VsrftError
from vsrft.models import checkpoint
from vsrft.models.checkpoint import ModelInfo
from vsrft.runtime import backends
from vsrft.runtime.export import cached_export
from vsrft.runtime.session import Runtime

log = logging.getLogger(__name__)
SUPPORTED_SCALES = (1, 2, 3, 4, 5, 6, 7, 8)


@dataclass
class Network:
    module: nn.Module
    info: ModelInfo
    runtime: Runtime
    scale: int
    input_filter: np.ndarray | None = None   # 1-D LR taps applied along both axes (`lr_deblur_taps`)
    # (source frame, filtered frame) of the last few frames: a frame sits in 5 consecutive windows,
    # so it is filtered once, not once per window (the source is held, so `is` cannot mistake it)
    _filtered: deque[tuple[np.ndarray, np.ndarray]] = field(default_factory=lambda: deque(maxlen=8), repr=False)

    @classmethod
    def load(cls, model: str, scale: int, *, providers: list[str] | None = None, threads: int = 0,
             tile: int = 512, runtime: str | None = None, precision: str | None = None) -> "Network":
        """`runtime`/`precision`: see `Runtime`; None takes the process default (--runtime/--precision,
        $VSRFT_RUNTIME/$VSRFT_PRECISION, else auto)."""
        if scale not in SUPPORTED_SCALES:
            raise VsrftError(f"scale must be one of {', '.join(map(str, SUPPORTED_SCALES))}, got {scale}")
        module, info = checkpoint.load(model)
        if scale > info.scale:
            log.warning("model %s is x%d; x%d output is resampled from it and will be soft", info.name, info.scale, scale)
        radius = int(getattr(module, "receptive_radius", 16))
        onnx_bytes = cached_export(module, 3 * info.frames, key=repr(sorted(info.config.items())))
        runtime = Runtime(onnx_bytes, info.scale, radius, providers=providers, threads=threads, tile=tile,
                          runtime=runtime or backends.default_runtime(), precision=precision or backends.default_precision(),
                          module=module, bf16_default=backends.bf16_default(info.name, module))
        log.debug("model %s (%s) on %s", info.name, info.config, runtime.label)
        return cls(module, info, runtime, scale)

    @property
    def frames(self) -> int:
        return self.info.frames

    def stack(self, window: list[np.ndarray]) -> np.ndarray:
        """`frames` RGB (h, w, 3) arrays -> (3*frames, h, w), the network's input layout: the same
        dtype, or float32 on the same scale when there is an `input_filter` (not rounded, not clipped)."""
        if self.frames == 1:
            window = [window[len(window) // 2]]
        if self.input_filter is not None:
            window = [self._filter(f) for f in window]
        return np.ascontiguousarray(np.concatenate(window, axis=2).transpose(2, 0, 1))

    def _filter(self, frame: np.ndarray) -> np.ndarray:
        for source, filtered in self._filtered:
            if source is frame:
                return filtered
        k = self.input_filter
        filtered = cv2.sepFilter2D(frame.astype(np.float32), -1, k, k, borderType=cv2.BORDER_REFLECT)
        self._filtered.append((frame, filtered))
        return filtered

    def adaptation_window(self, window: list[np.ndarray]) -> np.ndarray:
        """RGB uint8 (h, w, 3) frames -> (3*frames + 3, h, w) float32 on the 0..255 scale: the
        network's input, then the centre frame as it came (the target of the data-fidelity loss,
        which must not be the filtered input)."""
        centre = window[len(window) // 2].astype(np.float32).transpose(2, 0, 1)
        return np.ascontiguousarray(np.concatenate([self.stack(window).astype(np.float32), centre]))

    def infer(self, window: list[np.ndarray], session: ort.InferenceSession | None = None) -> np.ndarray:
        """RGB (h, w, 3) uint8, or uint16 on the 16-bit scale (deep sources) -> (3, s*h, s*w) float32
        at the requested scale."""
        deep = window[0].dtype == np.uint16
        if deep:        # bf16 keeps 8 significant bits: a deep source would come out quantised
            self.runtime.keep_full_precision()
        stacked = self.stack(window)
        stacked = stacked.astype(np.float32) * np.float32(1 / (65535 if deep else 255))
        hr = self.runtime.run(stacked, session)
        return self.resample(hr, window[0].shape[0], window[0].shape[1])

    def upscale(self, window: list[np.ndarray]) -> np.ndarray:
        """window: RGB uint8 (h, w, 3) arrays, centre in the middle -> (s*h, s*w, 3) uint8."""
        return to_uint8(self.infer(window))

    def resample(self, hr: np.ndarray, h: int, w: int) -> np.ndarray:
        """(3, S*h, S*w) at the model's scale S -> (3, s*h, s*w) at the requested scale s."""
        if self.scale == self.info.scale:
            return hr
        mh, mw = resize_matrix(hr.shape[1], self.scale * h), resize_matrix(hr.shape[2], self.scale * w)
        return np.matmul(np.matmul(mh, hr), mw.T)

    def swap(self, state: dict[str, torch.Tensor]) -> float:
        """Put new weights into the running session (no re-export); returns seconds."""
        return self.runtime.swap_weights({k: v.detach().cpu().numpy() for k, v in state.items()
                                          if k in self.runtime.weight_names})


def as_float_chw(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 (or uint16 on the 16-bit scale) -> (3, H, W) float32 in [0, 1]."""
    return rgb.transpose(2, 0, 1).astype(np.float32) * np.float32(1 / (65535 if rgb.dtype == np.uint16 else 255))


def to_uint16(chw: np.ndarray) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint16 on the 16-bit scale, rounded (deep outputs)."""
    hwc = chw.transpose(1, 2, 0) * np.float32(65535)
    hwc += np.float32(0.5)
    np.clip(hwc, 0, 65535, out=hwc)
    return hwc.astype(np.uint16)


def to_uint8(chw: np.ndarray) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounded."""
    hwc = chw.transpose(1, 2, 0) * np.float32(255)
    hwc += np.float32(0.5)
    np.clip(hwc, 0, 255, out=hwc)
    return hwc.astype(np.uint8)
