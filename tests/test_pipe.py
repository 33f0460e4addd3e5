"""`vsrft pipe` between two real ffmpeg processes."""
from __future__ import annotations

import subprocess
import sys

import numpy as np

from helpers import SAMPLE, cli_env, decoded_rgb, packets, probe, vsrft


def _pipe(src, dst, *vsrft_args, out_args=("-c:v", "ffv1")):
    dec = subprocess.Popen(["ffmpeg", "-nostdin", "-v", "error", "-i", str(src), "-f", "yuv4mpegpipe", "-"],
                           stdout=subprocess.PIPE)
    filt = subprocess.Popen([sys.executable, "-m", "vsrft", "pipe", *map(str, vsrft_args)], stdin=dec.stdout,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
    dec.stdout.close()
    enc = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", "-", "-i", str(src), "-map", "0:v",
                          "-map", "1:a?", "-c:a", "copy", *out_args, str(dst)], stdin=filt.stdout,
                         capture_output=True)
    filt.stdout.close()
    err = filt.stderr.read().decode()
    assert filt.wait() == 0, err
    assert dec.wait() == 0
    assert enc.returncode == 0, enc.stderr
    return err


def test_pipe_equals_enhance_and_keeps_audio(tiny_model, tmp_path) -> None:
    piped = tmp_path / "piped.mkv"
    _pipe(SAMPLE, piped, "--model", tiny_model, "--no-adapt", "-q")
    direct = tmp_path / "direct.mkv"
    run = vsrft("enhance", SAMPLE, direct, "--model", tiny_model, "--no-adapt", "--codec", "ffv1", "-q")
    assert run.returncode == 0, run.stderr
    a, b = decoded_rgb(piped), decoded_rgb(direct)
    assert len(a) == len(b) == len(probe(SAMPLE).times)
    assert a[0].shape == (576, 704, 3)
    diff = max(int(np.abs(x.astype(int) - y).max()) for x, y in zip(a, b))
    assert diff <= 1
    assert [p for p, _ in packets(piped, "audio")] == [p for p, _ in packets(SAMPLE, "audio")]


def test_readme_pipe_command_as_written(tiny_model, tmp_path) -> None:
    out = tmp_path / "out.mp4"
    err = _pipe(SAMPLE, out, "--scale", "4", "--model", tiny_model, "--no-adapt", out_args=())
    info = probe(out)
    assert len(info.times) == len(probe(SAMPLE).times) and (info.width, info.height) == (704, 576)
    assert "Traceback" not in err


def test_garbage_on_stdin_is_one_clear_error(tiny_model) -> None:
    for data, word in ((b"this is not video\n" * 10, "YUV4MPEG2"), (b"", "empty")):
        proc = subprocess.run([sys.executable, "-m", "vsrft", "pipe", "--model", str(tiny_model), "--no-adapt"],
                              input=data, capture_output=True, env=cli_env())
        lines = [ln for ln in proc.stderr.decode().splitlines() if ln.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("vsrft: error:") and word in lines[0]
        assert proc.stdout == b""


def test_truncated_frame_is_an_error(tiny_model) -> None:
    y4m = subprocess.run(["ffmpeg", "-v", "error", "-i", str(SAMPLE), "-frames:v", "4", "-f", "yuv4mpegpipe", "-"],
                         capture_output=True, check=True).stdout
    proc = subprocess.run([sys.executable, "-m", "vsrft", "pipe", "--model", str(tiny_model), "--no-adapt"],
                          input=y4m[:-1000], capture_output=True, env=cli_env())
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "truncated" in err and "Traceback" not in err


def test_raw_rgb_with_size(tiny_model) -> None:
    frames = decoded_rgb(SAMPLE)[:3]
    data = b"".join(f.tobytes() for f in frames)
    proc = subprocess.run([sys.executable, "-m", "vsrft", "pipe", "--model", str(tiny_model), "--no-adapt",
                           "--size", "176x144", "--scale", "2"], input=data, capture_output=True, env=cli_env())
    assert proc.returncode == 0, proc.stderr.decode()
    assert len(proc.stdout) == 3 * 352 * 288 * 3
