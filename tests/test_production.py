"""Production video (issue #7): what `vsrft enhance` keeps, checked on real files.

Every clip is made here with the real `ffmpeg` binary (or PyAV where ffmpeg 5.1 cannot write
the property), run through the real console command and read back with PyAV. Clips are tiny
(64x48 or odd sizes, at most 24 frames). Colour and bit-depth checks use the built-in
`vsrft-mse` (a trained network keeps flat colour flat; the random test model does not);
the file-handling checks use the tiny random model. Everything runs with `--no-adapt`.
"""
from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from helpers import (SRT, Run, VFR_EXPR, assert_one_line_error, cli_env, enhance_once, ffmpeg, leftovers, video_info,
                     vsrft, yuv_planes)

FAST = ("--no-adapt", "-q")
MSE = ("--model", "vsrft-mse", "--no-adapt", "-q")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """made(name, ext, *ffmpeg args) -> path of a clip made once per module with the ffmpeg binary."""
    folder = tmp_path_factory.mktemp("production-clips")
    done: dict[str, Path] = {}

    def make(name: str, ext: str, *args: object) -> Path:
        if name not in done:
            path = folder / f"{name}.{ext}"
            ffmpeg(*args, path)
            done[name] = path
        return done[name]

    make.folder = folder
    return make


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model):
    """run(src, ext, *args) -> (Run, output path): `vsrft enhance` once per distinct call (tiny model by default)."""
    def arguments(args: tuple[str, ...]) -> tuple[str, ...]:
        model = () if "--model" in args else ("--model", tiny_model)
        return (*model, *(args or FAST))

    return enhance_once(tmp_path_factory.mktemp("production-out"), arguments)


def ok(result: Run, out: Path) -> None:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "error" not in result.stderr.lower(), result.stderr
    assert out.is_file() and leftovers(out.parent) == []


def lavfi(graph: str) -> list[str]:
    return ["-f", "lavfi", "-i", graph]


# ---------------------------------------------------------------- colour: matrix and range, tags and values

# (name, scale filter's matrix, range) -> ffmpeg's tags; BT.601 limited as SD broadcast tags it, BT.601
# full range as JPEG/MJPEG does (bt470bg), BT.709 both ways.
COLOURS = {
    "bt709-limited": ("bt709", "tv", ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"]),
    "bt709-full": ("bt709", "pc", ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"]),
    "bt601-limited": ("bt601", "tv", ["-colorspace", "smpte170m", "-color_primaries", "smpte170m",
                                      "-color_trc", "smpte170m"]),
    "bt601-full": ("bt601", "pc", ["-colorspace", "bt470bg", "-color_primaries", "bt470bg", "-color_trc", "gamma28"]),
}
FLAT = (0x30, 0x50, 0xA0)      # an in-gamut colour, far from grey: a wrong matrix moves it by several codes


def colour_clip(made, name: str) -> Path:
    """4 frames of flat colour, then 4 of SMPTE colour bars, 160x120, YUV made by swscale with the named matrix
    and range and tagged so; lossless x264.

    Not smaller: where two saturated bars meet, 4:2:0 chroma against full-resolution luma is out of the
    RGB gamut and the 8-bit RGB stage clips it, which raises the means in proportion to the length of
    the bar edges (the decode -> RGB -> encode round trip alone: +0.75 Y code at 64x48, +0.37 at 160x120).
    """
    matrix, rng, tags = COLOURS[name]
    rgb = "0x%02x%02x%02x" % FLAT
    graph = (f"color=c={rgb}:s=160x120:r=24,trim=end_frame=4[a];smptebars=s=160x120:r=24,trim=end_frame=4[b];"
             "[a][b]concat=n=2:v=1:a=0,"
             f"scale=out_color_matrix={matrix}:out_range={rng},format=yuv420p")
    return made(f"colour-{name}", "mp4", *lavfi(graph), "-c:v", "libx264", "-qp", "0", *tags,
                "-color_range", rng)


def expected_rgb(y: float, u: float, v: float, matrix: str, full: bool) -> np.ndarray:
    """Independent YUV -> RGB (8-bit codes) for the check that the decoder honours the tags."""
    kr, kb = {"bt709": (0.2126, 0.0722), "bt601": (0.299, 0.114)}[matrix]
    if full:
        yn, cb, cr = y / 255, (u - 128) / 255, (v - 128) / 255
    else:
        yn, cb, cr = (y - 16) / 219, (u - 128) / 224, (v - 128) / 224
    r = yn + 2 * (1 - kr) * cr
    b = yn + 2 * (1 - kb) * cb
    g = (yn - kr * r - kb * b) / (1 - kr - kb)
    return np.array([r, g, b]) * 255


@pytest.mark.parametrize("name", list(COLOURS))
def test_colour_matrix_and_range(made, run, name: str) -> None:
    """Tags (matrix, range, primaries, transfer) kept; every frame's Y, U and V means within 1 code value of
    the input's, on flat colour and on colour bars; and the decoder reads the input with its own matrix and range."""
    from vsrft.frame import Frame
    from vsrft.io.decode import VideoSource

    src = colour_clip(made, name)
    result, out = run(src, "mp4", *MSE)
    ok(result, out)
    a, b = video_info(src), video_info(out)
    full = COLOURS[name][1] == "pc"
    assert a.tags[0] in (1, 5, 6) and a.tags[1] == (2 if full else 1)      # the input really is tagged so
    assert b.tags == a.tags
    assert (b.width, b.height, len(b.pts)) == (640, 480, 8)
    ins, outs = yuv_planes(src), yuv_planes(out)
    assert len(ins) == len(outs) == 8
    for i, (x, y) in enumerate(zip(ins, outs)):
        for plane, p, q in zip("YUV", x, y):
            assert abs(float(p.mean()) - float(q.mean())) <= 1.0, (i, plane, float(p.mean()), float(q.mean()))
    assert np.ptp(ins[0][0]) <= 1 and np.ptp(ins[7][0]) > 100        # flat, then bars
    # the decoder converts with the tagged matrix and range (a wrong one moves this colour by > 3 codes)
    with VideoSource(src) as source:
        rgb = next(item.rgb for item in source.read() if isinstance(item, Frame))
    want = expected_rgb(*(float(p.mean()) for p in ins[0]), COLOURS[name][0], full)
    assert np.abs(rgb.reshape(-1, 3).mean(0) - want).max() <= 1.0, (rgb[0, 0], want)
    other = expected_rgb(*(float(p.mean()) for p in ins[0]), "bt601" if "709" in name else "bt709", full)
    assert np.abs(other - want).max() > 3


# ---------------------------------------------------------------- timing

def test_vfr_timestamps_exact(made, run) -> None:
    """Irregular timestamps (jitter and a pause) come out as the same integers in the same time base."""
    src = made("vfr", "mkv", *lavfi("testsrc2=s=64x48:r=24,trim=end_frame=16"), "-vf",
               f"settb=1/1000,setpts={VFR_EXPR}", "-fps_mode", "passthrough", "-c:v", "ffv1")
    for ext in ("mkv", "mp4"):
        result, out = run(src, ext)
        ok(result, out)
        a, b = video_info(src), video_info(out)
        steps = {q - p for p, q in zip(a.pts, a.pts[1:])}
        assert len(steps) >= 3 and max(steps) > 250, steps           # the input really is irregular
        assert b.time_base == a.time_base
        assert b.pts == a.pts


@pytest.mark.parametrize("kind", ["video-only", "with-audio"])
def test_duration_kept(made, run, kind: str) -> None:
    """The container's duration and the last frame's duration are the input's (a 25 fps clip of 10 frames
    lasts 0.4 s, not 0.36)."""
    args = [*lavfi("testsrc2=s=64x48:r=25,trim=end_frame=10")]
    if kind == "with-audio":
        args += [*lavfi("sine=frequency=440:sample_rate=48000:duration=0.4"), "-c:a", "aac"]
    src = made(f"duration-{kind}", "mp4", *args, "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p")
    result, out = run(src, "mp4")
    ok(result, out)
    a, b = video_info(src), video_info(out)
    assert a.duration_s == pytest.approx(0.4, abs=0.03)
    assert b.duration_s == pytest.approx(a.duration_s, abs=1e-3)
    assert b.durations == a.durations and a.durations[-1]


# ---------------------------------------------------------------- streams

def test_two_audio_tracks_and_subtitles_copied(made, run, tmp_path) -> None:
    """mkv: two audio tracks (FLAC, Opus) and an SRT track come out packet for packet; an attached font
    (an attachment stream) is dropped with a warning naming it."""
    srt = tmp_path / "subs.srt"
    srt.write_text(SRT)
    font = tmp_path / "font.ttf"
    font.write_bytes(b"\0\1\0\0" + bytes(60))
    src = made("streams", "mkv", *lavfi("testsrc2=s=64x48:r=24,trim=end_frame=20"),
               *lavfi("sine=frequency=440:sample_rate=48000:duration=0.84"),
               *lavfi("sine=frequency=660:sample_rate=48000:duration=0.84"), "-i", srt,
               "-map", "0:v", "-map", "1:a", "-map", "2:a", "-map", "3:s", "-c:v", "ffv1", "-c:a:0", "flac",
               "-c:a:1", "libopus", "-c:s", "srt", "-attach", font, "-metadata:s:t", "mimetype=font/ttf")
    assert video_info(src).stream_types == ["video", "audio", "audio", "subtitle", "attachment"]
    result, out = vsrft_loud(run, src, "mkv")
    assert video_info(out).stream_types == ["video", "audio", "audio", "subtitle"]
    assert "dropping attachment stream #4 (font.ttf)" in result.stderr
    with av.open(str(src)) as a, av.open(str(out)) as b:
        names = [s.codec_context.name for s in b.streams if s.type != "video"]
        assert names == [s.codec_context.name for s in a.streams if s.type in ("audio", "subtitle")]
        assert names[:2] == ["flac", "opus"] and len(names) == 3
    for index in (1, 2, 3):
        want, got = _packets(src, index), _packets(out, index)
        assert len(want) > 0 and got == want, index


def _packets(path: Path, index: int) -> list[tuple[bytes, float]]:
    with av.open(str(path)) as c:
        s = c.streams[index]
        return [(bytes(p), float(p.pts * p.time_base)) for p in c.demux(s) if p.size]


def vsrft_loud(run, src: Path, ext: str, *args: str) -> tuple[Run, Path]:
    """A run without -q (warnings are the point), which must still succeed without an error line."""
    result, out = run(src, ext, "--no-adapt", *args)
    ok(result, out)
    return result, out


def test_data_stream_dropped_with_warning(made, run) -> None:
    """A QuickTime timecode track (a data stream) is dropped, and the log says so."""
    src = made("timecode", "mov", *lavfi("testsrc2=s=64x48:r=24,trim=end_frame=8"), "-c:v", "libx264",
               "-preset", "veryfast", "-pix_fmt", "yuv420p", "-timecode", "01:00:00:00")
    assert video_info(src).stream_types == ["video", "data"]
    result, out = vsrft_loud(run, src, "mov")
    assert video_info(out).stream_types == ["video"]
    assert "dropping data stream #1" in result.stderr


def test_cover_art_dropped_and_not_upscaled(made, run) -> None:
    """mp4 cover art (an attached-picture video stream) is neither taken for the video nor kept; a warning says so."""
    cover = made("cover", "png", *lavfi("color=c=red:s=32x32:d=0.04"), "-frames:v", "1")
    src = made("with-cover", "mp4", *lavfi("testsrc2=s=64x48:r=24,trim=end_frame=8"), "-i", cover,
               "-map", "0:v", "-map", "1:v", "-c:v:0", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
               "-c:v:1", "mjpeg", "-disposition:v:1", "attached_pic")
    with av.open(str(src)) as c:
        assert len(c.streams.video) == 2 and c.streams.video[1].disposition & av.stream.Disposition.attached_pic
    result, out = vsrft_loud(run, src, "mp4")
    info = video_info(out)
    assert info.stream_types == ["video"] and (info.width, info.height, len(info.pts)) == (256, 192, 8)
    assert "dropping attached picture #1 (mjpeg)" in result.stderr


@pytest.mark.parametrize("ext, degrees, hflip", [("mp4", 90, False), ("mkv", 270, False), ("mov", 90, True)])
def test_rotation_kept(tmp_path, run, ext: str, degrees: int, hflip: bool) -> None:
    """The display matrix (phone video's rotation, here also a mirror) is copied as is.

    ffmpeg 5.1 cannot write one (no -display_rotation; `-metadata:s:v rotate=90` is ignored by its
    muxers), so the input is written with PyAV's `set_display_rotation`; ffmpeg's stream listing reads it back.
    """
    src = tmp_path / f"rotated.{ext}"
    with av.open(str(src), "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.set_display_rotation(degrees, hflip=hflip)
        for i in range(8):
            rgb = np.zeros((48, 64, 3), np.uint8)
            rgb[:, : 8 * (i + 1)] = 200
            vf = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            vf.pts = i
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    a = video_info(src)
    # an independent reader: ffmpeg's own stream listing (imageio-ffmpeg's static build has no ffprobe)
    probe = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-i", src], capture_output=True, text=True).stderr
    assert a.rotation % 360 == degrees and re.search("display ?matrix", probe, re.IGNORECASE)
    result, out = run(src, ext)
    ok(result, out)
    b = video_info(out)
    assert b.rotation == a.rotation
    assert b.side_data["DISPLAYMATRIX"] == a.side_data["DISPLAYMATRIX"]     # the flip too, exactly
    assert (b.width, b.height) == (256, 192)                                  # stored unrotated, as the input


@pytest.mark.parametrize("scale", [4, 3])
def test_odd_size(made, run, scale: int) -> None:
    """63x47 4:2:0 (FFV1 allows odd 4:2:0): x4 is 252x188 in 4:2:0, x3 is 189x141 and needs 4:4:4."""
    src = made("odd-420", "mkv", *lavfi("testsrc2=s=64x48:r=24,trim=end_frame=10"), "-vf",
               "scale=63:47,format=yuv420p", "-c:v", "ffv1")
    assert (video_info(src).width, video_info(src).height) == (63, 47)
    result, out = run(src, "mkv", "--scale", str(scale), *FAST)
    ok(result, out)
    b = video_info(out)
    assert (b.width, b.height, len(b.pts)) == (63 * scale, 47 * scale, 10)
    assert b.pix_fmt == ("yuv420p" if scale == 4 else "yuv444p")


# ---------------------------------------------------------------- 10-bit and HDR

MASTER = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)"
RAMP = "format=yuv420p10le,geq=lum='64+13*X+Y/4':cb=512:cr=512"     # a smooth grey ramp over ~830 10-bit codes


def hdr_clip(made, transfer: str) -> Path:
    """8 frames of a smooth 10-bit grey ramp, HEVC Main 10, BT.2020; PQ with HDR10 static metadata, or HLG."""
    params = "log-level=error" + (f":master-display={MASTER}:max-cll=1000,400" if transfer == "smpte2084" else "")
    # setparams tags the frames too: FFmpeg 7+ takes the encoder's colour from the frames, not -color_trc & co.
    tags = f"setparams=color_primaries=bt2020:color_trc={transfer}:colorspace=bt2020nc:range=tv"
    return made(f"hdr-{transfer}", "mkv", *lavfi("nullsrc=s=64x48:r=24,trim=end_frame=8"), "-vf", f"{RAMP},{tags}",
                "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", params, "-pix_fmt", "yuv420p10le",
                "-color_trc", transfer, "-color_primaries", "bt2020", "-colorspace", "bt2020nc", "-color_range", "tv")


@pytest.mark.parametrize("transfer, codec, ext", [("smpte2084", "libx265", "mkv"), ("arib-std-b67", "libx264", "mp4")],
                         ids=["hdr10-x265", "hlg-x264"])
def test_10bit_hdr_round_trip(made, run, transfer: str, codec: str, ext: str) -> None:
    """10-bit in, 10-bit out (the default pixel format follows the input's depth), BT.2020 and the transfer
    tagged as the input, HDR10 mastering display and content light level carried over (x265 SEI), and the
    picture not quantised to 8 bits on the way."""
    src = hdr_clip(made, transfer)
    a = video_info(src)
    assert a.pix_fmt == "yuv420p10le" and a.tags == (9, 1, 9, 16 if transfer == "smpte2084" else 18)
    if transfer == "smpte2084":
        assert set(a.side_data) >= {"MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL"}
    result, out = run(src, ext, "--codec", codec, "--crf", "8", *MSE)
    ok(result, out)
    b = video_info(out)
    assert b.pix_fmt == "yuv420p10le" and (b.width, b.height, len(b.pts)) == (256, 192, 8)
    assert b.tags == a.tags
    for kind in ("MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL"):
        assert b.side_data.get(kind) == a.side_data.get(kind), kind
    # not quantised to 8 bits: averaged back over 4x4 blocks, the output is within half a 10-bit code of the
    # input on average (CRF 8 included: 0.20 with x265, 0.25 with x264; with an 8-bit RGB stage, 1.03 for both)
    assert block_error(src, out, 3) < 0.5


def block_error(src: Path, out: Path, frame: int) -> float:
    """Mean |4x4 block mean of the x4 output's Y - the input's Y| in codes, away from the borders."""
    x = yuv_planes(src)[frame][0].astype(np.float64)
    y = yuv_planes(out)[frame][0].astype(np.float64)
    h, w = x.shape
    back = y.reshape(h, 4, w, 4).mean(axis=(1, 3))
    return float(np.abs(back - x)[4:-4, 4:-4].mean())


def test_10bit_precision(made, run) -> None:
    """Lossless 10-bit in and out (FFV1): the output, averaged back over each 4x4 block, is within a fraction
    of a 10-bit code of the input, at low codes too; an 8-bit stage would cost ~1 code on average."""
    src = made("ramp10-ffv1", "mkv", *lavfi("nullsrc=s=64x48:r=24,trim=end_frame=6"), "-vf", RAMP,
               "-c:v", "ffv1", "-color_range", "tv", "-colorspace", "bt709", "-color_primaries", "bt709",
               "-color_trc", "bt709")
    result, out = run(src, "mkv", "--codec", "ffv1", *MSE)
    ok(result, out)
    assert video_info(out).pix_fmt == "yuv420p10le"
    x = yuv_planes(src)[3][0].astype(np.float64)
    y = yuv_planes(out)[3][0].astype(np.float64)
    back = y.reshape(48, 4, 64, 4).mean(axis=(1, 3))
    inner = (slice(4, -4), slice(4, -4))
    err = (back - x)[inner]
    low = x[inner] < 400
    assert low.sum() > 100
    assert np.abs(err[low]).mean() < 0.5, np.abs(err[low]).mean()
    assert np.abs(err).mean() < 0.5, np.abs(err).mean()


def test_10bit_into_an_8bit_encoder(made, run) -> None:
    """An encoder without a 10-bit format here (VP9 in this FFmpeg build) writes 8 bits, with a warning; the
    colour tags still follow the input."""
    src = hdr_clip(made, "arib-std-b67")
    result, out = run(src, "webm", "--codec", "libvpx-vp9", *MSE[:-1])
    ok(result, out)
    assert "cannot write 10-bit video: the output is 8-bit" in result.stderr
    b = video_info(out)
    assert b.pix_fmt == "yuv420p" and b.tags == video_info(src).tags


# ---------------------------------------------------------------- hostile input: one line, exit 2, nothing left
#
# (test_enhance.py keeps the argument and output-path mistakes; the broken and strange files are here.)

def _mount_tmpfs(folder: Path, *options: str) -> None:
    """A tiny tmpfs at `folder` (needs root and mount); skips the test where that is impossible."""
    folder.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(["size=64k", *options]), "tmpfs", str(folder)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {res.stderr.strip()}")


def _y4m(path: Path, width: int, height: int, frames: int) -> Path:
    header = f"YUV4MPEG2 W{width} H{height} F24:1 Ip A1:1 C444\n".encode()
    frame = b"FRAME\n" + bytes([128]) * (width * height * 3)
    path.write_bytes(header + frame * frames)
    return path


def _h264(made, name: str, size: str, frames: int) -> Path:
    return made(name, "h264", *lavfi(f"testsrc2=s={size}:r=24,trim=end_frame={frames}"), "-c:v", "libx264",
                "-preset", "veryfast", "-pix_fmt", "yuv420p")


def _hostile_cases():
    """name -> make(tmp, made) -> (input path, output path, expected: "error" or number of output frames)."""
    def out(tmp: Path, ext: str = "mp4") -> Path:
        return tmp / f"out.{ext}"

    def zero_byte(tmp, made):
        (tmp / "empty.mp4").touch()
        return tmp / "empty.mp4", out(tmp), "error"

    def text(tmp, made):
        (tmp / "notes.mp4").write_text("this is not a video\n")
        return tmp / "notes.mp4", out(tmp), "error"

    def garbage(tmp, made):
        (tmp / "noise.mkv").write_bytes(random.Random(7).randbytes(50_000))
        return tmp / "noise.mkv", out(tmp), "error"

    def truncated(tmp, made):          # moov at the end (ffmpeg's default): the first half cannot be opened
        src = made("h264-aac", "mp4", *lavfi("testsrc2=s=64x48:r=24,trim=end_frame=24"),
                   *lavfi("sine=frequency=440:sample_rate=48000:duration=1"), "-c:v", "libx264", "-preset",
                   "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest")
        data = src.read_bytes()
        (tmp / "half.mp4").write_bytes(data[: len(data) // 2])
        return tmp / "half.mp4", out(tmp), "error"

    def wrong_extension(tmp, made):    # an MKV named .mp4: the content decides (recovery)
        src = made("ffv1-10", "mkv", *lavfi("testsrc2=s=64x48:r=24,trim=end_frame=10"), "-c:v", "ffv1")
        shutil.copy(src, tmp / "really-mkv.mp4")
        return tmp / "really-mkv.mp4", out(tmp), 10

    def audio_only(tmp, made):
        src = made("audio-only", "m4a", *lavfi("sine=frequency=440:sample_rate=48000:duration=0.5"), "-c:a", "aac")
        return src, out(tmp), "error"

    def fails_mid_file(tmp, made):     # FFV1 with slice CRCs, 400 bytes overwritten half way
        src = made("ffv1-crc", "mkv", *lavfi("testsrc2=s=64x48:r=24,trim=end_frame=24"), "-c:v", "ffv1",
                   "-level", "3", "-slicecrc", "1")
        data = bytearray(src.read_bytes())
        data[len(data) // 2: len(data) // 2 + 400] = b"\xff" * 400
        (tmp / "broken.mkv").write_bytes(bytes(data))
        return tmp / "broken.mkv", out(tmp), "error"

    def one_by_one(tmp, made):         # 1x1 works: 4x4 out, 4:4:4 (recovery)
        return _y4m(tmp / "dot.y4m", 1, 1, 6), out(tmp, "mkv"), 6

    def too_wide(tmp, made):
        return _y4m(tmp / "wide.y4m", 16385, 2, 1), out(tmp, "mkv"), "error"

    def odd_size(tmp, made):           # 67x41 works (recovery): 268x164
        return _y4m(tmp / "odd.y4m", 67, 41, 5), out(tmp, "mkv"), 5

    def size_change(tmp, made):        # two H.264 streams of different sizes, back to back
        a, b = _h264(made, "h264-64x48", "64x48", 12), _h264(made, "h264-96x64", "96x64", 6)
        (tmp / "two-sizes.h264").write_bytes(a.read_bytes() + b.read_bytes())
        return tmp / "two-sizes.h264", out(tmp), "error"

    def huge_frame_count(tmp, made):   # AVI headers claiming 2^31-1 frames: only the progress bar reads that
        src = made("mpeg4-avi", "avi", *lavfi("testsrc2=s=64x48:r=24,trim=end_frame=12"), "-c:v", "mpeg4")
        data = bytearray(src.read_bytes())
        avih, strh = data.index(b"avih"), data.index(b"strh")
        data[avih + 24: avih + 28] = (2 ** 31 - 1).to_bytes(4, "little")      # dwTotalFrames
        data[strh + 40: strh + 44] = (2 ** 31 - 1).to_bytes(4, "little")      # dwLength
        (tmp / "huge.avi").write_bytes(bytes(data))
        with av.open(str(tmp / "huge.avi")) as c:
            assert c.streams.video[0].frames == 2 ** 31 - 1
        return tmp / "huge.avi", out(tmp), 12

    def disk_full(tmp, made):          # a 64 KiB tmpfs: ENOSPC part way through the run
        _mount_tmpfs(tmp / "small")
        src = made("long", "mp4", *lavfi("testsrc2=s=160x120:r=24,trim=end_frame=300"), "-c:v", "libx264",
                   "-preset", "ultrafast", "-pix_fmt", "yuv420p")
        return src, tmp / "small" / "out.mp4", "error"

    def read_only_dir(tmp, made):      # root ignores permission bits; a read-only mount stops it
        _mount_tmpfs(tmp / "ro", "ro")
        return _h264(made, "h264-64x48", "64x48", 12), tmp / "ro" / "out.mp4", "error"

    return {name.replace("_", " "): fn for name, fn in locals().items() if callable(fn) and name != "out"}


HOSTILE = _hostile_cases()


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_input(case: str, tmp_path, made, tiny_model) -> None:
    src, dst, expected = HOSTILE[case](tmp_path, made)
    try:
        result = vsrft("enhance", src, dst, "--model", tiny_model, *FAST, timeout=180)
        files_after = sorted(p.name for p in dst.parent.iterdir()) if dst.parent.is_dir() else []
    finally:
        for mount in ("small", "ro"):
            if (tmp_path / mount).is_mount():
                subprocess.run(["umount", str(tmp_path / mount)], check=True)
    if expected == "error":
        assert_one_line_error(result)
        assert not dst.exists() and dst.name not in files_after
        if dst.parent != tmp_path:          # the tmpfs folders: nothing at all left in them
            assert files_after == []
    else:
        assert result.returncode == 0 and result.stderr == "", result.stderr
        assert len(video_info(dst).pts) == expected
    assert [f for f in files_after if ".partial" in f] == []


# ---------------------------------------------------------------- fuzz: mutated real files

_READER = r"""
import sys, traceback
from vsrft.errors import VsrftError
from vsrft.frame import Frame
from vsrft.io.decode import VideoSource
for path in sys.argv[1:]:
    print("START", path, flush=True)
    try:
        with VideoSource(path) as src:
            src.side_data
            n = sum(isinstance(item, Frame) for item in src.read())
        print("OK", n, flush=True)
    except VsrftError as exc:
        print("ERR", exc, flush=True)
    except Exception:
        print("CRASH", traceback.format_exc().replace("\n", " | "), flush=True)
"""


def _mutate(data: bytes, rng: random.Random) -> bytes:
    """Bit flips, a zeroed or random run, or a cut: the damage real files get."""
    out = bytearray(data)
    kind = rng.choice(["flips", "flips", "run", "cut", "cut+flips"])
    if kind in ("flips", "cut+flips"):
        for _ in range(rng.randint(1, 24)):
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
    if kind == "run":
        i, n = rng.randrange(len(out)), rng.randint(8, 512)
        out[i:i + n] = bytes(n) if rng.random() < 0.5 else rng.randbytes(n)
    if kind.startswith("cut"):
        del out[rng.randrange(16, len(out)):]
    return bytes(out)


def _fuzz_seeds(made) -> list[Path]:
    mp4 = made("h264-aac", "mp4", *lavfi("testsrc2=s=64x48:r=24,trim=end_frame=24"),
               *lavfi("sine=frequency=440:sample_rate=48000:duration=1"), "-c:v", "libx264", "-preset",
               "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest")
    mkv = made("ffv1-crc", "mkv", *lavfi("testsrc2=s=64x48:r=24,trim=end_frame=24"), "-c:v", "ffv1",
               "-level", "3", "-slicecrc", "1")
    return [mp4, mkv, hdr_clip(made, "smpte2084")]


def test_fuzz_decoder(made, tmp_path) -> None:
    """300 mutants of three real files (H.264+AAC mp4, FFV1 mkv, 10-bit HEVC HDR10 mkv) through VideoSource
    (the decoder path, side data peek included): each one decodes or raises VsrftError; no other exception,
    no crash of the process, no hang (one child process, 90 s for all; ~6 s here)."""
    rng = random.Random(20261122)
    paths = []
    for seed in _fuzz_seeds(made):
        data = seed.read_bytes()
        for i in range(100):
            p = tmp_path / f"{seed.stem}-{i:03d}{seed.suffix}"
            p.write_bytes(_mutate(data, rng))
            paths.append(p)
    proc = subprocess.run([sys.executable, "-c", _READER, *map(str, paths)], capture_output=True, text=True,
                          env=cli_env(), timeout=90)
    lines = proc.stdout.splitlines()
    last = next((line for line in reversed(lines) if line.startswith("START")), None)
    assert proc.returncode == 0, (proc.returncode, last, proc.stderr[-2000:])
    results = [line for line in lines if not line.startswith("START")]
    assert len(results) == len(paths), (last, proc.stderr[-2000:])
    crashes = [(p.name, r) for p, r in zip(paths, results) if r.startswith("CRASH")]
    assert crashes == []
    outcomes = {r.split()[0] for r in results}
    assert outcomes == {"OK", "ERR"}        # the mutations do break some files and leave others readable


def test_fuzz_enhance(made, tmp_path, tiny_model) -> None:
    """A few mutants through the whole command: exit 0 or 2 only, no traceback, no temporary file left, and
    no output file after an error."""
    rng = random.Random(7)
    seeds = _fuzz_seeds(made)
    for i in range(6):
        seed = seeds[i % len(seeds)]
        src = tmp_path / f"mutant-{i}{seed.suffix}"
        src.write_bytes(_mutate(seed.read_bytes(), rng))
        dst = tmp_path / f"out-{i}.mkv"
        result = vsrft("enhance", src, dst, "--model", tiny_model, *FAST, timeout=120)
        assert result.returncode in (0, 2), (src.name, result.returncode, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        if result.returncode == 2:
            assert_one_line_error(result)
            assert not dst.exists()
        else:
            assert len(video_info(dst).pts) > 0
        assert leftovers(tmp_path) == []
