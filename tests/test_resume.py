"""Resumable jobs: kill -9 in the middle, run again, get the same output as an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from helpers import SAMPLE, cli_env, decoded_rgb, probe, random_vsrnet
from vsrft.adapt import AdaptConfig
from vsrft.engine import Enhancer, enhance
from vsrft.io.segments import job_folder


def _video_packets(path: Path) -> list[tuple[int | None, bytes]]:
    with av.open(str(path)) as c:
        return [(p.pts, bytes(p)) for p in c.demux(c.streams.video[0]) if p.size]


def _same_output(a: Path, b: Path) -> None:
    fa, fb = decoded_rgb(a), decoded_rgb(b)
    assert len(fa) == len(fb) == 144
    assert all(np.array_equal(x, y) for x, y in zip(fa, fb))
    assert _video_packets(a) == _video_packets(b)


def test_kill_9_then_resume_gives_the_uninterrupted_output(tiny_model, tmp_path) -> None:
    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "vsrft", "enhance", str(SAMPLE), str(out), "--model", str(tiny_model),
                "--adapt-sync", "--adapt-steps", "30", "--resume", "-q"]

    ref = tmp_path / "ref" / "out.mp4"
    ref.parent.mkdir()
    subprocess.run(command(ref), env=cli_env(), check=True, capture_output=True)
    assert not job_folder(ref).exists()            # removed on success

    out = tmp_path / "out.mp4"
    job = job_folder(out)
    proc = subprocess.Popen(command(out), env=cli_env(), stderr=subprocess.DEVNULL)
    segments: list = []
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            segments = json.loads((job / "manifest.json").read_text())["segments"]
        except (OSError, ValueError, KeyError):
            segments = []
        if segments:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the job finished before it could be killed"
    assert segments and not out.exists()
    assert any(n.startswith("weights") for n in os.listdir(job))   # adaptations kept for the resumption

    again = subprocess.run(command(out), env=cli_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    _same_output(ref, out)
    assert probe(out).stream_types.count("audio") == probe(SAMPLE).stream_types.count("audio") == 1
    assert sorted(os.listdir(tmp_path)) == ["out.mp4", "ref"]      # no job folder, no stale partial file


class _Stop(Exception):
    pass


def test_interrupted_inside_a_shot_continues_at_a_segment_boundary(tiny_model, tmp_path) -> None:
    """Segments of 0.5 s inside shots, an adaptation every second blended in: interrupted at frame
    60 (in the middle of the second shot), resumed, equal to an uninterrupted run."""
    def make() -> Enhancer:
        return Enhancer(model=str(tiny_model), adapt_sync=True, adapt_every=1.0, blend_frames=4,
                        adapt_config=AdaptConfig(steps=2, batch=2, patch=32, min_gain_db=-100))

    opts = {"codec": "libx264", "resume": True, "segment_seconds": 0.5}
    ref = tmp_path / "ref.mkv"
    enhance(SAMPLE, ref, enhancer=make(), **opts)

    out = tmp_path / "out.mkv"

    def stop_at_60(p) -> None:
        if p.frames_done >= 60:
            raise _Stop

    with pytest.raises(_Stop):
        enhance(SAMPLE, out, enhancer=make(), progress=stop_at_60, **opts)
    manifest = json.loads((job_folder(out) / "manifest.json").read_text())
    done = sum(s["frames"] for s in manifest["segments"])
    assert len(manifest["segments"]) >= 3 and 27 < done <= 60          # boundaries inside shots, not only at cuts
    resumed = make()
    enhance(SAMPLE, out, enhancer=resumed, **opts)
    assert resumed.stats.frames == 144
    _same_output(ref, out)
    assert not job_folder(out).exists()


def test_other_settings_start_the_job_over(tiny_model, tmp_path) -> None:
    out = tmp_path / "out.mkv"
    job = job_folder(out)
    job.mkdir()
    (job / "manifest.json").write_text(json.dumps({"version": 1, "fingerprint": {"other": 1}, "segments":
                                                   [{"first": 0, "frames": 100, "packets": 100, "file": "x"}],
                                                   "adaptations": {}}))
    enh = Enhancer(model=str(tiny_model), adapt=False)
    enhance(SAMPLE, out, enhancer=enh, codec="ffv1", resume=True)
    assert len(decoded_rgb(out)) == 144 and not job.exists()


def _interrupted_job(tiny_model: Path, out: Path, **options) -> None:
    """A resumable job of SAMPLE stopped after 60 frames, with segments on disk."""
    def stop_at_60(p) -> None:
        if p.frames_done >= 60:
            raise _Stop

    with pytest.raises(_Stop):
        enhance(SAMPLE, out, enhancer=Enhancer(model=str(tiny_model), **options), progress=stop_at_60,
                codec="ffv1", pix_fmt="bgr0", resume=True, segment_seconds=0.5)
    assert json.loads((job_folder(out) / "manifest.json").read_text())["segments"]


def test_toggling_the_input_deblur_starts_the_job_over(tiny_model, tmp_path) -> None:
    """The resume bug: the job's fingerprint left out the input deblur, so a job interrupted with it and
    resumed without it (same --blur) joined frames made two ways. Control: the same settings resume."""
    same, other = tmp_path / "same.mkv", tmp_path / "other.mkv"
    for out in (same, other):
        _interrupted_job(tiny_model, out, adapt=False, blur=1.0)
    resumed = Enhancer(model=str(tiny_model), adapt=False, blur=1.0)
    enhance(SAMPLE, same, enhancer=resumed, codec="ffv1", pix_fmt="bgr0", resume=True, segment_seconds=0.5)
    assert resumed.skip_before > 0                                      # continued where it stopped
    fresh = Enhancer(model=str(tiny_model), adapt=False, blur=1.0, input_deblur=False)
    enhance(SAMPLE, other, enhancer=fresh, codec="ffv1", pix_fmt="bgr0", resume=True, segment_seconds=0.5)
    assert fresh.skip_before == 0 and not job_folder(other).exists()    # started over
    want = list(Enhancer(model=str(tiny_model), adapt=False, blur=1.0, input_deblur=False).process(decoded_rgb(SAMPLE)))
    got = decoded_rgb(other)
    assert len(got) == 144 and all(np.array_equal(a, b) for a, b in zip(got, want))


_BASE = {"adapt": True, "blur": 1.0, "adapt_config": {"steps": 2}}


@pytest.mark.parametrize("change", [
    {"input_deblur": False}, {"blur": 0.5}, {"kernel": "box"}, {"project": True}, {"adapt": False},
    {"adapt_config": {"steps": 3}}, {"adapt_config": {"steps": 2, "lr": 1e-4}},
    {"adapt_config": {"steps": 2, "neighbours": False}}, {"adapt_config": {"steps": 2, "max_flicker_ratio": None}},
    {"adapt_every": 2.0}, {"warm_start": True}, {"blend_frames": 4}, {"adapt_sync": True}, {"scale": 2},
    {"model": "other"}], ids=lambda c: ",".join(c))
def test_every_setting_that_changes_frames_is_in_the_fingerprint(tiny_model, tmp_path, change) -> None:
    """`Enhancer.settings()` (the resume fingerprint, the report's and the saved models' settings)
    changes with every option that changes the output frames."""
    change = dict(change)
    if change.get("kernel") == "box":
        np.save(tmp_path / "box.npy", np.full((5, 5), 1 / 25, np.float32))
        change["kernel"] = str(tmp_path / "box.npy")
    if change.get("model") == "other":           # the same name and architecture, other weights
        from vsrft.models import checkpoint

        model = random_vsrnet(seed=1)
        (tmp_path / "other").mkdir()
        checkpoint.save(tmp_path / "other" / Path(tiny_model).name, model, model.config, {"description": "other"})
        change["model"] = str(tmp_path / "other" / Path(tiny_model).name)
    base = Enhancer(model=str(tiny_model), **_BASE).settings()
    assert Enhancer(model=str(tiny_model), **_BASE).settings() == base
    assert Enhancer(**{"model": str(tiny_model), **_BASE, **change}).settings() != base


@pytest.fixture(scope="module")
def flash_clip(tmp_path_factory) -> Path:
    """1 s of one shot, one white frame (a flash: a 1-frame shot), 1 s of another shot (25 fps)."""
    from helpers import ffmpeg

    path = tmp_path_factory.mktemp("flash") / "flash.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48:r=25,trim=end_frame=25,setpts=PTS-STARTPTS",
           "-f", "lavfi", "-i", "color=white:s=64x48:r=25,trim=end_frame=1,setpts=PTS-STARTPTS",
           "-f", "lavfi", "-i", "mandelbrot=s=64x48:r=25,trim=end_frame=25,setpts=PTS-STARTPTS",
           "-filter_complex", "[0:v][1:v][2:v]concat=n=3:v=1:a=0,format=yuv420p[v]", "-map", "[v]",
           "-c:v", "libx264", "-preset", "veryfast", path)
    return path


@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_resume_with_a_one_frame_shot(tiny_model, tmp_path, flash_clip, codec) -> None:
    """Issue 18 case 1: a 1-frame segment (the flash) got dts = pts from its own encoder, the next
    segment's B-frame encoder started its dts before it, and the muxer refused the file ("Invalid
    argument") on every run. Now: it runs, keeps the pts, and an interrupted job resumed after the
    flash gives the same packets as the uninterrupted one."""
    opts = {"codec": codec, "resume": True}
    ref = tmp_path / "ref.mp4"
    enhance(flash_clip, ref, enhancer=Enhancer(model=str(tiny_model), adapt=False), **opts)
    with av.open(str(flash_clip)) as c:
        source_pts = sorted(f.pts for f in c.decode(video=0))
    with av.open(str(ref)) as c:
        assert sorted(f.pts for f in c.decode(video=0)) == source_pts and len(source_pts) == 51
    with av.open(str(ref)) as c:
        dts = [p.dts for p in c.demux(video=0) if p.size]
    assert dts == sorted(set(dts))                                       # strictly rising

    out = tmp_path / "out.mp4"

    def stop_at_30(p) -> None:
        if p.frames_done >= 30:
            raise _Stop

    with pytest.raises(_Stop):
        enhance(flash_clip, out, enhancer=Enhancer(model=str(tiny_model), adapt=False), progress=stop_at_30, **opts)
    segments = json.loads((job_folder(out) / "manifest.json").read_text())["segments"]
    assert [s["frames"] for s in segments] == [25, 1]                   # the flash is a segment of its own
    enhance(flash_clip, out, enhancer=Enhancer(model=str(tiny_model), adapt=False), **opts)
    assert _video_packets(out) == _video_packets(ref)
    assert not job_folder(out).exists()
