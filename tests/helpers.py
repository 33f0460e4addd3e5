"""Helpers for the tests: running the real CLI, making clips with the real ffmpeg binary, reading files back."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "concert.mp4"

# ---------------------------------------------------------------- models


def random_vsrnet(channels: int = 8, blocks: int = 1, seed: int = 0, noise: float = 0.05):
    """A VSRNet whose weights carry small random noise, so its output is not plain bicubic."""
    import torch

    from vsrft.models.vsrnet import VSRNet

    torch.manual_seed(seed)
    model = VSRNet(channels=channels, blocks=blocks)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * noise)
    return model.eval()


# ---------------------------------------------------------------- running the CLI

@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("PYTHONWARNINGS", None)
    return env


def vsrft(*args: object, timeout: float = 300) -> Run:
    """Run the real `vsrft` console command (`python -m vsrft ...`) and capture its output."""
    proc = subprocess.run([sys.executable, "-m", "vsrft", *map(str, args)], capture_output=True, text=True,
                          env=cli_env(), timeout=timeout, stdin=subprocess.DEVNULL)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def enhance_once(folder: Path, arguments: Callable[[tuple[str, ...]], tuple[object, ...]]
                 ) -> Callable[..., tuple[Run, Path]]:
    """run(src, ext, *args) -> (Run, output path): `vsrft enhance src out *arguments(args)`, run once
    per distinct call (module fixtures share one encode between the tests that read it)."""
    done: dict[tuple, tuple[Run, Path]] = {}

    def run(src: Path, ext: str, *args: str) -> tuple[Run, Path]:
        key = (str(src), ext, args)
        if key not in done:
            out = folder / f"{len(done)}-{Path(src).stem}.{ext}"
            done[key] = (vsrft("enhance", src, out, *arguments(args)), out)
        return done[key]

    return run


# ---------------------------------------------------------------- clips

def ffmpeg(*args: object) -> None:
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({' '.join(cmd)}):\n{proc.stderr}")


SRT = """1
00:00:00,000 --> 00:00:00,400
first line

2
00:00:00,500 --> 00:00:00,900
second line
"""

# VFR timestamps: 24 fps with jitter and a 0.25 s pause after frame 10 (all distinct, increasing).
VFR_EXPR = "'(N/24 + 0.01*mod(N,3) + 0.25*gte(N,10))/TB'"


def _clip_recipes(d: Path) -> dict[str, tuple[str, list[object]]]:
    tsrc = lambda s="64x48", r=24, frames=24: ["-f", "lavfi", "-i", f"testsrc2=s={s}:r={r},trim=end_frame={frames}"]
    sine = lambda d=1.0: ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={d}"]
    srt = d / "subs.srt"
    srt.write_text(SRT)
    return {
        # container/codec matrix
        "mp4": ("mp4", [*tsrc(), *sine(), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "veryfast",
                        "-c:a", "aac", "-b:a", "64k", "-shortest"]),
        "mkv": ("mkv", [*tsrc(frames=20), *sine(20 / 24), "-i", srt, "-map", "0:v", "-map", "1:a", "-map", "2:s",
                        "-c:v", "ffv1", "-c:a", "flac", "-c:s", "srt"]),
        "avi": ("avi", [*tsrc(frames=18), *sine(), "-c:v", "mpeg4", "-q:v", "3", "-c:a", "libmp3lame", "-shortest"]),
        "webm": ("webm", [*tsrc(frames=12), *sine(0.5), "-c:v", "libvpx-vp9", "-deadline", "realtime",
                          "-cpu-used", "8", "-b:v", "200k", "-c:a", "libopus", "-shortest"]),
        "mov": ("mov", [*tsrc(frames=16), *sine(), "-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj422p",
                        "-c:a", "pcm_s16le", "-shortest"]),
        # the index (moov) at the front, as the sample and most web video: a cut-off copy still opens
        "faststart": ("mp4", [*tsrc(frames=48), *sine(2), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "veryfast",
                              "-c:a", "aac", "-shortest", "-movflags", "+faststart"]),
        # an odd frame size, 4:4:4 so the source itself needs no even dimensions
        "odd": ("mp4", [*tsrc(frames=14), "-vf", "scale=67:41,format=yuv444p", "-c:v", "libx264", "-preset", "veryfast"]),
        # a BT.709 tagged clip (most clips are untagged)
        "bt709": ("mp4", [*tsrc(frames=12), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "veryfast",
                          "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
                          "-color_range", "tv"]),
        # two unrelated shots: 12 frames of testsrc2, then 12 of a Mandelbrot zoom
        "cut": ("mp4", ["-f", "lavfi", "-i", "testsrc2=s=64x48:r=24,trim=end_frame=12,setpts=PTS-STARTPTS",
                        "-f", "lavfi", "-i", "mandelbrot=s=64x48:r=24,trim=end_frame=12,setpts=PTS-STARTPTS",
                        "-filter_complex", "[0:v][1:v]concat=n=2:v=1:a=0,format=yuv420p[v]", "-map", "[v]",
                        "-c:v", "libx264", "-preset", "veryfast"]),
        # a fast camera pan over one big picture: one shot, no cut anywhere
        "pan": ("mp4", ["-f", "lavfi", "-i", "mandelbrot=s=480x240:r=24,trim=end_frame=1,loop=loop=29:size=1",
                        "-vf", "crop=96:72:x=n*8:y=40+n*2,setpts=N/24/TB", "-c:v", "libx264", "-preset", "veryfast",
                        "-pix_fmt", "yuv420p", "-g", "4"]),
        # irregular timestamps in an mp4 (passthrough keeps them)
        "vfr": ("mp4", [*tsrc(frames=20), "-vf", f"settb=1/1000,setpts={VFR_EXPR}",
                        "-fps_mode", "passthrough", "-enc_time_base", "1/1000",
                        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                        "-video_track_timescale", "1000"]),
        # no video at all
        "audio_only": ("m4a", [*sine(), "-c:a", "aac"]),
        # long enough to be interrupted mid-run
        "long": ("mp4", [*tsrc("160x120", frames=1500), "-c:v", "libx264", "-preset", "ultrafast",
                         "-pix_fmt", "yuv420p"]),
    }


# ---------------------------------------------------------------- reading files back

@dataclass
class Probe:
    width: int
    height: int
    times: list[float]          # presentation time of each video frame in seconds, sorted
    colorspace: int
    color_range: int
    color_primaries: int
    color_trc: int
    stream_types: list[str]


def probe(path: Path) -> Probe:
    """Decode every video frame of `path` with PyAV; frame times sorted into presentation order."""
    import av

    from vsrft.io.decode import side_data_by_name

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        cc = s.codec_context
        times = []
        for f in c.decode(s):
            times.append(float(f.pts * f.time_base))
        return Probe(cc.width, cc.height, sorted(times), int(cc.colorspace or 2), int(cc.color_range or 0),
                     int(cc.color_primaries or 2), int(cc.color_trc or 2), [st.type for st in c.streams])


def packets(path: Path, kind: str) -> list[tuple[bytes, float | None]]:
    """(payload, pts seconds) of every packet of the first stream of `kind` ("audio", "subtitle")."""
    import av

    with av.open(str(path)) as c:
        s = next(st for st in c.streams if st.type == kind)
        out = []
        for p in c.demux(s):
            if p.size:
                out.append((bytes(p), None if p.pts is None else float(p.pts * p.time_base)))
        return out


def decoded_rgb(path: Path) -> list[np.ndarray]:
    """Every video frame as RGB, converted the way vsrft's decoder does (colour-accurate)."""
    from vsrft.frame import Frame
    from vsrft.io.decode import VideoSource

    with VideoSource(path) as src:
        return [item.rgb for item in src.read() if isinstance(item, Frame)]


def leftovers(directory: Path) -> list[str]:
    """Temporary files a failed or interrupted run might leave behind (vsrft's are hidden .partial files)."""
    return sorted(p.name for p in directory.iterdir() if ".partial" in p.name)


def frame_rate(path: Path) -> Fraction | None:
    import av

    with av.open(str(path)) as c:
        return c.streams.video[0].average_rate


def video_packet_times(path: Path) -> list[float]:
    """Decode timestamps (seconds) of the video packets as stored, in file order.

    For AVI, which stores no presentation times, these are the container's timing.
    """
    import av

    from vsrft.io.decode import side_data_by_name

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [float(p.dts * p.time_base) for p in c.demux(s) if p.size and p.dts is not None]


# ---------------------------------------------------------------- production checks (tests/test_production.py)

def assert_one_line_error(run: Run) -> str:
    """Exit code 2, no traceback, exactly one `vsrft: error: ...` line on stderr; returns the line."""
    assert run.returncode == 2, (run.returncode, run.stderr)
    assert "Traceback" not in run.stderr, run.stderr
    assert len(run.stderr_lines) == 1, run.stderr
    line = run.stderr_lines[0]
    assert line.startswith("vsrft: error: ") and len(line) > len("vsrft: error: ") + 10
    return line


@dataclass
class VideoInfo:
    pix_fmt: str
    width: int
    height: int
    tags: tuple[int, int, int, int]     # colorspace, color_range, color_primaries, color_trc
    time_base: Fraction
    pts: list[int]                      # presentation timestamps of the video frames, sorted
    durations: list[int]                # frame durations (time_base units), in presentation order
    duration_s: float | None            # the container's duration
    rotation: float                     # of the first frame (its display matrix)
    side_data: dict[str, bytes]         # of the first frame, by type name (SEI_UNREGISTERED left out)
    stream_types: list[str]


def video_info(path: Path) -> VideoInfo:
    """Decode every video frame of `path` with PyAV and collect what a production check compares."""
    import av

    from vsrft.io.decode import side_data_by_name

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        cc = s.codec_context
        frames = [(f.pts, f.duration, f) if i == 0 else (f.pts, f.duration, None) for i, f in enumerate(c.decode(s))]
        first = frames[0][2]
        side = {k: v for k, v in side_data_by_name(first).items() if k != "SEI_UNREGISTERED"}
        order = sorted(range(len(frames)), key=lambda i: frames[i][0])
        return VideoInfo(cc.pix_fmt, cc.width, cc.height,
                         (int(cc.colorspace or 2), int(cc.color_range or 0), int(cc.color_primaries or 2),
                          int(cc.color_trc or 2)),
                         s.time_base, [frames[i][0] for i in order], [frames[i][1] for i in order],
                         None if c.duration is None else c.duration / av.time_base, float(first.rotation),
                         side, [st.type for st in c.streams])


def yuv_planes(path: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The Y, U, V planes of every video frame as stored (uint8 or uint16 codes), in decode order."""
    import av

    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            dtype = np.uint16 if f.format.components[0].bits > 8 else np.uint8
            planes = []
            for p in f.planes[:3]:
                a = np.frombuffer(p, dtype).reshape(p.height, p.line_size // dtype().itemsize)
                planes.append(a[:, :p.width].copy())
            out.append(tuple(planes))
    return out
