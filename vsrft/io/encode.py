"""Encoding and muxing with PyAV into a temporary file that is renamed over the target at the end.

The output keeps the source's video time base, frame timestamps and durations (VFR stays
VFR), average rate, colour tags, display matrix (rotation) and bit depth (10-bit in, 10-bit
out where the encoder can); HDR10 static metadata (mastering display, content light level)
goes to libx265. Audio and subtitle packets are copied unchanged where the container can hold
them; every other stream (data, attachments, cover art, further video) is dropped with a warning.
"""
from __future__ import annotations

import errno
import logging
import os
import secrets
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vsrft.errors import VsrftError
from vsrft.frame import Frame
from vsrft.io.convert import bit_depth, rgb16_to_frame, rgb_to_frame
from vsrft.io.decode import VideoSource, _is_attached_pic

log = logging.getLogger(__name__)

# Codecs each container family can hold when copied (others are dropped with a warning).
_MP4_OK = {"aac", "mp3", "ac3", "eac3", "opus", "alac", "flac", "mov_text", "dts", "mp2"}
_CONTAINER_ALLOWS = {
    "mp4": _MP4_OK, "mov": _MP4_OK | {"pcm_s16le", "pcm_s24le", "pcm_s16be"}, "m4v": _MP4_OK,
    "webm": {"opus", "vorbis", "webvtt"},
}


class VideoSink:
    """An output file being written. Call `write()` per frame and `mux()` per copied packet,
    then `close()` to finish and atomically rename; `abort()` removes the temporary file.

    codec None: libx264 where the container holds H.264, else the container's default encoder
    (.webm: libvpx-vp9). `options` go to the encoder (an option it does not have is an error);
    `bitrate` ("2M", "800k" or bits/s) sets a target bitrate and then `crf` is not applied.
    """

    def __init__(self, path: str | Path, source: VideoSource, width: int, height: int, *,
                 codec: str | None = None, crf: float | None = 18, preset: str | None = "veryfast",
                 pix_fmt: str | None = None, options: dict[str, str] | None = None, bitrate: str | int | None = None,
                 quiet: bool = False, dry_run: bool = False) -> None:
        self.path = Path(path)
        self.source = source
        self._warn = (lambda *a: None) if quiet else log.warning     # a preflight's throwaway sink says nothing
        # A symlink's target is written (the link stays); a device or FIFO is written to, never replaced.
        self.target = Path(os.path.realpath(self.path)) if self.path.is_symlink() else self.path
        parent = self.target.parent if str(self.target.parent) else Path(".")
        if not parent.is_dir():
            raise VsrftError(f"output directory does not exist: {parent}")
        if self.target.is_dir():
            raise VsrftError(f"output path is a directory: {self.path}")
        if self.target.resolve() == source.path.resolve():
            raise VsrftError("output path is the same file as the input")
        self.direct = self.target.exists() and not self.target.is_file()   # /dev/null, a FIFO, a device
        if codec is not None:
            try:
                codec_obj = av.Codec(codec, "w")
            except Exception:
                raise VsrftError(f"unknown or unavailable encoder: {codec}") from None
            if codec_obj.type != "video":
                raise VsrftError(f"encoder {codec} is not a video encoder")
        bits = parse_bitrate(bitrate)
        suffix = self.path.suffix or ".mkv"
        self._owned = True          # the file written is ours to delete on failure (not the device or FIFO)
        try:
            if self.direct and not dry_run:
                self.tmp_path, self._owned = self.target, False
            elif self.direct:       # a check must not open a FIFO (it waits for a reader, then ends its stream)
                fd, name = tempfile.mkstemp(prefix="vsrft-check-", suffix=suffix)
                os.close(fd)
                self.tmp_path = Path(name)
            else:
                self.tmp_path = temporary_output(self.target, suffix)
        except OSError as exc:
            raise VsrftError(f"cannot write to {parent}: {exc.strerror}") from None
        self._lock_fd: int | None = None
        if self._owned and not dry_run:
            # held while this run writes it: the stale-file cleanup of another run leaves it alone
            import fcntl

            self._lock_fd = os.open(self.tmp_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
            stale = remove_stale_partials(self.target, keep=self.tmp_path)
            if stale:
                log.info("removed %d temporary file(s) an interrupted run left: %s", len(stale),
                         ", ".join(p.name for p in stale))
        fmt = _format_for(self.path)
        container_opts = {}
        tb = source.time_base
        mp4 = self.path.suffix.lower() in (".mp4", ".mov", ".m4v")
        if mp4 and tb.numerator == 1 and tb.denominator < 2 ** 31:
            # MP4/MOV would raise a small time scale (1/1000 -> 1/16000): keep the source's, so the timestamps
            # are the same integers
            container_opts["video_track_timescale"] = str(tb.denominator)
        if mp4 and self.direct:      # a pipe cannot be seeked back to write the index: fragmented MP4, as streamed
            container_opts["movflags"] = "frag_keyframe+empty_moov+default_base_moof"
        try:
            self.container = av.open(str(self.tmp_path), mode="w", format=fmt, options=container_opts)
        except (av.FFmpegError, ValueError) as exc:
            if self._owned:
                self.tmp_path.unlink(missing_ok=True)
            if isinstance(exc, av.FFmpegError) and self.direct:
                raise VsrftError(f"cannot write {self.path}: {exc.strerror or exc}") from None
            raise VsrftError(f"cannot write {self.path}: unknown container for extension {suffix!r} ({exc})") from None
        self._closed = False
        for key, value in source.container.metadata.items():    # title, artist, date, comment, ...
            if key.lower() not in _TECHNICAL_TAGS:
                self.container.metadata[key] = value
        try:
            self._setup_video(codec, width, height, crf, preset, pix_fmt, options or {}, bits)
            self._setup_copies()
        except BaseException:
            self.abort()
            raise
        self.frames_written = 0

    def _setup_video(self, codec: str | None, width: int, height: int, crf: float | None, preset: str | None,
                     pix_fmt: str | None, options: dict[str, str], bitrate: int | None) -> None:
        src = self.source
        rate = src.rate or Fraction(25)
        stream = None
        if codec is None:      # libx264 where the container holds H.264, else the container's own default
            try:
                stream = self.container.add_stream("libx264", rate=rate)
                codec = "libx264"
            except ValueError:
                codec = _container_codec(self.container, self.path)
        if stream is None:
            try:
                stream = self.container.add_stream(codec, rate=rate)
            except ValueError as exc:   # e.g. "'webm' format does not support 'libx264' codec"
                raise VsrftError(f"cannot write {codec} video into {self.path.name}: {exc}; "
                                 "choose another --codec or output extension") from None
        self.codec = codec
        stream.width, stream.height = width, height
        formats = [f.name for f in (stream.codec_context.codec.video_formats or [])]
        if pix_fmt is None and src.bit_depth > 8:
            pix_fmt = _deep_pix_fmt(formats, src.bit_depth, odd=bool(width % 2 or height % 2))
            if pix_fmt is None:
                self._warn("encoder %s cannot write %d-bit video: the output is 8-bit (libx264, libx265 and ffv1 "
                           "keep the depth)", codec, src.bit_depth)
        if pix_fmt is None:
            pix_fmt = "yuv420p" if (not formats or "yuv420p" in formats) else formats[0]
            if width % 2 or height % 2:
                pix_fmt = "yuv444p" if (not formats or "yuv444p" in formats) else pix_fmt
        elif formats and pix_fmt not in formats:
            raise VsrftError(f"encoder {codec} does not support pixel format {pix_fmt} (it takes {', '.join(formats)})")
        stream.pix_fmt = pix_fmt
        stream.time_base = src.time_base
        stream.codec_context.time_base = src.time_base
        colour = src.colour
        cc = stream.codec_context
        cc.colorspace, cc.color_range = colour.matrix, colour.range
        cc.color_primaries, cc.color_trc = colour.primaries, colour.transfer
        opts = dict(options)
        if bitrate is not None:        # a target bitrate replaces the default constant-quality mode
            stream.codec_context.bit_rate = bitrate
            crf = None
        if crf is not None and codec in ("libx264", "libx265", "libvpx-vp9", "libaom-av1", "libsvtav1"):
            opts.setdefault("crf", f"{crf:g}")
        if preset and codec in ("libx264", "libx265", "libsvtav1"):
            opts.setdefault("preset", preset)
        if self.path.suffix.lower() == ".avi":
            opts.setdefault("bf", "0")   # AVI stores no presentation times: reordered B-frames would shift them
        self._hdr_metadata(codec, opts)
        side = src.side_data
        if side.display_matrix:        # rotation / flips: the container's display matrix, as found
            stream.set_display_matrix(list(side.display_matrix))
        stream.options = opts
        self.encoder_options = dict(opts)      # (the stream does not give them back)
        try:   # open now, so bad settings fail here rather than in the encoder thread at frame 0
            stream.codec_context.open()
        except av.FFmpegError as exc:
            raise VsrftError(f"encoder {codec} rejects these settings ({width}x{height} {pix_fmt}, "
                             f"{', '.join(f'{k}={v}' for k, v in opts.items()) or 'defaults'}): "
                             f"{exc.strerror or exc}") from None
        unused = sorted(stream.codec_context.options or {})   # FFmpeg hands back the options nothing took
        if unused:
            raise VsrftError(f"encoder {codec} has no option {', '.join(map(repr, unused))} "
                             f"(see `ffmpeg -h encoder={codec}`)")
        _copy_tags(src.stream, stream)
        self.video = stream
        self.pix_fmt = pix_fmt
        self.deep = bit_depth(pix_fmt) > 8
        self.colour = colour

    def _hdr_metadata(self, codec: str, opts: dict[str, str]) -> None:
        """x265's options: HDR10 static metadata of the source as SEI (no other encoder here writes it)."""
        side = self.source.side_data
        params = []
        if side.mastering_display and side.luminance:
            (rx, ry), (gx, gy), (bx, by), (wx, wy) = side.mastering_display
            c = lambda v: int(round(v * 50000))          # noqa: E731 - chromaticity in 0.00002 units
            params.append(f"master-display=G({c(gx)},{c(gy)})B({c(bx)},{c(by)})R({c(rx)},{c(ry)})"
                          f"WP({c(wx)},{c(wy)})L({int(round(side.luminance[1] * 10000))},"
                          f"{int(round(side.luminance[0] * 10000))})")
        if side.content_light:
            params.append(f"max-cll={side.content_light[0]},{side.content_light[1]}")
        if codec != "libx265":
            if params:
                self._warn("the input carries HDR10 static metadata (mastering display / content light level), "
                           "which only --codec libx265 writes: %s keeps the colour tags but drops it", codec)
            return
        user = opts.get("x265-params")
        # x265 logs to stderr itself, around FFmpeg's logging: errors only (the command's stderr is ours)
        opts["x265-params"] = ":".join(["log-level=error", *params, *([user] if user else [])])

    def _setup_copies(self) -> None:
        allowed = _CONTAINER_ALLOWS.get(self.path.suffix.lower().lstrip("."))
        self.copies: dict[int, av.stream.Stream] = {}
        for s in self.source.other_streams:
            what = "attached picture" if s.type == "video" and s.index != self.source.stream.index and \
                _is_attached_pic(s) else f"{s.type} stream"
            name = s.codec_context.name if s.type in ("video", "audio", "subtitle") and s.codec_context else \
                (s.metadata.get("filename") or s.metadata.get("handler_name") or s.type)
            self._warn("dropping %s #%d (%s): vsrft copies audio and subtitle streams only", what, s.index, name)
        for s in self.source.copy_streams:
            name = s.codec_context.name if s.codec_context else "?"
            if allowed is not None and name not in allowed:
                self._warn("dropping %s stream #%d (%s): %s cannot hold it; use .mkv to keep it",
                           s.type, s.index, name, self.path.suffix)
                continue
            try:
                out = self.container.add_stream_from_template(s)
            except ValueError as exc:     # e.g. "'matroska' format does not support 'mov_text' codec"
                self._warn("dropping %s stream #%d (%s): %s; choose another output extension to keep it",
                           s.type, s.index, name, exc)
                continue
            _copy_tags(s, out)
            self.copies[s.index] = out

    @property
    def dropped_streams(self) -> int:
        return len(self.source.copy_streams) - len(self.copies)

    def mux(self, packet: av.Packet) -> None:
        out = self.copies.get(packet.stream.index)
        if out is None:
            return
        packet.stream = out
        self._mux(packet)

    def write(self, frame: Frame) -> None:
        for p in self.encode(frame, self.video):
            self._mux(p)
        self.frames_written += 1

    def video_frame(self, frame: Frame) -> av.VideoFrame:
        """The encoder's input for an upscaled frame: its pixel format, matrix, range and timestamps."""
        if self.deep:
            rgb16 = frame.rgb16 if frame.rgb16 is not None else frame.rgb.astype(np.uint16) * np.uint16(257)
            vf = rgb16_to_frame(rgb16, self.pix_fmt, self.colour)
        else:
            vf = rgb_to_frame(frame.rgb, self.pix_fmt, self.colour)
        vf.pts = frame.pts
        vf.time_base = frame.time_base
        if frame.duration:
            vf.duration = frame.duration
        return vf

    def encode(self, frame: Frame | None, encoder: av.video.stream.VideoStream | av.CodecContext) -> list[av.Packet]:
        """Packets of `encoder` (this file's stream, or one from `new_encoder`) for a frame; None flushes."""
        try:
            return list(encoder.encode(None if frame is None else self.video_frame(frame)))
        except av.FFmpegError as exc:
            where = "at the end" if frame is None else f"at frame {frame.index}"
            raise VsrftError(f"encoder {self.video.codec_context.name} failed {where}: {exc.strerror or exc}") from None

    def new_encoder(self, reproducible: bool = True) -> av.CodecContext:
        """A fresh encoder with exactly this file's settings: a resumable job starts one per segment,
        so a segment encodes the same whether or not the job was interrupted before it.

        reproducible: x264's macroblock-tree rate control gave different bitstreams for the same
        frames from run to run here (and none without it), so it is switched off for libx264."""
        ref = self.video.codec_context
        cc = av.CodecContext.create(ref.name, "w")
        cc.width, cc.height, cc.pix_fmt = ref.width, ref.height, ref.pix_fmt
        cc.time_base, cc.framerate = ref.time_base, ref.framerate
        cc.colorspace, cc.color_range = ref.colorspace, ref.color_range
        cc.color_primaries, cc.color_trc = ref.color_primaries, ref.color_trc
        cc.flags = ref.flags
        if ref.bit_rate:              # PyAV 18.1.1 gives None for unset
            cc.bit_rate = ref.bit_rate
        opts = dict(self.encoder_options)
        if reproducible and ref.name == "libx264":
            opts["x264-params"] = ":".join(filter(None, ["mbtree=0", opts.get("x264-params")]))
        cc.options = opts
        cc.open()
        return cc

    def mux_video(self, packet: av.Packet) -> None:
        """Mux an already encoded video packet (from a segment encoder or a stored segment)."""
        packet.stream = self.video
        self._mux(packet)

    def _mux(self, packet: av.Packet) -> None:
        try:
            self.container.mux(packet)
        except av.FFmpegError as exc:
            raise VsrftError(f"writing {self.path} failed: {exc.strerror or exc}") from None
        except OSError as exc:
            raise VsrftError(f"writing {self.path} failed: {exc.strerror or exc}") from None

    def close(self) -> None:
        """Flush the encoder, finish the file and move it over the target."""
        if self._closed:
            return
        try:
            for p in self.video.encode(None):
                self._mux(p)
            self.container.close()
        except av.FFmpegError as exc:
            self.abort()
            raise VsrftError(f"finishing {self.path} failed: {exc.strerror or exc}") from None
        except OSError as exc:
            self.abort()
            raise VsrftError(f"finishing {self.path} failed: {exc.strerror or exc}") from None
        except BaseException:
            self.abort()
            raise
        if self._owned:
            os.replace(self.tmp_path, self.target)
        self._closed = True
        self._unlock()

    def _unlock(self) -> None:
        if getattr(self, "_lock_fd", None) is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def abort(self) -> None:
        """Drop everything written so far; the target path is left untouched."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - already failing; the file is deleted anyway
            pass
        if self._owned:
            self.tmp_path.unlink(missing_ok=True)
        self._unlock()


def temporary_output(target: Path, suffix: str) -> Path:
    """A new, empty hidden file beside `target`, to be renamed over it when complete.

    Made with mode 0666 less the umask, as ffmpeg makes its outputs (mkstemp's 0600 would
    survive the rename and leave every output readable by its owner only). O_EXCL keeps the
    name ours alone. The name is `partial_prefix(target)` + 8 hex digits + `.partial` + suffix,
    the stem shortened so that a name the file system takes gets a temporary name it takes too."""
    parent = target.parent if str(target.parent) else Path(".")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        path = parent / f"{partial_prefix(target)}{secrets.token_hex(4)}.partial{suffix[:16]}"
        try:
            os.close(os.open(path, flags, 0o666))
        except FileExistsError:
            continue
        return path
    raise FileExistsError(errno.EEXIST, f"no free temporary name beside {target}")


def partial_prefix(target: Path) -> str:
    """How the temporary files of `target` begin: "." + its stem (cut to leave room in 255 bytes) + "."."""
    stem = target.stem.encode()[:200].decode(errors="ignore")
    return f".{stem}."


def remove_stale_partials(target: Path, keep: Path | None = None) -> list[Path]:
    """Delete temporary files of `target` that an earlier run left (killed before it could clean up).

    Only files named as `temporary_output` names them for this target, and only those no process
    holds a lock on (a run in progress locks its temporary file: see `lock_file`)."""
    parent = target.parent if str(target.parent) else Path(".")
    prefix, removed = partial_prefix(target), []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        rest = name[len(prefix):]
        if not name.startswith(prefix) or len(rest) < 9 or rest[8:17] != ".partial." and rest[8:] != ".partial":
            continue
        if not all(c in "0123456789abcdef" for c in rest[:8]):
            continue
        path = parent / name
        if keep is not None and path == keep:
            continue
        try:
            with open(path, "rb") as f:
                if not _try_lock(f.fileno()):
                    continue                 # another run is writing it
            path.unlink()
            removed.append(path)
        except OSError:
            continue
    return removed


def _try_lock(fd: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


# Tags that describe the old file's encoding, not the content: the new file gets its own.
_TECHNICAL_TAGS = {"encoder", "major_brand", "minor_version", "compatible_brands", "duration", "handler_name",
                   "vendor_id", "_statistics_tags", "_statistics_writing_app", "_statistics_writing_date_utc",
                   "bps", "number_of_frames", "number_of_bytes",
                   "timecode"}     # on a video stream it makes the MP4 muxer add a timecode (data) track


def _copy_tags(src: av.stream.Stream, dst: av.stream.Stream) -> None:
    """Language, title and other content tags of a stream, and its disposition (default, forced, ...)."""
    for key, value in src.metadata.items():
        if key.lower() not in _TECHNICAL_TAGS and not key.lower().startswith(("duration", "number_of", "bps")):
            dst.metadata[key] = value
    try:
        dst.disposition = src.disposition
    except (AttributeError, TypeError, ValueError):     # a PyAV without a settable disposition
        pass


_BITRATE_UNITS = {"": 1, "k": 1000, "m": 1000 ** 2, "g": 1000 ** 3}


def parse_bitrate(text: str | int | None) -> int | None:
    """Bits per second from "2M", "800k", "1.5M" or a number, as ffmpeg's -b:v reads them (SI units)."""
    if text is None or isinstance(text, int):
        if text is not None and text <= 0:
            raise VsrftError(f"bitrate must be positive, got {text}")
        return text
    value = str(text).strip().lower()
    unit = value[-1:] if value[-1:] in _BITRATE_UNITS else ""
    try:
        bits = round(float(value[:len(value) - len(unit)]) * _BITRATE_UNITS[unit])
    except ValueError:
        bits = 0
    if bits <= 0:
        raise VsrftError(f"bitrate must be a positive number of bits per second such as 2M or 800k, got {text!r}")
    return bits


def _container_codec(container: av.container.OutputContainer, path: Path) -> str:
    """The encoder FFmpeg would pick for this container (.webm: libvpx-vp9), for a container without H.264."""
    name = container.default_video_codec
    try:
        return av.Codec(name, "w").name
    except Exception:  # noqa: BLE001 - FFmpeg built without that encoder
        raise VsrftError(f"no encoder for {path.suffix or 'this'} output ({name} is not available here): "
                         "choose one with --codec") from None


def _deep_pix_fmt(formats: list[str], depth: int, odd: bool) -> str | None:
    """The encoder's planar YUV format for a `depth`-bit source: 4:2:0 (4:4:4 at odd sizes) at the
    smallest depth >= the source's, else any YUV format that deep; None when it has none."""
    chroma = "444" if odd else "420"
    for d in (10, 12, 16):
        name = f"yuv{chroma}p{d}le"
        if d >= depth and (not formats or name in formats):
            return name
    deep = [f for f in formats if f.startswith("yuv") and bit_depth(f) >= depth and (not odd or "444" in f)]
    return deep[0] if deep else None


def _format_for(path: Path) -> str | None:
    ext = path.suffix.lower().lstrip(".")
    return {"mkv": "matroska", "m4v": "mp4", "ts": "mpegts", "y4m": "yuv4mpegpipe", "": "matroska"}.get(ext)


def preflight(src: str | Path, dst: str | Path, *, scale: int = 4, codec: str | None = None,
              crf: float | None = 18, preset: str | None = "veryfast", pix_fmt: str | None = None,
              encoder_options: dict[str, str] | None = None, bitrate: str | int | None = None,
              resume: bool = False) -> None:
    """Check the input, the output path and the encoder settings before any model is loaded.

    Opens the input, and makes (then removes) the output's temporary file with the encoder opened:
    every mistake in the arguments fails in a blink, as one VsrftError, with nothing left behind.
    Needs neither torch nor ONNX Runtime, so the command line can call it before importing them.
    """
    if scale < 1:
        raise VsrftError(f"scale must be a positive integer, got {scale}")
    with VideoSource(src) as source:
        sink = VideoSink(dst, source, source.width * scale, source.height * scale, codec=codec, crf=crf,
                         preset=preset, pix_fmt=pix_fmt, options=encoder_options, bitrate=bitrate,
                         quiet=True, dry_run=True)
        sink.abort()
        if resume and sink.direct:
            raise VsrftError(f"--resume needs a regular file as the output; {dst} is a device or FIFO")
