"""YUV4MPEG2 streams (what `ffmpeg -f yuv4mpegpipe` writes and reads), and raw RGB frames.

Reading yields `Frame`s converted to RGB with the same explicit colour conversion the file
path uses, so `vsrft pipe` and `vsrft enhance` produce the same pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import BinaryIO, Iterator

import av
import numpy as np

from vsrft.errors import VsrftError
from vsrft.frame import Colour, Frame
from vsrft.io.convert import frame_to_rgb, guess_colour, rgb_to_frame
from vsrft.io.decode import MAX_DIMENSION

MAGIC = b"YUV4MPEG2"
_CHROMA = {"420jpeg": "yuv420p", "420paldv": "yuv420p", "420mpeg2": "yuv420p", "420": "yuv420p",
           "422": "yuv422p", "444": "yuv444p", "mono": "gray",
           "420p10": "yuv420p10le", "422p10": "yuv422p10le", "444p10": "yuv444p10le", "mono10": "gray10le"}
_PIXFMT_TO_C = {"yuv420p": "420jpeg", "yuv422p": "422", "yuv444p": "444", "gray": "mono",
                "yuv420p10le": "420p10 XYSCSS=420P10", "yuv422p10le": "422p10 XYSCSS=422P10",
                "yuv444p10le": "444p10 XYSCSS=444P10", "gray10le": "mono10"}
MAX_HEADER = 4096


@dataclass
class Y4MHeader:
    width: int
    height: int
    rate: Fraction = Fraction(25)
    interlace: str = "p"
    aspect: str = "0:0"
    chroma: str = "420jpeg"
    extras: list[str] = field(default_factory=list)
    matrix: int = 2          # AVColorSpace of the YUV; 2 (unspecified): guessed from the height

    @property
    def pix_fmt(self) -> str:
        return _CHROMA[self.chroma]

    @property
    def colour(self) -> Colour:
        rng = 0
        for x in self.extras:
            if x.upper() == "XCOLORRANGE=FULL":
                rng = 2
            elif x.upper() == "XCOLORRANGE=LIMITED":
                rng = 1
        return guess_colour(self.height, "", matrix=self.matrix, rng=rng)

    def frame_bytes(self) -> int:
        vf = av.VideoFrame(self.width, self.height, self.pix_fmt)
        return sum(_plane_row_bytes(p, self.pix_fmt) * p.height for p in vf.planes)

    def encode(self) -> bytes:
        fields = [f"W{self.width}", f"H{self.height}", f"F{self.rate.numerator}:{self.rate.denominator}",
                  f"I{self.interlace}", f"A{self.aspect}", f"C{self.chroma}", *self.extras]
        return MAGIC + b" " + " ".join(fields).encode() + b"\n"


def _plane_row_bytes(plane: av.video.plane.VideoPlane, pix_fmt: str) -> int:
    return plane.width * (2 if pix_fmt.endswith("le") else 1)


def _readline(stream: BinaryIO, what: str) -> bytes:
    line = bytearray()
    while len(line) <= MAX_HEADER:
        c = stream.read(1)
        if not c:
            return bytes(line)
        if c == b"\n":
            return bytes(line)
        line += c
    raise VsrftError(f"{what} is longer than {MAX_HEADER} bytes: not a YUV4MPEG2 stream")


def read_header(stream: BinaryIO) -> Y4MHeader:
    line = _readline(stream, "YUV4MPEG2 header")
    if not line:
        raise VsrftError("standard input is empty: expected a YUV4MPEG2 stream (ffmpeg ... -f yuv4mpegpipe -)")
    parts = line.split(b" ")
    if parts[0] != MAGIC:
        raise VsrftError("standard input is not a YUV4MPEG2 stream (use `ffmpeg ... -f yuv4mpegpipe -`, "
                         "or --size WxH for raw rgb24)")
    h = Y4MHeader(0, 0)
    try:
        for p in parts[1:]:
            tag, val = chr(p[0]), p[1:].decode("ascii")
            if tag == "W":
                h.width = int(val)
            elif tag == "H":
                h.height = int(val)
            elif tag == "F":
                n, d = val.split(":")
                h.rate = Fraction(int(n), int(d))
            elif tag == "I":
                h.interlace = val
            elif tag == "A":
                h.aspect = val
            elif tag == "C":
                h.chroma = val
            elif tag == "X":
                h.extras.append("X" + val)
    except (ValueError, ZeroDivisionError, IndexError, UnicodeDecodeError):
        raise VsrftError(f"malformed YUV4MPEG2 header: {line[:200]!r}") from None
    if not (0 < h.width <= MAX_DIMENSION and 0 < h.height <= MAX_DIMENSION):
        raise VsrftError(f"YUV4MPEG2 header gives an unsupported frame size {h.width}x{h.height}")
    if h.chroma not in _CHROMA:
        raise VsrftError(f"YUV4MPEG2 colour space C{h.chroma} is not supported (supported: {', '.join(_CHROMA)})")
    if h.interlace not in ("p", "?"):
        raise VsrftError(f"interlaced YUV4MPEG2 input (I{h.interlace}) is not supported: deinterlace first")
    return h


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        b = stream.read(n - got)
        if not b:
            break
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def read_frames(stream: BinaryIO, header: Y4MHeader) -> Iterator[Frame]:
    """Frames with pts = index in a 1/rate time base, RGB via the header's colour."""
    size = header.frame_bytes()
    colour = header.colour
    tb = 1 / header.rate
    index = 0
    while True:
        line = _readline(stream, "FRAME header")
        if not line:
            return
        if not line.startswith(b"FRAME"):
            raise VsrftError(f"YUV4MPEG2 stream is corrupt at frame {index}: expected FRAME, got {line[:20]!r}")
        data = _read_exact(stream, size)
        if len(data) < size:
            raise VsrftError(f"YUV4MPEG2 stream is truncated: frame {index} has {len(data)} of {size} bytes")
        vf = _to_video_frame(data, header)
        yield Frame(rgb=frame_to_rgb(vf, colour), index=index, pts=index, time_base=tb)
        index += 1


def _to_video_frame(data: bytes, header: Y4MHeader) -> av.VideoFrame:
    vf = av.VideoFrame(header.width, header.height, header.pix_fmt)
    off = 0
    for plane in vf.planes:
        row = _plane_row_bytes(plane, header.pix_fmt)
        n = row * plane.height
        dst = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        dst[:, :row] = np.frombuffer(data, np.uint8, n, off).reshape(plane.height, row)
        off += n
    return vf


def write_header(stream: BinaryIO, header: Y4MHeader) -> None:
    stream.write(header.encode())


def output_header(inp: Y4MHeader, width: int, height: int) -> Y4MHeader:
    extras = [x for x in inp.extras if not x.upper().startswith("XYSCSS")]
    return replace(inp, width=width, height=height, extras=extras)


def write_frame(stream: BinaryIO, rgb: np.ndarray, header: Y4MHeader, colour: Colour) -> None:
    vf = rgb_to_frame(rgb, header.pix_fmt, colour)
    parts = [b"FRAME\n"]
    for plane in vf.planes:
        row = _plane_row_bytes(plane, header.pix_fmt)
        parts.append(np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, :row].tobytes())
    stream.write(b"".join(parts))


def read_raw_rgb(stream: BinaryIO, width: int, height: int, rate: Fraction) -> Iterator[Frame]:
    """Raw rgb24 frames (ffmpeg -f rawvideo -pix_fmt rgb24), size from --size."""
    size = width * height * 3
    index = 0
    while True:
        data = _read_exact(stream, size)
        if not data:
            return
        if len(data) < size:
            raise VsrftError(f"raw rgb24 input is truncated: frame {index} has {len(data)} of {size} bytes")
        yield Frame(rgb=np.frombuffer(data, np.uint8).reshape(height, width, 3), index=index, pts=index,
                    time_base=1 / rate)
        index += 1
