"""Decoding with PyAV: one pass over the container yields video `Frame`s and, in file order,
the packets of the streams that are copied to the output (audio, subtitles)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from vsrft.errors import VsrftError
from vsrft.frame import Colour, Frame
from vsrft.io.convert import bit_depth, frame_to_rgb, frame_to_rgb16, guess_colour, rgb16_to_rgb8

log = logging.getLogger(__name__)

COPY_TYPES = ("audio", "subtitle")
MAX_DIMENSION = 16384
PEEK_PACKETS = 64          # how far `first_frame_side_data` looks for a first picture


def _resolve_colour(stream: av.video.stream.VideoStream) -> Colour:
    cc = stream.codec_context
    return guess_colour(cc.height or 0, cc.pix_fmt or "", matrix=int(cc.colorspace or 2), rng=int(cc.color_range or 0),
                        primaries=int(cc.color_primaries or 2), transfer=int(cc.color_trc or 2))


class VideoSource:
    """An opened input file: its first video stream, colour, timing, and the streams to copy."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise VsrftError(f"input file not found: {self.path}")
        if self.path.is_dir():
            raise VsrftError(f"input is a directory, not a video file: {self.path}")
        if self.path.stat().st_size == 0:
            raise VsrftError(f"input file is empty: {self.path}")
        try:
            self.container = av.open(str(self.path), mode="r")
        except av.FFmpegError as exc:
            raise VsrftError(f"cannot open {self.path} as video: {exc.strerror or exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise VsrftError(f"cannot open {self.path}: {exc}") from None
        videos = [s for s in self.container.streams.video if not _is_attached_pic(s)]
        if not videos:
            self.container.close()
            raise VsrftError(f"no video stream in {self.path}")
        self.stream = videos[0]
        if self.stream.codec_context is None:        # a codec this FFmpeg has no decoder for (or a damaged header)
            self.container.close()
            raise VsrftError(f"cannot decode the video stream of {self.path}: unknown or unsupported codec")
        self.stream.thread_type = "SLICE"   # frame threads swallow decode errors (a stream that fails mid-file)
        cc = self.stream.codec_context
        if not cc.width or not cc.height:
            self.container.close()
            raise VsrftError(f"video stream of {self.path} has no frame size (unsupported or corrupt)")
        if cc.width > MAX_DIMENSION or cc.height > MAX_DIMENSION:
            self.container.close()
            raise VsrftError(f"video is {cc.width}x{cc.height}; the largest supported side is {MAX_DIMENSION}")
        self.width, self.height = cc.width, cc.height
        self.time_base: Fraction = self.stream.time_base or Fraction(1, 90000)
        self.rate: Fraction | None = self.stream.average_rate or self.stream.guessed_rate
        self.colour = _resolve_colour(self.stream)
        self.bit_depth = bit_depth(cc.pix_fmt)     # > 8: frames carry 16-bit RGB (`Frame.rgb16`) as well
        self.copy_streams = [s for s in self.container.streams if s.type in COPY_TYPES]
        self._side_data: FirstFrameSideData | None = None

    @property
    def other_streams(self) -> list[av.stream.Stream]:
        """Streams neither decoded nor copied: data, attachments, attached pictures, other video."""
        keep = {self.stream.index, *(s.index for s in self.copy_streams)}
        return [s for s in self.container.streams if s.index not in keep]

    @property
    def side_data(self) -> "FirstFrameSideData":
        """Display matrix and HDR static metadata, as found on the first decoded picture.

        PyAV exposes these on frames only, and an encoder needs them before its first frame,
        so a second demuxer reads ahead to the first picture (at most `PEEK_PACKETS` packets).
        Anything unreadable counts as absent: `read()` reports a broken file, not this.
        """
        if self._side_data is None:
            self._side_data = _peek_side_data(self.path, self.stream.index)
        return self._side_data

    @property
    def frame_count_hint(self) -> int | None:
        """The container's frame count, or duration x rate; for progress bars only, never trusted."""
        if self.stream.frames:
            return int(self.stream.frames)
        if self.stream.duration and self.rate:
            return int(round(float(self.stream.duration * self.time_base * self.rate)))
        if self.container.duration and self.rate:
            return int(round(self.container.duration / av.time_base * float(self.rate)))
        return None

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.container.close()

    def to_rgb(self, vf: av.VideoFrame) -> np.ndarray:
        return frame_to_rgb(vf, self.colour)

    def read(self) -> Iterator[Frame | av.Packet]:
        """Video frames (as `Frame`) and packets of `copy_streams`, interleaved in file order."""
        index = 0
        copy_ids = {s.index for s in self.copy_streams}
        last_pts: int | None = None
        step = _pts_step(self.rate, self.time_base)
        packets = 0                # video packets with data
        last_corrupt = False       # a short read at the end of the file is flagged corrupt by the demuxer
        try:
            for packet in self.container.demux([self.stream, *self.copy_streams]):
                if packet.stream.index in copy_ids:
                    if packet.dts is not None and packet.size:
                        yield packet
                    continue
                if packet.size:
                    packets += 1
                    last_corrupt = packet.is_corrupt
                for vf in packet.decode():
                    if vf.width != self.width or vf.height != self.height:
                        raise VsrftError(f"frame {index} of {self.path} is {vf.width}x{vf.height}, but the stream "
                                         f"started at {self.width}x{self.height}: size changes mid-stream are not supported")
                    pts = vf.pts
                    if pts is None:
                        pts = 0 if last_pts is None else last_pts + step
                    last_pts = pts
                    rgb16 = frame_to_rgb16(vf, self.colour) if bit_depth(vf.format.name) > 8 else None
                    rgb = self.to_rgb(vf) if rgb16 is None else rgb16_to_rgb8(rgb16)
                    yield Frame(rgb=rgb, index=index, pts=pts, time_base=self.time_base, key=bool(vf.key_frame),
                                rgb16=rgb16, duration=vf.duration or None)
                    index += 1
        except av.FFmpegError as exc:
            raise VsrftError(f"{self.path} is corrupt or truncated after {index} frames: {exc.strerror or exc}") from None
        if index == 0:
            raise VsrftError(f"no decodable video frames in {self.path}")
        # Frame threading hides the decoder's complaint about a cut-off last packet, and the MP4/MOV
        # demuxer just stops where the data ends: compare with the container's own sample count.
        expected = int(self.stream.frames or 0) if "mp4" in self.container.format.name else 0
        if last_corrupt or packets < expected:
            have = f"{packets} of its {expected}" if packets < expected else f"{index}"
            raise VsrftError(f"{self.path} is truncated or corrupt: the data ends after {have} video frames")


@dataclass(frozen=True)
class FirstFrameSideData:
    display_matrix: tuple[int, ...] | None = None            # 9 int32, FFmpeg's AV_PKT_DATA_DISPLAYMATRIX
    mastering_display: tuple[tuple[Fraction, Fraction], ...] | None = None   # R, G, B, white point (x, y)
    luminance: tuple[Fraction, Fraction] | None = None       # mastering display (min, max) cd/m2
    content_light: tuple[int, int] | None = None             # (MaxCLL, MaxFALL) cd/m2


def _peek_side_data(path: Path, stream_index: int) -> FirstFrameSideData:
    found: dict[str, object] = {}
    try:
        with av.open(str(path), mode="r") as c:
            stream = c.streams[stream_index]
            for n, packet in enumerate(c.demux(stream)):
                if n >= PEEK_PACKETS:
                    break
                frames = packet.decode()
                if frames:
                    found.update(side_data_by_name(frames[0]))
                    break
    except (av.FFmpegError, OSError, ValueError, IndexError, UnicodeDecodeError) as exc:
        log.debug("no side data from %s: %s", path, exc)
    out: dict[str, object] = {}
    dm = found.get("DISPLAYMATRIX")
    if isinstance(dm, bytes) and len(dm) == 36:
        out["display_matrix"] = tuple(int(v) for v in np.frombuffer(dm, "<i4"))
    md = found.get("MASTERING_DISPLAY_METADATA")
    if isinstance(md, bytes) and len(md) >= 88:     # AVMasteringDisplayMetadata: 10 AVRationals, 2 flags
        v = [int(x) for x in np.frombuffer(md[:88], "<i4")]
        q = [Fraction(v[i], v[i + 1]) if v[i + 1] else Fraction(0) for i in range(0, 20, 2)]
        if v[20]:
            out["mastering_display"] = ((q[0], q[1]), (q[2], q[3]), (q[4], q[5]), (q[6], q[7]))
        if v[21]:
            out["luminance"] = (q[8], q[9])
    cl = found.get("CONTENT_LIGHT_LEVEL")
    if isinstance(cl, bytes) and len(cl) >= 8:
        maxcll, maxfall = (int(x) for x in np.frombuffer(cl[:8], "<u4"))
        out["content_light"] = (maxcll, maxfall)
    return FirstFrameSideData(**out)  # type: ignore[arg-type]


def side_data_by_name(frame: av.VideoFrame) -> dict[str, bytes]:
    """A frame's side data as {type name: payload}, on every PyAV from 17.1 on.

    PyAV up to 18.1.0 iterates its side-data container by entry, 18.1.1 by key (a Mapping of
    `Type`); both are handled. An entry that cannot be read is logged and left out.
    """
    container = frame.side_data
    out: dict[str, bytes] = {}
    try:
        items = list(container)
    except (TypeError, ValueError) as exc:
        log.debug("side data of a frame not readable: %s", exc)
        return out
    for item in items:
        try:
            entry = container[item] if isinstance(item, Enum) else item
            out[entry.type.name] = bytes(entry)
        except (TypeError, ValueError, KeyError, AttributeError, BufferError) as exc:
            log.debug("side data entry %r not readable: %s", item, exc)
    return out


def _pts_step(rate: Fraction | None, tb: Fraction) -> int:
    if not rate:
        return 1
    return max(1, int(round(1 / (rate * tb))))


def _is_attached_pic(stream: av.stream.Stream) -> bool:
    try:
        return bool(stream.disposition & av.stream.Disposition.attached_pic)
    except AttributeError:
        return False
