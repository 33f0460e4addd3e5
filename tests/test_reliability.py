"""Reliability, second pass (issue 18): outputs that are not regular files, signals, reused
Enhancers, one-line errors, stream metadata. Real files made with ffmpeg, a real FIFO, real
signals to a real `vsrft` process; no mocks."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from helpers import assert_one_line_error, cli_env, decoded_rgb, ffmpeg, leftovers, vsrft

FAST = ("--no-adapt", "-q")


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory) -> Path:
    """12 frames of 64x48 H.264 at 24 fps."""
    path = tmp_path_factory.mktemp("reliability") / "short.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48:r=24,trim=end_frame=12", "-c:v", "libx264", "-preset", "veryfast",
           "-pix_fmt", "yuv420p", path)
    return path


# ---------------------------------------------------------------- case 2: outputs that are not regular files

def _read_fifo(fifo: Path, into: list[bytes]) -> threading.Thread:
    def read() -> None:
        with open(fifo, "rb") as f:
            into.append(f.read())

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_fifo_output_is_written_to_not_replaced(tmp_path, short_clip, tiny_model, ext) -> None:
    """A FIFO stays a FIFO and its reader gets the whole video (MP4 as fragmented MP4, which needs no seeking)."""
    fifo = tmp_path / f"out.{ext}"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = _read_fifo(fifo, got)
    run = vsrft("enhance", short_clip, fifo, "--model", tiny_model, *FAST)
    reader.join(timeout=60)
    assert run.returncode == 0, run.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    (tmp_path / f"got.{ext}").write_bytes(got[0])
    assert len(decoded_rgb(tmp_path / f"got.{ext}")) == 12
    assert leftovers(tmp_path) == []


def test_device_output_is_written_to_not_replaced(tmp_path, short_clip, tiny_model) -> None:
    """`vsrft enhance x.mp4 /dev/null` as root replaced the system's /dev/null with a regular file.
    Here on a private null device node (mknod 1,3), so that a failure cannot break the machine."""
    null = tmp_path / "null"
    try:
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        with open(null, "wb") as f:
            f.write(b"x")
    except OSError as exc:
        pytest.skip(f"cannot make or use a device node here: {exc}")
    run = vsrft("enhance", short_clip, null, "--model", tiny_model, *FAST)
    assert run.returncode == 0, run.stderr
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    assert leftovers(tmp_path) == []


def test_symlink_output_writes_its_target(tmp_path, short_clip, tiny_model) -> None:
    """The link stays a link; its target (in another folder) gets the video, with 0666 less the umask."""
    (tmp_path / "store").mkdir()
    target = tmp_path / "store" / "real.mp4"
    target.write_bytes(b"old")
    link = tmp_path / "link.mp4"
    link.symlink_to(target)
    proc = subprocess.run([sys.executable, "-m", "vsrft", "enhance", str(short_clip), str(link), "--model",
                           str(tiny_model), *FAST], capture_output=True, text=True, env=cli_env(), timeout=300,
                          preexec_fn=lambda: os.umask(0o027))
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert len(decoded_rgb(target)) == 12
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert leftovers(tmp_path) == [] and leftovers(target.parent) == []


def test_resume_into_a_fifo_is_refused_in_one_line(tmp_path, short_clip, tiny_model) -> None:
    fifo = tmp_path / "out.mkv"
    os.mkfifo(fifo)
    line = assert_one_line_error(vsrft("enhance", short_clip, fifo, "--model", tiny_model, "--resume", *FAST))
    assert "--resume" in line and stat.S_ISFIFO(os.lstat(fifo).st_mode)


# ---------------------------------------------------------------- case 4: a reused Enhancer

def _adapting(tiny_model: Path):
    from vsrft.engine import Enhancer

    return Enhancer(model=str(tiny_model), adapt=True, adapt_sync=True,
                    adapt_config={"steps": 2, "batch": 2, "patch": 32, "min_gain_db": -100})


def test_reused_enhancer_starts_a_new_stream(tiny_model, short_clip) -> None:
    """One frame taken from process(), the generator dropped, a 12-frame video processed: 19 outputs
    came for 12 inputs (the first video's frames leaked in). Now 12, equal to a fresh Enhancer's."""
    from helpers import SAMPLE

    first, second = decoded_rgb(SAMPLE)[:30], decoded_rgb(short_clip)
    want = list(_adapting(tiny_model).process(second))
    enh = _adapting(tiny_model)
    gen = enh.process(first)
    next(gen)
    del gen
    got = list(enh.process(second))
    assert len(got) == 12 and all(np.array_equal(a, b) for a, b in zip(got, want))
    assert enh.stats.frames == 12 and len(enh.reports) == 1
    again = list(enh.process(second))                 # and after a finished stream
    assert all(np.array_equal(a, b) for a, b in zip(again, want))


def test_second_stream_while_one_is_active_raises(tiny_model, short_clip) -> None:
    from vsrft.engine import Enhancer

    enh = Enhancer(model=str(tiny_model), adapt=False)
    frames = decoded_rgb(short_clip)
    active = enh.process(frames)
    next(active)
    with pytest.raises(RuntimeError, match="already processing"):
        next(enh.process(frames))
    assert len([next(active), *active]) == 11         # the active stream is unharmed
    assert len(list(enh.process(frames))) == 12


def test_video_frames_without_a_time_base(tiny_model, short_clip) -> None:
    """av.VideoFrame.from_ndarray frames have no time base: engine._like failed setting None."""
    from vsrft.engine import Enhancer

    frames = decoded_rgb(short_clip)
    vfs = [av.VideoFrame.from_ndarray(f, format="rgb24") for f in frames]
    outs = list(Enhancer(model=str(tiny_model), adapt=False).process(vfs))
    want = list(Enhancer(model=str(tiny_model), adapt=False).process(frames))
    assert all(isinstance(o, av.VideoFrame) and o.time_base is None for o in outs)
    assert all(np.array_equal(o.to_ndarray(format="rgb24"), w) for o, w in zip(outs, want))


# ---------------------------------------------------------------- case 3: SIGTERM and SIGHUP

def _slow_run(out: Path, tiny_model: Path, *extra: str) -> subprocess.Popen:
    from helpers import SAMPLE

    return subprocess.Popen([sys.executable, "-m", "vsrft", "enhance", str(SAMPLE), str(out), "--model", str(tiny_model),
                             "--adapt-sync", "--adapt-steps", "30", "-q", *extra], env=cli_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, proc: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while proc.poll() is None and time.monotonic() < deadline and not condition():
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be stopped"


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_cleanly(tmp_path, tiny_model, sig, code) -> None:
    """What systemd, docker and `timeout` send killed the run on the spot and left its hidden partial
    file behind for good. Now: a clean stop, 128 + the signal, nothing left; and a stale partial
    file of this output (an earlier run's, killed with -9) is removed by the next run."""
    out = tmp_path / "out.mp4"
    stale, other = tmp_path / ".out.0123abcd.partial.mp4", tmp_path / ".other.0123abcd.partial.mp4"
    stale.write_bytes(b"left by kill -9")
    other.write_bytes(b"another output's")
    proc = _slow_run(out, tiny_model, "--adapt-steps", "100000")     # still adapting when the signal comes
    _wait_for(lambda: not stale.exists() and leftovers(tmp_path) != [other.name], proc)
    time.sleep(0.5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err and f"stopped by {signal.Signals(sig).name}" in err
    assert leftovers(tmp_path) == [other.name] and not out.exists()


def test_sigterm_keeps_a_resumable_job(tmp_path, tiny_model) -> None:
    from vsrft.io.segments import job_folder

    out = tmp_path / "out.mp4"
    job = job_folder(out)
    proc = _slow_run(out, tiny_model, "--resume", "--adapt-every", "0.5")   # long after its first segment
    def segments() -> list:
        try:
            return json.loads((job / "manifest.json").read_text())["segments"]
        except (OSError, ValueError, KeyError):
            return []

    _wait_for(segments, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert job.is_dir() and leftovers(tmp_path) == [] and not out.exists()
    proc = _slow_run(out, tiny_model, "--resume", "--adapt-every", "0.5")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert len(decoded_rgb(out)) == 144 and not job.exists() and leftovers(tmp_path) == []


# ---------------------------------------------------------------- case 5: one line and exit 2, not a traceback

def test_mov_text_subtitles_into_mkv(tmp_path, tiny_model) -> None:
    """A mov_text subtitle (MP4's) into .mkv, the container the README recommends: ValueError traceback.
    Now the video is written and the stream Matroska cannot hold is dropped with a warning."""
    from helpers import SRT

    (tmp_path / "s.srt").write_text(SRT)
    src = tmp_path / "subs.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48:r=24,trim=end_frame=12", "-i", tmp_path / "s.srt",
           "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:s", "mov_text", src)
    out = tmp_path / "out.mkv"
    run = vsrft("enhance", src, out, "--model", tiny_model, "--no-adapt")
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert "mov_text" in run.stderr and len(decoded_rgb(out)) == 12


def test_second_resume_run_on_one_output_is_refused(tmp_path, short_clip, tiny_model) -> None:
    """Two concurrent --resume runs on one output: no lock, the first died in os.replace. The job
    folder's lock is held here as a running job holds it; the second run says so in one line."""
    import fcntl

    from vsrft.io.segments import job_folder

    out = tmp_path / "out.mp4"
    job_folder(out).mkdir()
    with open(job_folder(out) / "lock", "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        line = assert_one_line_error(vsrft("enhance", short_clip, out, "--model", tiny_model, "--resume", *FAST))
    assert "another vsrft run" in line and not out.exists() and leftovers(tmp_path) == []
    run = vsrft("enhance", short_clip, out, "--model", tiny_model, "--resume", *FAST)   # lock released: it runs
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("option, path", [("--report", "missing/r.json"), ("--report", "."),
                                          ("--save-adapted", "short.mp4")])
def test_bad_report_and_save_adapted_paths_fail_before_the_work(tmp_path, short_clip, tiny_model, option, path) -> None:
    (tmp_path / "short.mp4").write_bytes(b"a file, not a folder")
    out = tmp_path / "out.mp4"
    run = subprocess.run([sys.executable, "-m", "vsrft", "enhance", str(short_clip), str(out), "--model",
                          str(tiny_model), option, path, *FAST], capture_output=True, text=True, env=cli_env(),
                         cwd=tmp_path, timeout=300)
    from helpers import Run

    line = assert_one_line_error(Run(run.returncode, run.stdout, run.stderr))
    assert option in line and not out.exists()               # nothing was upscaled


def test_disk_full_during_resume(tmp_path, tiny_model) -> None:
    """ENSOSPC while --resume keeps its segments: `OSError: [Errno 28]` traceback from segments.py."""
    from helpers import SAMPLE

    small = tmp_path / "small"
    small.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(small)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {res.stderr.strip()}")
    try:
        run = vsrft("enhance", SAMPLE, small / "out.mkv", "--model", tiny_model, "--resume", "--codec", "ffv1", *FAST)
    finally:
        subprocess.run(["umount", str(small)], check=True)
    line = assert_one_line_error(run)
    assert "No space left on device" in line


def test_pipe_into_dev_full(tmp_path, tiny_model) -> None:
    from helpers import SAMPLE

    y4m = subprocess.run(["ffmpeg", "-v", "error", "-i", str(SAMPLE), "-frames:v", "4", "-f", "yuv4mpegpipe", "-"],
                         capture_output=True, check=True).stdout
    with open("/dev/full", "wb") as full:
        proc = subprocess.run([sys.executable, "-m", "vsrft", "pipe", "--model", str(tiny_model), *FAST], input=y4m,
                              stdout=full, stderr=subprocess.PIPE, env=cli_env(), timeout=300)
    from helpers import Run

    line = assert_one_line_error(Run(proc.returncode, "", proc.stderr.decode()))
    assert "No space left on device" in line


# ---------------------------------------------------------------- case 6: stream metadata

def test_languages_titles_and_dispositions_are_kept(tmp_path, tiny_model) -> None:
    from helpers import SRT

    (tmp_path / "s.srt").write_text(SRT)
    src = tmp_path / "meta.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48:r=24,trim=end_frame=12", "-f", "lavfi", "-i", "sine=d=0.5",
           "-f", "lavfi", "-i", "sine=d=0.5:f=880", "-i", tmp_path / "s.srt", "-map", "0:v", "-map", "1:a", "-map", "2:a",
           "-map", "3:s", "-c:v", "libx264", "-c:a", "aac", "-c:s", "srt", "-metadata", "title=My Film",
           "-metadata:s:v:0", "language=fra", "-metadata:s:v:0", "title=Main picture",
           "-metadata:s:a:0", "language=eng", "-metadata:s:a:0", "title=Stereo",
           "-metadata:s:a:1", "language=ger", "-metadata:s:a:1", "title=Kommentar", "-metadata:s:s:0", "language=spa",
           "-disposition:a:0", "0", "-disposition:a:1", "default", "-disposition:s:0", "forced", src)
    out = tmp_path / "out.mkv"
    run = vsrft("enhance", src, out, "--model", tiny_model, *FAST)
    assert run.returncode == 0, run.stderr

    def tags(path: Path) -> tuple:
        with av.open(str(path)) as c:
            return (c.metadata.get("title"),
                    [(s.type, s.metadata.get("language"), s.metadata.get("title"), int(s.disposition))
                     for s in c.streams])

    assert tags(out) == tags(src)
    assert tags(out)[0] == "My Film" and tags(out)[1][2] == ("audio", "ger", "Kommentar", 1)


# ---------------------------------------------------------------- case 7 (part): long names

def test_output_name_of_250_bytes(tmp_path, short_clip, tiny_model) -> None:
    """The temporary name added ~20 bytes to the output's: names over ~234 bytes failed."""
    out = tmp_path / ("n" * 246 + ".mp4")
    run = vsrft("enhance", short_clip, out, "--model", tiny_model, *FAST)
    assert run.returncode == 0, run.stderr
    assert len(decoded_rgb(out)) == 12 and leftovers(tmp_path) == []
