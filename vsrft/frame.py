"""A decoded picture with the timing and colour facts a video person expects to keep."""
from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np


@dataclass(frozen=True)
class Colour:
    """How the source's YUV maps to RGB, and what the output is tagged with.

    Values are FFmpeg's enum integers (AVColorSpace, AVColorRange, AVColorPrimaries,
    AVColorTransferCharacteristic). `matrix`/`range` are resolved (never unspecified) so
    conversion is explicit; the rest are passed through as found.
    """

    matrix: int = 1          # 1 = BT.709, 5/6 = BT.601, 9 = BT.2020 NCL
    range: int = 1           # 1 = limited (MPEG), 2 = full (JPEG)
    primaries: int = 2       # 2 = unspecified
    transfer: int = 2        # 2 = unspecified

    @property
    def matrix_name(self) -> str:
        return {1: "bt709", 5: "bt601", 6: "bt601", 9: "bt2020"}.get(self.matrix, f"matrix{self.matrix}")


@dataclass(frozen=True)
class Frame:
    """RGB pixels (H, W, 3) uint8 plus where the picture sits in time.

    Sources deeper than 8 bits also carry `rgb16`, (H, W, 3) uint16 RGB on the full 16-bit scale,
    which the network reads instead of `rgb` (then its 8-bit rounding, for cut detection and
    adaptation). `duration` is the decoder's frame duration in `time_base` units, if known.
    """

    rgb: np.ndarray
    index: int
    pts: int | None = None
    time_base: Fraction | None = None
    key: bool = False
    rgb16: np.ndarray | None = None
    duration: int | None = None

    @property
    def time(self) -> float | None:
        if self.pts is None or self.time_base is None:
            return None
        return float(self.pts * self.time_base)

    def with_pixels(self, rgb: np.ndarray, rgb16: np.ndarray | None = None) -> "Frame":
        """The same frame (timing) with new pixels; `rgb16` is dropped unless new one is given."""
        return replace(self, rgb=rgb, rgb16=rgb16)
