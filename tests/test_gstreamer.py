"""The GStreamer element (plugins/gstreamer) in the real `gst-launch-1.0`, loaded by gst-python.

Skipped only when gst-launch-1.0 or GStreamer's Python plugin loader is not installed
(`apt-get install gstreamer1.0-tools gstreamer1.0-python3-plugin-loader python3-gst-1.0
gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-libav`); `.ci/run` installs them.
The element runs in the system Python and imports vsrft from the virtual environment that runs
these tests (VSRFT_VENV), as the README tells users to do.
"""
from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, VFR_EXPR, cli_env, decoded_rgb, ffmpeg, probe

PLUGIN_PATH = ROOT / "plugins" / "gstreamer"


def _missing() -> str | None:
    for tool in ("gst-launch-1.0", "gst-inspect-1.0"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install gstreamer1.0-tools)"
    proc = subprocess.run(["gst-inspect-1.0", "python"], capture_output=True, text=True)
    if proc.returncode != 0:
        return ("GStreamer's Python plugin loader is not installed "
                "(apt-get install gstreamer1.0-python3-plugin-loader python3-gst-1.0)")
    return None


_REASON = _missing()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


@pytest.fixture(scope="module")
def gst_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for gst-launch-1.0: the plugin folder, this test run's venv, a private registry."""
    env = cli_env()
    env["GST_PLUGIN_PATH"] = str(PLUGIN_PATH)
    env["GST_REGISTRY"] = str(tmp_path_factory.mktemp("gst") / "registry.bin")   # no stale user cache
    if sys.prefix != sys.base_prefix:
        env["VSRFT_VENV"] = sys.prefix
    env.pop("VIRTUAL_ENV", None)
    env.pop("GST_DEBUG", None)
    return env


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny real clips: `cfr` 10 frames at 24 fps; `vfr` 10 frames with irregular timestamps;
    `cut` 6 frames of testsrc2 then 6 of a Mandelbrot zoom (two shots)."""
    d = tmp_path_factory.mktemp("gstclips")
    x264 = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
    out = {"cfr": d / "cfr.mp4", "vfr": d / "vfr.mp4", "cut": d / "cut.mp4"}
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48:r=24,trim=end_frame=10", *x264, out["cfr"])
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48:r=24,trim=end_frame=10", "-vf", f"settb=1/1000,setpts={VFR_EXPR}",
           "-fps_mode", "passthrough", "-enc_time_base", "1/1000", *x264, "-video_track_timescale", "1000", out["vfr"])
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48:r=24,trim=end_frame=6,setpts=PTS-STARTPTS",
           "-f", "lavfi", "-i", "mandelbrot=s=64x48:r=24,trim=end_frame=6,setpts=PTS-STARTPTS",
           "-filter_complex", "[0:v][1:v]concat=n=2:v=1:a=0,format=yuv420p[v]", "-map", "[v]", *x264[:4], out["cut"])
    return out


def gst_launch(env: dict[str, str], pipeline: str, *, verbose: bool = False, timeout: float = 120):
    args = ["gst-launch-1.0", *(["-v"] if verbose else ["-q"]), *pipeline.split()]
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL)


def _no_python_noise(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr


def test_inspect_lists_the_element_and_its_properties(gst_env) -> None:
    proc = subprocess.run(["gst-inspect-1.0", "vsrft"], capture_output=True, text=True, env=gst_env)
    assert proc.returncode == 0, proc.stderr
    for prop in ("scale", "model", "adapt", "blur", "adapt-sync", "tile", "report"):
        assert re.search(rf"^\s+{re.escape(prop)}\s+:", proc.stdout, re.MULTILINE), prop
    assert "format: RGB" in proc.stdout
    _no_python_noise(proc.stderr)


def test_readme_pipeline_as_written(gst_env, clips, tiny_model, tmp_path) -> None:
    """The README's command (decodebin, x264enc, mp4mux) on a clip with irregular timestamps: one output
    frame per input frame, 4x the size, at the source's frame times, in 4:2:0 (which every player plays)."""
    import av

    src, out = clips["vfr"], tmp_path / "out.mp4"
    proc = gst_launch(gst_env, f"filesrc location={src} ! decodebin ! videoconvert ! vsrft scale=4 model={tiny_model} "
                               f"adapt=false ! videoconvert ! video/x-raw,format=I420 ! x264enc ! mp4mux "
                               f"! filesink location={out}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _no_python_noise(proc.stderr)
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
    a, b = probe(src), probe(out)
    assert (b.width, b.height) == (256, 192) and len(b.times) == len(a.times) == 10
    assert len({round(y - x, 3) for x, y in itertools.pairwise(a.times)}) > 2      # really irregular
    assert np.allclose(b.times, a.times, atol=1e-3), (a.times, b.times)


def test_output_equals_vsrft_enhance(gst_env, clips, tiny_model, tmp_path) -> None:
    """Without adaptation (on a clip with a scene cut, so the per-shot windows are compared too) and with
    it (one shot), the element gives the frames `vsrft enhance` gives with the same settings, within 1.

    Honest comparison: the element and `vsrft enhance` must see the same RGB frames. GStreamer's
    videoconvert turns YUV into RGB with its own arithmetic (not vsrft's colour-accurate path), and the
    network would carry any difference of a code value into the output; so the element is fed the
    frames vsrft's own decoder makes from the clip, as raw RGB through `rawvideoparse`, and its output
    is written raw (`filesink`, no conversion). `vsrft enhance` decodes the same clip the same way and
    encodes losslessly in RGB (ffv1, bgr0). Adaptation uses `adapt-sync` (the step budget only, never
    the clock) so both runs take the same steps.
    """
    steps = 2
    cases = {"plain": (clips["cut"], "adapt=false", ["--no-adapt"]),
             "adapted": (clips["cfr"], f"adapt=true adapt-sync=true adapt-steps={steps}",
                         ["--adapt-sync", "--adapt-steps", str(steps)])}
    # the reference runs go on beside gst-launch (all of them spend most of their time starting up)
    direct = {name: subprocess.Popen([sys.executable, "-m", "vsrft", "enhance", str(src), str(tmp_path / f"{name}.mkv"),
                                      "--model", str(tiny_model), "--codec", "ffv1", "--pix-fmt", "bgr0", "-q", *opts],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
              for name, (src, _, opts) in cases.items()}
    frames = {}
    chains = []
    for name, (src, props, _) in cases.items():       # two independent chains in one pipeline
        frames[name] = decoded_rgb(src)
        raw = tmp_path / f"{name}-in.rgb"
        raw.write_bytes(b"".join(f.tobytes() for f in frames[name]))
        h, w = frames[name][0].shape[:2]
        chains.append(f"filesrc location={raw} ! rawvideoparse format=rgb width={w} height={h} framerate=24/1 "
                      f"! vsrft model={tiny_model} scale=4 {props} report={tmp_path / name}.json "
                      f"! filesink location={tmp_path / name}.rgb")
    proc = gst_launch(gst_env, " ".join(chains))
    runs = {name: (p.wait(timeout=300), p.communicate()[1]) for name, p in direct.items()}
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _no_python_noise(proc.stderr)
    assert [k["frame_index"] for k in json.loads((tmp_path / "adapted.json").read_text())["keyframes"]] == [0]
    assert json.loads((tmp_path / "plain.json").read_text())["cuts"] == 1

    for name, (rc, err) in runs.items():
        assert rc == 0, err
        h, w = frames[name][0].shape[:2]
        want = np.stack(decoded_rgb(tmp_path / f"{name}.mkv"))
        got = np.frombuffer((tmp_path / f"{name}.rgb").read_bytes(), np.uint8).reshape(-1, 4 * h, 4 * w, 3)
        assert got.shape == want.shape == (len(frames[name]), 4 * h, 4 * w, 3), name
        assert int(np.abs(got.astype(int) - want).max()) <= 1, name


def test_errors_are_one_clear_line(gst_env, clips, tmp_path) -> None:
    """A model that does not load, and a VSRFT_VENV that is not a venv: gst-launch prints the element's
    one-line error and exits non-zero; no Python traceback on the terminal."""
    pipeline = (f"filesrc location={clips['cfr']} ! decodebin ! videoconvert ! vsrft model={tmp_path / 'nope.pt'} "
                "adapt=false ! fakesink")
    proc = gst_launch(gst_env, pipeline)
    assert proc.returncode != 0
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("ERROR: from element")]
    assert len(lines) == 1 and "vsrft" in lines[0] and "nope.pt" in lines[0], proc.stdout + proc.stderr
    _no_python_noise(proc.stderr)

    env = dict(gst_env, VSRFT_VENV=str(tmp_path))
    proc = gst_launch(env, pipeline)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "cannot import vsrft" in out and "VSRFT_VENV" in out, out
    _no_python_noise(proc.stderr)


@pytest.mark.parametrize("prop, words", [("scale=9", ("scale", "9")), ("provider=Foo", ("provider", "'Foo'"))])
def test_bad_property_values_stop_the_pipeline(gst_env, clips, tiny_model, prop: str, words: tuple[str, ...]) -> None:
    """A scale the engine cannot do and a provider ONNX Runtime does not know: the element fails to start
    with one clear error (not a warning, then a run at the default or on the CPU)."""
    pipeline = (f"filesrc location={clips['cfr']} ! decodebin ! videoconvert ! vsrft model={tiny_model} adapt=false "
                f"{prop} ! fakesink")
    proc = gst_launch(gst_env, pipeline)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    lines = [ln for ln in out.splitlines() if ln.startswith("ERROR: from element")]
    assert len(lines) == 1 and all(w in lines[0] for w in words), out
    assert "out of range" not in out, out
    _no_python_noise(proc.stderr)


# An application on the real GStreamer, in the system Python that has its bindings (the one the element
# runs in under gst-launch too). Two pipelines, one process (torch is imported once):
#  1. timestamps: `identity signal-handoffs=true` on both sides of the element reports every buffer's
#     pts, dts, duration and size (gst-launch -v drops some property notifications, handoffs are synchronous);
#  2. a flushing seek in mid-stream with appsink.
_APP = r"""
import json, sys, gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst
Gst.init(None)
vfr, cfr, model, target = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
result = {}

pipe = Gst.parse_launch(f"filesrc location={vfr} ! decodebin ! videoconvert ! identity name=before signal-handoffs=true "
                        f"! vsrft scale=2 model={model} adapt=false ! identity name=after signal-handoffs=true ! fakesink")
for name in ("before", "after"):
    seen = result[name] = []
    pipe.get_by_name(name).connect("handoff", lambda _e, b, seen=seen: seen.append(
        [b.pts, b.dts, b.duration, b.get_size(), bool(b.get_flags() & Gst.BufferFlags.DISCONT)]))
pipe.set_state(Gst.State.PLAYING)
msg = pipe.get_bus().timed_pop_filtered(60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
result["eos"] = msg is not None and msg.type == Gst.MessageType.EOS
pipe.set_state(Gst.State.NULL)

pipe = Gst.parse_launch(f"filesrc location={cfr} ! decodebin ! videoconvert ! vsrft model={model} adapt=false "
                        "! appsink name=out sync=false")
sink = pipe.get_by_name("out")
pipe.set_state(Gst.State.PLAYING)
result["first"] = [sink.emit("pull-sample").get_buffer().pts for _ in range(3)]
result["seek"] = pipe.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.ACCURATE, target)
result["after_seek"] = []
while True:
    sample = sink.emit("try-pull-sample", 30 * Gst.SECOND)
    if sample is None:
        break
    result["after_seek"].append(sample.get_buffer().pts)
    result["width"] = sample.get_caps().get_structure(0).get_value("width")
result["seek_eos"] = sink.get_property("eos")
msg = pipe.get_bus().pop_filtered(Gst.MessageType.ERROR)
result["error"] = str(msg.parse_error()[0]) if msg else None
pipe.set_state(Gst.State.NULL)
print(json.dumps(result))
"""
SEEK_S = 0.25


@pytest.fixture(scope="module")
def app(gst_env, clips, tiny_model) -> dict:
    python = "/usr/bin/python3"
    check = subprocess.run([python, "-c", "import gi; gi.require_version('Gst', '1.0')"], capture_output=True)
    if check.returncode != 0:
        pytest.skip("the system Python has no GStreamer bindings (apt-get install python3-gst-1.0)")
    proc = subprocess.run([python, "-c", _APP, str(clips["vfr"]), str(clips["cfr"]), str(tiny_model),
                           str(int(SEEK_S * 1e9))], capture_output=True, text=True, env=gst_env, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _no_python_noise(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_buffer_timestamps_are_kept(app) -> None:
    """Every output buffer carries the pts, dts, duration (and DISCONT flag) of the input buffer it was made
    from, one for one and in order, on a clip with irregular timestamps."""
    before, after = app["before"], app["after"]
    assert app["eos"] and len(before) == len(after) == 10
    assert [b[:3] + b[4:] for b in before] == [a[:3] + a[4:] for a in after]
    pts = [b[0] for b in before]
    assert len({y - x for x, y in itertools.pairwise(pts)}) > 2           # really irregular
    assert {b[3] for b in before} == {64 * 48 * 3} and {a[3] for a in after} == {128 * 96 * 3}


def test_flushing_seek(app, clips) -> None:
    """A flushing seek in mid-stream: the frames held in the engine are dropped, the stream resumes at the
    target (an accurate seek: exactly the frames from there on), upscaled, to EOS."""
    assert app["seek"] and app["error"] is None and app["seek_eos"] and app["width"] == 256
    first, after = app["first"], app["after_seek"]
    times = probe(clips["cfr"]).times
    assert len(first) == 3 and len(after) == sum(1 for t in times if t >= SEEK_S - 1e-6), (after, times)
    assert after == sorted(set(after)) and after[0] > first[-1]
