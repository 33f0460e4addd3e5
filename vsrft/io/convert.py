"""YUV <-> RGB with the colour facts stated explicitly (matrix and range), never swscale's defaults."""
from __future__ import annotations

import functools
import re

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


# ---------------------------------------------------------------- more than 8 bits per sample
#
# swscale's high-bit-depth paths scale 10-bit codes to 16 bits by shifting (limited-range white
# 940 -> 65283 of 65535, full-range round trips off by up to 3 codes), so planar YUV deeper than
# 8 bits is converted here in float32 with the matrix and range stated, and exact inverses on the
# way out: a flat colour round-trips to the same codes. Chroma siting is MPEG-2's "left" (H.264,
# HEVC, AV1 default): co-sited horizontally, centred vertically in 4:2:0.

_DEEP_YUV = re.compile(r"^yuv(420|422|444)p(9|10|12|14|16)le$")

# AVColorSpace -> (Kr, Kb)
_KR_KB = {1: (0.2126, 0.0722), 4: (0.30, 0.11), 5: (0.299, 0.114), 6: (0.299, 0.114), 7: (0.212, 0.087),
          9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}


@functools.lru_cache(maxsize=64)
def bit_depth(pix_fmt: str | None) -> int:
    """Bits per sample of a pixel format (the deepest component), 8 if unknown."""
    if not pix_fmt:
        return 8
    try:
        return max((c.bits for c in av.VideoFormat(pix_fmt).components), default=8)
    except (ValueError, av.FFmpegError):
        return 8


def rgb16_to_rgb8(rgb16: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint16 RGB -> uint8, rounded (65535 / 257 = 255)."""
    return ((rgb16.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _coefficients(matrix: int) -> tuple[float, float, float]:
    kr, kb = _KR_KB.get(matrix, _KR_KB[6])
    return kr, 1.0 - kr - kb, kb


def _levels(bits: int, rng: int) -> tuple[float, float, float, float]:
    """(luma offset, luma scale, chroma offset, chroma scale) in codes of `bits` bits."""
    s = float(1 << (bits - 8))
    if rng == 2:
        top = float((1 << bits) - 1)
        return 0.0, top, float(1 << (bits - 1)), top
    return 16 * s, 219 * s, 128 * s, 224 * s


def _plane16(plane: av.video.plane.VideoPlane) -> np.ndarray:
    return np.frombuffer(plane, "<u2").reshape(plane.height, plane.line_size // 2)[:, :plane.width]


def _up_h(c: np.ndarray, width: int) -> np.ndarray:
    """Co-sited 2x horizontal upsampling (linear): even columns are the samples, odd ones the midpoints."""
    nxt = np.concatenate([c[:, 1:], c[:, -1:]], axis=1)
    out = np.empty((c.shape[0], 2 * c.shape[1]), np.float32)
    out[:, 0::2] = c
    out[:, 1::2] = 0.5 * (c + nxt)
    return out[:, :width]


def _up_v(c: np.ndarray, height: int) -> np.ndarray:
    """Centred 2x vertical upsampling (linear, 3/4 + 1/4)."""
    prv = np.concatenate([c[:1], c[:-1]], axis=0)
    nxt = np.concatenate([c[1:], c[-1:]], axis=0)
    out = np.empty((2 * c.shape[0], c.shape[1]), np.float32)
    out[0::2] = 0.75 * c + 0.25 * prv
    out[1::2] = 0.75 * c + 0.25 * nxt
    return out[:height]


def _down_h(c: np.ndarray) -> np.ndarray:
    """The inverse siting of `_up_h`: [1, 2, 1] / 4 centred on the even columns."""
    if c.shape[1] % 2:
        c = np.concatenate([c, c[:, -1:]], axis=1)
    prv = np.concatenate([c[:, :1], c[:, 1:-1:2]], axis=1)     # column 2k-1 (2k=0: itself)
    return 0.25 * prv + 0.5 * c[:, 0::2] + 0.25 * c[:, 1::2]


def _down_v(c: np.ndarray) -> np.ndarray:
    """The inverse siting of `_up_v`: the mean of each pair of rows."""
    if c.shape[0] % 2:
        c = np.concatenate([c, c[-1:]], axis=0)
    return 0.5 * (c[0::2] + c[1::2])


def frame_to_rgb16(vf: av.VideoFrame, colour: Colour) -> np.ndarray:
    """Decoded frame deeper than 8 bits -> (H, W, 3) uint16 RGB, full range (0..65535)."""
    m = _DEEP_YUV.match(vf.format.name)
    if m is None:       # RGB planes, semi-planar (p010), alpha formats: swscale, from a canonical copy
        if vf.format.name.startswith(("yuv", "gray", "nv")):
            vf = canonical(vf)
        return vf.to_ndarray(format="rgb48le", interpolation=ACCURATE,
                             src_colorspace=swscale_colorspace(colour.matrix), src_color_range=colour.range,
                             dst_colorspace=swscale_colorspace(colour.matrix), dst_color_range=2)
    chroma, bits = m.group(1), int(m.group(2))
    yo, ys, co, cs = _levels(bits, colour.range)
    y_p, u_p, v_p = (_plane16(p) for p in vf.planes[:3])
    y = (y_p.astype(np.float32) - np.float32(yo)) * np.float32(1 / ys)
    cb = (u_p.astype(np.float32) - np.float32(co)) * np.float32(1 / cs)
    cr = (v_p.astype(np.float32) - np.float32(co)) * np.float32(1 / cs)
    h, w = y.shape
    if chroma in ("420", "422"):
        cb, cr = _up_h(cb, w), _up_h(cr, w)
    if chroma == "420":
        cb, cr = _up_v(cb, h), _up_v(cr, h)
    kr, kg, kb = _coefficients(colour.matrix)
    r = y + np.float32(2 * (1 - kr)) * cr
    b = y + np.float32(2 * (1 - kb)) * cb
    g = (y - np.float32(kr) * r - np.float32(kb) * b) * np.float32(1 / kg)
    rgb = np.stack([r, g, b], axis=2)
    rgb *= np.float32(65535)
    rgb += np.float32(0.5)
    np.clip(rgb, 0, 65535, out=rgb)
    return rgb.astype(np.uint16)


def rgb16_to_frame(rgb16: np.ndarray, pix_fmt: str, colour: Colour) -> av.VideoFrame:
    """(H, W, 3) uint16 RGB (full range) -> a frame in `pix_fmt` (any depth), converted and tagged."""
    m = _DEEP_YUV.match(pix_fmt)
    if m is None:
        if bit_depth(pix_fmt) <= 8:      # an 8-bit output of a deep source: the 8-bit path, exactly
            return rgb_to_frame(rgb16_to_rgb8(rgb16), pix_fmt, colour)
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb16), format="rgb48le")
        cs = swscale_colorspace(colour.matrix)
        vf = vf.reformat(format=pix_fmt, interpolation=ACCURATE, src_colorspace=cs, src_color_range=2,
                         dst_colorspace=cs, dst_color_range=colour.range)
    else:
        chroma, bits = m.group(1), int(m.group(2))
        yo, ys, co, cs = _levels(bits, colour.range)
        kr, kg, kb = _coefficients(colour.matrix)
        x = rgb16.astype(np.float32) * np.float32(1 / 65535)
        r, g, b = x[..., 0], x[..., 1], x[..., 2]
        y = np.float32(kr) * r + np.float32(kg) * g + np.float32(kb) * b
        cb = (b - y) * np.float32(1 / (2 * (1 - kb)))
        cr = (r - y) * np.float32(1 / (2 * (1 - kr)))
        if chroma == "420":
            cb, cr = _down_v(cb), _down_v(cr)
        if chroma in ("420", "422"):
            cb, cr = _down_h(cb), _down_h(cr)
        top = (1 << bits) - 1
        h, w = y.shape
        vf = av.VideoFrame(w, h, pix_fmt)
        for plane, value, offset, scale in ((vf.planes[0], y, yo, ys), (vf.planes[1], cb, co, cs),
                                            (vf.planes[2], cr, co, cs)):
            codes = np.clip(np.rint(value * np.float32(scale) + np.float32(offset)), 0, top)
            _plane16(plane)[...] = codes.astype(np.uint16)
    vf.color_range = colour.range
    vf.colorspace = colour.matrix
    return vf
