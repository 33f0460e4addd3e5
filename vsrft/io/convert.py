"""YUV <-> RGB with the colour facts stated explicitly (matrix and range), never swscale's defaults."""
from __future__ import annotations

import av
import numpy as np
from av.video.reformatter import Interpolation

from vsrft.frame import Colour

# Unbiased conversion (default swscale flags are biased by ~-1 code value, see docs/measured).
ACCURATE = Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT | Interpolation.FULL_CHR_H_INP


def swscale_colorspace(matrix: int) -> int:
    """AVColorSpace -> swscale's SWS_CS_* id (ITU709=1, FCC=4, ITU601=5, SMPTE240M=7, BT2020=9)."""
    return {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}.get(matrix, 5)


def guess_colour(height: int, pix_fmt: str = "", matrix: int = 2, rng: int = 0,
                 primaries: int = 2, transfer: int = 2) -> Colour:
    """Resolve unspecified matrix/range the way players do: BT.709 from 720 lines up, else BT.601."""
    if matrix in (0, 2, 3):
        matrix = 1 if height >= 720 else 6
    if rng == 0:
        rng = 2 if pix_fmt.startswith("yuvj") else 1
    return Colour(matrix=matrix, range=rng, primaries=primaries, transfer=transfer)


def canonical(vf: av.VideoFrame) -> av.VideoFrame:
    """A fresh frame with the same planes and no side properties.

    swscale reads properties such as the chroma siting from a decoded frame, which PyAV
    cannot set on frames built from bytes (pipes, frame servers): converting every frame
    from a canonical copy makes all entry points produce the same RGB.
    """
    fresh = av.VideoFrame(vf.width, vf.height, vf.format.name)
    for src, dst in zip(vf.planes, fresh.planes):
        row = min(src.line_size, dst.line_size)
        a = np.frombuffer(src, np.uint8).reshape(-1, src.line_size)
        b = np.frombuffer(dst, np.uint8).reshape(-1, dst.line_size)
        rows = min(a.shape[0], b.shape[0])
        b[:rows, :row] = a[:rows, :row]
    return fresh


def frame_to_rgb(vf: av.VideoFrame, colour: Colour) -> np.ndarray:
    """Decoded frame -> (H, W, 3) uint8 RGB, full range."""
    if vf.format.name.startswith(("yuv", "gray", "nv")):
        vf = canonical(vf)
    return vf.to_ndarray(format="rgb24", interpolation=ACCURATE,
                         src_colorspace=swscale_colorspace(colour.matrix), src_color_range=colour.range,
                         dst_colorspace=swscale_colorspace(colour.matrix), dst_color_range=2)


def rgb_to_frame(rgb: np.ndarray, pix_fmt: str, colour: Colour) -> av.VideoFrame:
    """(H, W, 3) uint8 RGB -> a frame in `pix_fmt`, converted and tagged with `colour`."""
    vf = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    cs = swscale_colorspace(colour.matrix)
    vf = vf.reformat(format=pix_fmt, interpolation=ACCURATE, src_colorspace=cs, src_color_range=2,
                     dst_colorspace=cs, dst_color_range=colour.range)
    vf.color_range = colour.range
    vf.colorspace = colour.matrix
    return vf
