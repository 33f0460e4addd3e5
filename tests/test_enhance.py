"""`vsrft enhance` end to end: the real console command on real encoded files, read back with PyAV.

Every run uses the tiny random checkpoint (`--model`) and `--no-adapt` so the suite stays quick;
the file handling under test is the same for every model.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import SAMPLE, Run, assert_one_line_error, cli_env, decoded_rgb, enhance_once, leftovers, packets, probe, video_packet_times, vsrft
from vsrft.windows import window_indices

FAST = ("--no-adapt",)


@pytest.fixture(scope="module")
def enhanced(tmp_path_factory, tiny_model):
    """enhanced(src, ext, *args) -> (Run, output path); each distinct run happens once per module."""
    return enhance_once(tmp_path_factory.mktemp("enhanced"), lambda args: ("--model", tiny_model, *FAST, *args))


def ok(run: Run, out: Path) -> None:
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr and "error" not in run.stderr.lower(), run.stderr
    assert out.is_file()
    assert leftovers(out.parent) == []


# ---------------------------------------------------------------- the sample: audio, cuts, colour tags

def test_sample_frames_and_timestamps(enhanced) -> None:
    run, out = enhanced(SAMPLE, "mp4")
    ok(run, out)
    src, dst = probe(SAMPLE), probe(out)
    assert len(src.times) == 144
    assert len(dst.times) == len(src.times)
    assert dst.times == pytest.approx(src.times, abs=1e-9)
    assert (dst.width, dst.height) == (4 * src.width, 4 * src.height) == (704, 576)


def test_sample_audio_is_copied_bit_for_bit(enhanced) -> None:
    run, out = enhanced(SAMPLE, "mp4")
    ok(run, out)
    src, dst = packets(SAMPLE, "audio"), packets(out, "audio")
    assert len(src) == 131
    assert [p for p, _ in dst] == [p for p, _ in src]
    assert [t for _, t in dst] == [t for _, t in src]


def test_sample_colour_tags_kept(enhanced) -> None:
    run, out = enhanced(SAMPLE, "mp4")
    ok(run, out)
    src, dst = probe(SAMPLE), probe(out)
    assert (src.colorspace, src.color_range, src.color_primaries, src.color_trc) == (6, 1, 6, 6)  # smpte170m, tv
    assert (dst.colorspace, dst.color_range, dst.color_primaries, dst.color_trc) == \
           (src.colorspace, src.color_range, src.color_primaries, src.color_trc)


def test_output_is_an_upscale_of_the_input(enhanced) -> None:
    """Downscaled again, the output looks like the input (the network is random, but residual-on-bicubic)."""
    import cv2

    run, out = enhanced(SAMPLE, "mp4")
    ok(run, out)
    src, dst = decoded_rgb(SAMPLE), decoded_rgb(out)
    for i in (0, 30, 100):
        small = cv2.resize(dst[i], (src[i].shape[1], src[i].shape[0]), interpolation=cv2.INTER_AREA)
        other = src[(i + 60) % len(src)]
        err = np.abs(small.astype(np.int16) - src[i]).mean()
        assert err < 12 and err < 0.5 * np.abs(other.astype(np.int16) - src[i]).mean()


# ---------------------------------------------------------------- containers and codecs

CONTAINERS = [
    # clip, output extension, extra arguments
    ("mp4", "mp4", ()),                                  # h264 + aac
    ("mkv", "mkv", ()),                                  # ffv1 + flac + srt subtitles
    ("avi", "avi", ()),                                  # mpeg4 + mp3 (and a dropped-frame gap)
    ("webm", "webm", ("--codec", "libvpx-vp9")),         # vp9 + opus
    ("mov", "mov", ()),                                  # mjpeg (full range) + pcm
]


@pytest.mark.parametrize("name, ext, args", CONTAINERS, ids=[c[0] for c in CONTAINERS])
def test_containers(enhanced, clip, name: str, ext: str, args: tuple[str, ...]) -> None:
    src_path = clip(name)
    run, out = enhanced(src_path, ext, *args)
    ok(run, out)
    src, dst = probe(src_path), probe(out)
    assert (dst.width, dst.height) == (4 * src.width, 4 * src.height)
    assert len(dst.times) == len(src.times) > 10
    if ext == "avi":   # AVI stores no presentation times: its timing is the packets' decode times
        assert video_packet_times(out) == pytest.approx(video_packet_times(src_path), abs=1e-9)
    else:
        assert dst.times == pytest.approx(src.times, abs=1e-9)
    assert dst.stream_types == src.stream_types
    for kind in ("audio", "subtitle"):
        if kind in src.stream_types:
            a, b = packets(src_path, kind), packets(out, kind)
            assert len(a) > 1
            assert b == a, f"{kind} packets differ"


@pytest.mark.parametrize("scale", [2, 3])
def test_scale(enhanced, clip, scale: int) -> None:
    run, out = enhanced(clip("mp4"), "mp4", "--scale", str(scale))
    ok(run, out)
    src, dst = probe(clip("mp4")), probe(out)
    assert (dst.width, dst.height) == (scale * src.width, scale * src.height)
    assert dst.times == pytest.approx(src.times, abs=1e-9)


@pytest.mark.parametrize("scale", [4, 3])
def test_odd_size(enhanced, clip, scale: int) -> None:
    run, out = enhanced(clip("odd"), "mp4", "--scale", str(scale))
    ok(run, out)
    dst = probe(out)
    assert (dst.width, dst.height) == (67 * scale, 41 * scale)    # 201x123 at x3: odd output too
    assert len(dst.times) == 14


def test_vfr_timestamps_kept(enhanced, clip) -> None:
    run, out = enhanced(clip("vfr"), "mp4")
    ok(run, out)
    src, dst = probe(clip("vfr")), probe(out)
    steps = {round(b - a, 3) for a, b in zip(src.times, src.times[1:])}
    assert len(steps) >= 3 and max(steps) > 0.25            # the input really is irregular
    assert dst.times == pytest.approx(src.times, abs=1e-9)


@pytest.mark.parametrize("name", ["bt709", "mov"])
def test_colour_tags_kept(enhanced, clip, name: str) -> None:
    """BT.709 limited range, and full-range BT.601 (MJPEG's yuvj), come out tagged as they came in."""
    run, out = enhanced(clip(name), "mp4")
    ok(run, out)
    src, dst = probe(clip(name)), probe(out)
    assert src.color_range in (1, 2) and src.colorspace not in (0, 2)   # the input is tagged
    assert (dst.colorspace, dst.color_range) == (src.colorspace, src.color_range)
    assert (dst.color_primaries, dst.color_trc) == (src.color_primaries, src.color_trc)


def test_untagged_input_gets_the_assumed_colour_tags(enhanced, clip) -> None:
    """An untagged SD clip is read as BT.601 limited range and the output says so."""
    run, out = enhanced(clip("mp4"), "mp4")
    ok(run, out)
    assert (probe(clip("mp4")).colorspace, probe(clip("mp4")).color_range) == (2, 0)
    assert (probe(out).colorspace, probe(out).color_range) == (6, 1)


# ---------------------------------------------------------------- lossless output and the Python API

def test_ffv1_and_lossless_x264_agree(enhanced, clip) -> None:
    """Two lossless encodings of the same frames decode to the same pixels; the default CRF 18 does not."""
    run_a, ffv1 = enhanced(clip("cut"), "mkv", "--codec", "ffv1")
    run_b, crf0 = enhanced(clip("cut"), "mp4", "--crf", "0")
    run_c, crf18 = enhanced(clip("cut"), "mp4")
    for run, out in ((run_a, ffv1), (run_b, crf0), (run_c, crf18)):
        ok(run, out)
    a, b, c = decoded_rgb(ffv1), decoded_rgb(crf0), decoded_rgb(crf18)
    assert len(a) == len(b) == len(c) == 24
    assert max(np.abs(x.astype(np.int16) - y).max() for x, y in zip(a, b)) <= 1
    assert np.mean([(x == y).mean() for x, y in zip(a, b)]) > 0.999
    assert max(np.abs(x.astype(np.int16) - y).max() for x, y in zip(a, c)) > 8


def test_python_api_equals_cli(enhanced, clip, tiny_model) -> None:
    """Enhancer.process on decoded frames == the CLI's lossless (ffv1, 4:4:4) output, up to YUV rounding."""
    from vsrft import Enhancer

    run, out = enhanced(clip("cut"), "mkv", "--codec", "ffv1", "--pix-fmt", "yuv444p")
    ok(run, out)
    frames = decoded_rgb(clip("cut"))
    enh = Enhancer(model=str(tiny_model), adapt=False)
    api = []
    for hr in enh.process(iter(frames)):       # a generator in, frames out as they are ready
        api.append(hr)
    cli = decoded_rgb(out)
    assert len(api) == len(cli) == len(frames) == 24
    assert enh.stats.cuts == 1
    for i, (x, y) in enumerate(zip(api, cli)):
        assert x.shape == y.shape == (192, 256, 3) and x.dtype == np.uint8
        diff = np.abs(x.astype(np.int16) - y)
        assert diff.max() <= 3 and diff.mean() < 0.6, i
    # in order, each from its own window of its own shot (the cut is at frame 12)
    for i in (0, 1, 5, 11, 12, 13, 22, 23):
        lo, hi = (0, 11) if i < 12 else (12, 23)
        want = enh.network.upscale([frames[j] for j in window_indices(i, lo, hi)])
        assert np.array_equal(api[i], want), i
    assert not np.array_equal(api[11], enh.network.upscale([frames[j] for j in range(9, 14)]))


def test_python_api_kinds(tiny_model, clip) -> None:
    """av.VideoFrame in, av.VideoFrame out (timing kept); vsrft.Frame in, Frame out."""
    import av

    from vsrft import Enhancer, Frame

    enh = Enhancer(model=str(tiny_model), adapt=False, scale=2)
    with av.open(str(clip("vfr"))) as c:
        vfs = list(c.decode(video=0))[:8]
    outs = list(enh.process(vfs))
    assert [type(o) for o in outs] == [av.VideoFrame] * 8
    assert [(o.pts, o.time_base) for o in outs] == [(v.pts, v.time_base) for v in vfs]
    assert (outs[0].width, outs[0].height) == (128, 96)
    frames = [Frame(rgb=v.to_ndarray(format="rgb24"), index=i, pts=v.pts, time_base=v.time_base)
              for i, v in enumerate(vfs)]
    outs = list(enh.process(frames))
    assert [o.index for o in outs] == list(range(8)) and [o.pts for o in outs] == [v.pts for v in vfs]


@pytest.mark.parametrize("bad, message", [
    (np.zeros((48, 64, 3), np.float32), "dtype"),
    (np.zeros((48, 64), np.uint8), "shape"),
    (np.zeros((48, 64, 4), np.uint8), "shape"),
    ("not a frame", "expected"),
])
def test_python_api_rejects_bad_frames(tiny_model, bad, message: str) -> None:
    from vsrft import Enhancer

    enh = Enhancer(model=str(tiny_model), adapt=False, scale=1)
    good = np.zeros((48, 64, 3), np.uint8)
    with pytest.raises(ValueError, match=message):
        list(enh.process([good, good, bad, good]))


def test_python_api_rejects_a_size_change(tiny_model) -> None:
    from vsrft import Enhancer

    enh = Enhancer(model=str(tiny_model), adapt=False, scale=1)
    frames = [np.zeros((48, 64, 3), np.uint8)] * 3 + [np.zeros((50, 64, 3), np.uint8)]
    with pytest.raises(ValueError, match="frame 3 is 64x50"):
        list(enh.process(frames))


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing left

def _truncate(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _bad_cases():
    """name -> (make(tmp, clip) -> (args, output path), extra)"""
    def simple(input_path, out_name="out.mp4", *extra):
        return lambda tmp, clip: ([input_path(tmp, clip), tmp / "outdir" / out_name, *extra], tmp / "outdir" / out_name)

    def under_a_file(tmp, clip):
        f = tmp / "somefile.txt"
        f.write_text("x")
        return [clip("mp4"), f / "out.mp4"], f / "out.mp4"

    def in_proc(tmp, clip):         # root ignores permission bits; /proc refuses new files even for root
        return [clip("mp4"), Path("/proc/vsrft-test-out.mp4")], Path("/proc/vsrft-test-out.mp4")

    def missing_dir(tmp, clip):
        return [clip("mp4"), tmp / "no" / "such" / "dir" / "out.mp4"], tmp / "no" / "such" / "dir" / "out.mp4"

    mp4 = lambda tmp, clip: clip("mp4")
    return {
        "missing input": simple(lambda tmp, clip: tmp / "nope.mp4"),
        "input is a directory": simple(lambda tmp, clip: tmp),
        "output directory missing": missing_dir,
        "output under a file": under_a_file,
        "output not writable": in_proc,
        "unknown codec": simple(mp4, "out.mp4", "--codec", "nosuchcodec"),
        "audio codec": simple(mp4, "out.mp4", "--codec", "aac"),
        "codec the container cannot hold": simple(mp4, "out.webm", "--codec", "libx264"),
        "unknown encoder option": simple(mp4, "out.mp4", "--encoder-opt", "nosuchoption=1"),
        "encoder option without a value": simple(mp4, "out.mp4", "--encoder-opt", "tune"),
        "bitrate and crf": simple(mp4, "out.mp4", "--bitrate", "2M", "--crf", "20"),
        "bad bitrate": simple(mp4, "out.mp4", "--bitrate", "fast"),
        "unknown container": simple(mp4, "out.nosuchext"),
        "encoder rejects the settings": simple(mp4, "out.mp4", "--crf", "-5"),
        "pixel format the encoder lacks": simple(mp4, "out.mp4", "--pix-fmt", "nosuchfmt"),
        "4:2:0 at an odd size": simple(lambda tmp, clip: clip("odd"), "out.mp4", "--scale", "3", "--pix-fmt", "yuv420p"),
        "unsupported scale": simple(mp4, "out.mp4", "--scale", "9"),
        "missing model": simple(mp4, "out.mp4", "--model", "/nonexistent/model.pt"),
    }


BAD = _bad_cases()


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(case: str, tmp_path, clip, tiny_model) -> None:
    (tmp_path / "outdir").mkdir()
    args, out = BAD[case](tmp_path, clip)
    if "--model" not in args:
        args = [*args, "--model", tiny_model]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    run = vsrft("enhance", *args, *FAST)
    assert_one_line_error(run)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == before     # nothing made, not even a .partial
    assert leftovers(out.parent) == [] if out.parent.is_dir() else True


def test_output_same_as_input_is_refused(tmp_path, clip, tiny_model) -> None:
    src = tmp_path / "in.mp4"
    src.write_bytes(clip("mp4").read_bytes())
    run = vsrft("enhance", src, src, "--model", tiny_model, *FAST)
    assert_one_line_error(run)
    assert src.read_bytes() == clip("mp4").read_bytes()
    assert leftovers(tmp_path) == []


def test_truncated_faststart_mp4(tmp_path, clip, tiny_model) -> None:
    """With the index at the front, the demuxer reads the first half of the frames and stops without a word.

    That must be an error, not a short output. It is found while decoding, after the model is
    loaded, so -q keeps the info lines out of the way.
    """
    half = _truncate(clip("faststart"), tmp_path / "half.mp4")
    out = tmp_path / "out.mp4"
    run = vsrft("enhance", half, out, "--model", tiny_model, *FAST, "-q")
    line = assert_one_line_error(run)
    assert "truncated" in line
    assert not out.exists() and leftovers(tmp_path) == []
    loud = vsrft("enhance", half, out, "--model", tiny_model, *FAST)      # without -q: info lines, then the error
    assert loud.returncode == 2 and "Traceback" not in loud.stderr
    assert loud.stderr_lines[-1] == line
    assert sum(line.startswith("vsrft: error:") for line in loud.stderr_lines) == 1
    assert not out.exists() and leftovers(tmp_path) == []


def test_truncated_sample(tmp_path, tiny_model) -> None:
    """The same with the repository's sample (cut inside the video data, after its first shot)."""
    half = tmp_path / "half.mp4"
    half.write_bytes(SAMPLE.read_bytes()[:60_000])
    out = tmp_path / "out.mp4"
    line = assert_one_line_error(vsrft("enhance", half, out, "--model", tiny_model, *FAST, "-q"))
    assert "truncated" in line and not out.exists() and leftovers(tmp_path) == []


def test_existing_output_survives_a_failed_run(tmp_path, clip, tiny_model) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    half = _truncate(clip("faststart"), tmp_path / "half.mp4")
    run = vsrft("enhance", half, out, "--model", tiny_model, *FAST, "-q")
    assert_one_line_error(run)
    assert out.read_bytes() == b"precious"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("args", [
    ["enhance", "in.mp4"],                              # no output
    ["enhance", "in.mp4", "out.mp4", "--scale", "two"],
    ["enhance", "in.mp4", "out.mp4", "--no-such-option"],
    [],
    ["no-such-command"],
])
def test_usage_mistakes_are_one_line(tmp_path, args: list[str]) -> None:
    run = vsrft(*args)
    assert_one_line_error(run)
    assert "--help" in run.stderr_lines[0]


# ---------------------------------------------------------------- output permissions (issue 16)

def _umask_run(mask: int, *args: object) -> Run:
    """The real `vsrft` command started with this umask."""
    proc = subprocess.run([sys.executable, "-m", "vsrft", *map(str, args)], capture_output=True, text=True,
                          env=cli_env(), timeout=300, stdin=subprocess.DEVNULL, preexec_fn=lambda: os.umask(mask))
    return Run(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_output_permissions_follow_the_umask(tmp_path, clip, tiny_model, mask: int, mode: int) -> None:
    """Every output is created as ffmpeg creates its own, 0666 less the umask (not mkstemp's 0600),
    and still appears only when complete."""
    outs = {"enhance": tmp_path / "up.mp4", "degrade": tmp_path / "down.mkv", "compare": tmp_path / "cmp",
            "api": tmp_path / "api.mkv"}
    for run in (_umask_run(mask, "enhance", clip("mp4"), outs["enhance"], "--model", tiny_model, *FAST, "-q"),
                _umask_run(mask, "degrade", clip("mp4"), outs["degrade"]),
                _umask_run(mask, "compare", clip("mp4"), "--out", outs["compare"], "--model", tiny_model, *FAST,
                           "--frames", "2", "-q")):
        assert run.returncode == 0, run.stderr
    from vsrft import enhance

    old = os.umask(mask)
    try:
        enhance(clip("mp4"), outs["api"], model=str(tiny_model), adapt=False)
    finally:
        os.umask(old)
    files = [outs["enhance"], outs["degrade"], outs["api"], *sorted(outs["compare"].iterdir())]
    assert len(files) >= 6
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {f.name: oct(mode) for f in files}
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- encoding options (issue 16)

def _x264_settings(path: Path) -> str:
    """The settings string x264 writes into its stream (an SEI), e.g. "... rc=abr ... bitrate=300 ..."."""
    data = path.read_bytes()
    start = data.index(b"x264 - core")
    return data[start:data.index(b"\x00", start)].decode("ascii", "replace")


def test_codec_follows_the_container(enhanced, clip) -> None:
    """Without --codec, .webm gets VP9 (libx264 cannot go there), .mkv/.mov/.mp4/.avi H.264."""
    import av

    for ext, codec in (("webm", "vp9"), ("mkv", "h264"), ("mov", "h264"), ("avi", "h264")):
        run, out = enhanced(clip("mp4"), ext)
        ok(run, out)
        with av.open(str(out)) as c:
            assert c.streams.video[0].codec_context.name == codec, ext
        assert len(probe(out).times) == len(probe(clip("mp4")).times)


def test_encoder_options_and_bitrate(enhanced, clip) -> None:
    """--encoder-opt reaches the encoder (tune=film, x264-params); --bitrate switches x264 to a target rate."""
    run, out = enhanced(clip("mp4"), "mp4", "--bitrate", "300k", "--encoder-opt", "tune=film",
                        "--encoder-opt", "x264-params=keyint=7")
    ok(run, out)
    settings = _x264_settings(out)
    assert "rc=abr" in settings and "bitrate=300" in settings and " keyint=7" in settings
    assert "psy_rd=1.00:0.15" in settings and "deblock=1:-1:-1" in settings     # what tune=film sets
    run, out = enhanced(clip("mp4"), "mp4")
    ok(run, out)
    settings = _x264_settings(out)
    assert "rc=crf" in settings and "crf=18.0" in settings and " keyint=7" not in settings


def test_encoder_options_in_the_python_api(tmp_path, clip, tiny_model) -> None:
    from vsrft import enhance
    from vsrft.errors import VsrftError

    out = tmp_path / "api.mp4"
    enhance(clip("mp4"), out, model=str(tiny_model), adapt=False, bitrate="200k",
            encoder_options={"x264-params": "keyint=5"})
    settings = _x264_settings(out)
    assert "rc=abr" in settings and "bitrate=200" in settings and " keyint=5" in settings
    with pytest.raises(VsrftError, match="no option 'nosuchoption'"):
        enhance(clip("mp4"), tmp_path / "bad.mp4", model=str(tiny_model), adapt=False,
                encoder_options={"nosuchoption": "1"})
    assert not (tmp_path / "bad.mp4").exists() and leftovers(tmp_path) == []


def test_enhance_help_lists_the_encoding_options() -> None:
    run = vsrft("enhance", "--help")
    assert run.returncode == 0
    for option in ("--codec", "--crf", "--bitrate", "--encoder-opt", "--preset", "--pix-fmt"):
        assert option in run.stdout


# ---------------------------------------------------------------- loud, not silent (issue 16)

def test_unavailable_provider_warns_and_runs_on_the_cpu(tmp_path, clip, tiny_model) -> None:
    import onnxruntime as ort

    missing = next(p for p in ort.get_all_providers() if p not in ort.get_available_providers())
    out = tmp_path / "out.mp4"
    run = vsrft("enhance", clip("mp4"), out, "--model", tiny_model, *FAST, "-q", "--provider", missing)
    assert run.returncode == 0 and out.is_file(), run.stderr
    assert len(run.stderr_lines) == 1, run.stderr
    assert missing in run.stderr_lines[0] and "not available" in run.stderr_lines[0]
    assert "falling back to the CPU" in run.stderr_lines[0]


@pytest.mark.parametrize("name, hint", [("CUDAExecutionProvder", "did you mean CUDAExecutionProvider"),
                                        ("NoSuchProvider", "no such provider")])
def test_unknown_provider_is_an_error(tmp_path, clip, tiny_model, name: str, hint: str) -> None:
    out = tmp_path / "out.mp4"
    line = assert_one_line_error(vsrft("enhance", clip("mp4"), out, "--model", tiny_model, *FAST, "--provider", name))
    assert repr(name) in line and hint in line
    assert not out.exists() and leftovers(tmp_path) == []


def test_eval_without_lpips_weights_names_no_lpips(tmp_path, clip) -> None:
    """Without the weights (here: an `lpips` package that has none shadows any installed one), the
    error says how to install them and that --no-lpips skips LPIPS; with --no-lpips it runs."""
    shadow = tmp_path / "shadow" / "lpips"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join([str(shadow.parent), env["PYTHONPATH"]])
    args = [sys.executable, "-m", "vsrft", "eval", str(clip("mp4")), "--reference", str(clip("mp4"))]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL)
    line = assert_one_line_error(Run(proc.returncode, proc.stdout, proc.stderr))
    assert "--no-lpips" in line and "pip install" in line
    proc = subprocess.run([*args, "--no-lpips"], capture_output=True, text=True, env=env, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0 and "y_psnr" in proc.stdout, proc.stderr


# ---------------------------------------------------------------- Ctrl-C

def test_ctrl_c(tmp_path, clip, tiny_model) -> None:
    src = clip("long")                          # 1500 frames: far longer than it takes to get going
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vsrft", "enhance", str(src), str(out), "--model", str(tiny_model), *FAST, "-q"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
        # a shell that runs us in the background ignores SIGINT, and children inherit that: undo it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # wait until frames are being written (the temporary file has data), then interrupt
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if any(_size(p) > 0 for p in tmp_path.glob(".*partial*")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"finished before it could be interrupted: {proc.communicate()}"
        assert leftovers(tmp_path), "never started writing"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert len(lines) == 1 and lines[0].startswith("vsrft: "), stderr
    assert not out.exists()
    assert leftovers(tmp_path) == []


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:   # the preflight's empty temporary file comes and goes
        return 0


# zero-byte, garbage, truncated, audio-only, mid-file failures, absurd sizes, disk full, read-only
# output: tests/test_production.py::test_hostile_input
