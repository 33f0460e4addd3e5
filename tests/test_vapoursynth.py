"""The VapourSynth plugin (plugins/vapoursynth/vsrft_vs.py) in a real VapourSynth core.

VapourSynth's wheels need Python >= 3.12 and this suite runs under the vsrft install (3.11, with
torch), so the VapourSynth side runs as a script under the interpreter named by $VSRFT_VS_PYTHON
(a venv with `vapoursynth` and `numpy`; `.ci/run` makes one). The plugin's worker is this
install's `vsrft pipe` (`python -m vsrft`). One script run does every case; the tests check its
results against `vsrft enhance`, `Enhancer.process` and `vsrft pipe` on the same frames.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from helpers import ROOT, cli_env, decoded_rgb, ffmpeg

PLUGIN_DIR = ROOT / "plugins" / "vapoursynth"
VS_PYTHON = os.environ.get("VSRFT_VS_PYTHON", "")

pytestmark = pytest.mark.skipif(
    not VS_PYTHON or not Path(VS_PYTHON).exists(),
    reason="VSRFT_VS_PYTHON is not set to a Python 3.12+ with vapoursynth and numpy "
           "(python3.12 -m venv .venv-vs && .venv-vs/bin/pip install vapoursynth numpy; .ci/run does it)")

# The VapourSynth side. Importable (by the .vpy for vspipe) and runnable (every case of a job).
JOB_SCRIPT = r'''
import json, random, sys
import numpy as np
import vapoursynth as vs
import vsrft_vs

core = vs.core
core.num_threads = 2


def source(case):
    """A clip made from raw planes (no source filter needed): planes[i] is (frames, h, w)."""
    data = np.load(case["planes"])
    planes = [data[f"p{i}"] for i in range(3)]
    frames, h, w = planes[0].shape
    blank = core.std.BlankClip(format=getattr(vs, case["format"]), width=w, height=h, length=frames,
                               fpsnum=24, fpsden=1)
    props = case.get("props", {})

    def fill(n, f):
        out = f.copy()
        for i in range(3):
            np.asarray(out[i])[:] = planes[i][n]
        for key, value in props.items():
            out.props[key] = value
        if "range" in case:
            vsrft_vs._set_range(out.props, case["range"] == "full")
        return out

    return blank.std.ModifyFrame(blank, fill)


def enhanced(case):
    return vsrft_vs.enhance(source(case), **case["enhance"])


def run(case):
    clip = enhanced(case)
    n = clip.num_frames
    frames = {}
    if case["order"] == "random":             # concurrent requests in a shuffled order
        order = list(range(n))
        random.Random(7).shuffle(order)
        futures = {i: clip.get_frame_async(i) for i in order}
        frames = {i: fut.result() for i, fut in futures.items()}
    else:
        for i in range(n):
            frames[i] = clip.get_frame(i)
    planes = {f"p{p}": np.stack([np.asarray(frames[i][p]) for i in range(n)]) for p in range(3)}
    np.savez(case["out"], **planes)
    props = {k: (int(v) if isinstance(v, int) else v) for k, v in frames[0].props.items()
             if isinstance(v, (int, float, str))}
    return {"format": clip.format.name, "width": clip.width, "height": clip.height, "frames": n, "props": props}


def error_of(fn):
    try:
        fn()
    except vs.Error as exc:
        return str(exc)
    return None


def errors(job):
    base = job["cases"][0]
    gray = core.std.BlankClip(format=vs.GRAY8, width=64, height=48, length=2)
    deep = core.std.BlankClip(format=vs.YUV420P16, width=64, height=48, length=2)
    missing = dict(base["enhance"], command=["/nonexistent/vsrft"])
    bad_model = dict(base["enhance"], model=job["missing_model"])
    return {
        "gray": error_of(lambda: vsrft_vs.enhance(gray)),
        "deep": error_of(lambda: vsrft_vs.enhance(deep)),
        "option": error_of(lambda: vsrft_vs.enhance(source(base), adapt_stepz=3)),
        "command": error_of(lambda: vsrft_vs.enhance(source(base), **missing).get_frame(0)),
        "model": error_of(lambda: vsrft_vs.enhance(source(base), **bad_model).get_frame(1)),
    }


if __name__ == "__main__":
    job = json.load(open(sys.argv[1]))
    result = {"cases": {c["name"]: run(c) for c in job["cases"] if not c.get("vspipe")}, "errors": errors(job)}
    json.dump(result, open(job["result"], "w"))
'''

VPY = r'''
import json
import vsjob
case = next(c for c in json.load(open(job))["cases"] if c["name"] == name)
vsjob.enhanced(case).set_output()
'''


def _yuv_planes(path: Path) -> list[np.ndarray]:
    """Every frame's planes (8-bit 4:2:0) of a file, as (frames, h, w) arrays."""
    import av

    out: list[list[np.ndarray]] = [[], [], []]
    with av.open(str(path)) as c:
        for vf in c.decode(video=0):
            assert vf.format.name == "yuv420p", vf.format.name
            for i, p in enumerate(vf.planes):
                out[i].append(np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width].copy())
    return [np.stack(x) for x in out]


def _read_y4m(data: bytes, dtype=np.uint8, chroma_shift=(1, 1)) -> tuple[bytes, list[np.ndarray]]:
    """(header, planes) of a YUV4MPEG2 stream of planar YUV."""
    header, rest = data.split(b"\n", 1)
    fields = {f[:1]: f[1:] for f in header.split()[1:]}
    w, h = int(fields[b"W"]), int(fields[b"H"])
    cw, ch = w >> chroma_shift[0], h >> chroma_shift[1]
    size = (w * h + 2 * cw * ch) * np.dtype(dtype).itemsize
    planes: list[list[np.ndarray]] = [[], [], []]
    pos = 0
    while pos < len(rest):
        end = rest.index(b"\n", pos)
        assert rest[pos:end].startswith(b"FRAME")
        a = np.frombuffer(rest[end + 1:end + 1 + size], dtype)
        assert a.size * a.itemsize == size, "truncated y4m"
        planes[0].append(a[:w * h].reshape(h, w))
        planes[1].append(a[w * h:w * h + cw * ch].reshape(ch, cw))
        planes[2].append(a[w * h + cw * ch:].reshape(ch, cw))
        pos = end + 1 + size
    return header, [np.stack(x) for x in planes]


def _maxdiff(a, b) -> int:
    return int(np.abs(np.asarray(a, np.int64) - np.asarray(b, np.int64)).max())


@pytest.fixture(scope="module")
def vs_run(tiny_model, tmp_path_factory):
    """Makes the source frames, runs the VapourSynth job (and vspipe) once; returns what the tests compare."""
    d = tmp_path_factory.mktemp("vs")
    # 12 frames, 64x48, x264, tagged BT.709 limited range: vsrft would guess BT.601 at this height,
    # so the plugin has to hand the clip's _Matrix to the worker.
    src = d / "bt709.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48:r=24,trim=end_frame=12", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-preset", "veryfast", "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
           "-color_range", "tv", src)
    yuv = _yuv_planes(src)
    np.savez(d / "yuv.npz", **{f"p{i}": p for i, p in enumerate(yuv)})
    rgb = np.stack(decoded_rgb(src))                                  # vsrft's own YUV -> RGB of the file
    np.savez(d / "rgb.npz", **{f"p{i}": rgb[..., i] for i in range(3)})
    np.savez(d / "rgbs.npz", **{f"p{i}": rgb[..., i].astype(np.float32) / 255 for i in range(3)})
    y4m10 = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                            "testsrc2=s=64x48:r=24,trim=end_frame=8", "-pix_fmt", "yuv420p10le", "-strict", "-1",
                            "-f", "yuv4mpegpipe", "-"], capture_output=True, check=True).stdout
    _, p10 = _read_y4m(y4m10, np.dtype("<u2"))
    np.savez(d / "yuv10.npz", **{f"p{i}": p for i, p in enumerate(p10)})

    worker = [sys.executable, "-m", "vsrft"]
    common = {"model": str(tiny_model), "command": worker}
    adapt = dict(common, adapt=True, adapt_sync=True, adapt_steps=3, report=str(d / "report_{}.json"))
    yuv_case = {"planes": str(d / "yuv.npz"), "format": "YUV420P8", "props": {"_Matrix": 1}, "range": "limited"}
    cases = [
        dict(yuv_case, name="adapt_seq", vspipe=True, enhance=dict(adapt, report=adapt["report"].format("seq"))),
        dict(yuv_case, name="adapt_random", order="random",
             enhance=dict(adapt, report=adapt["report"].format("random"))),
        {"name": "rgb24", "planes": str(d / "rgb.npz"), "format": "RGB24", "order": "seq",
         "enhance": dict(common, adapt=False)},
        {"name": "rgbs", "planes": str(d / "rgbs.npz"), "format": "RGBS", "order": "random",
         "enhance": dict(common, adapt=False)},
        {"name": "yuv10", "planes": str(d / "yuv10.npz"), "format": "YUV420P10", "order": "seq",
         "enhance": dict(common, adapt=False)},
    ]
    for c in cases:
        c["out"] = str(d / f"{c['name']}.npz")
    job = {"cases": cases, "result": str(d / "result.json"), "missing_model": str(d / "no-such-model.pt")}
    (d / "job.json").write_text(json.dumps(job))
    (d / "vsjob.py").write_text(JOB_SCRIPT)
    (d / "enhance.vpy").write_text(VPY)
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join([str(d), str(PLUGIN_DIR), env["PYTHONPATH"]])   # this checkout's plugin
    # the README's way, at the same time: vspipe writes YUV4MPEG2 (the worker starts inside vspipe's Python)
    vspipe = shutil.which("vspipe", path=str(Path(VS_PYTHON).parent))
    assert vspipe, f"vspipe is missing next to {VS_PYTHON}"
    with subprocess.Popen([vspipe, "-a", f"job={d / 'job.json'}", "-a", "name=adapt_seq", str(d / "enhance.vpy"),
                           "-c", "y4m", str(d / "vspipe.y4m")], stderr=subprocess.PIPE, env=env) as piped:
        proc = subprocess.run([VS_PYTHON, str(d / "vsjob.py"), str(d / "job.json")], capture_output=True, text=True,
                              env=env, timeout=300)
        piped_err = piped.communicate(timeout=300)[1].decode()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert piped.returncode == 0, piped_err[-3000:]
    result = json.loads((d / "result.json").read_text())
    result["vspipe_header"], outputs_seq = _read_y4m((d / "vspipe.y4m").read_bytes())

    outputs = {c["name"]: [np.load(c["out"])[f"p{i}"] for i in range(3)] for c in cases if not c.get("vspipe")}
    outputs["adapt_seq"] = outputs_seq
    return {"dir": d, "src": src, "rgb": rgb, "y4m10": y4m10, "result": result, "out": outputs, "model": tiny_model,
            "refs": {}}


def _reference(vs_run, *cli_args: str) -> np.ndarray:
    """The engine in this process on the file's frames (as `vsrft enhance` decodes them): (N, H, W, 3) RGB.

    The Enhancer comes from the CLI's own option parsing, so options mean what they mean to the worker.
    """
    from vsrft.cli import build_parser, make_enhancer

    key = " ".join(cli_args)
    if key not in vs_run["refs"]:
        args = build_parser().parse_args(["pipe", "--model", str(vs_run["model"]), "-q", *cli_args])
        vs_run["refs"][key] = np.stack([np.asarray(f) for f in make_enhancer(args).process(list(vs_run["rgb"]))])
    return vs_run["refs"][key]


def _as_yuv420(rgb: np.ndarray) -> list[np.ndarray]:
    """RGB frames -> 8-bit 4:2:0 planes the way `vsrft enhance` / `vsrft pipe` write them (BT.709, limited)."""
    from vsrft.frame import Colour
    from vsrft.io.convert import rgb_to_frame

    out: list[list[np.ndarray]] = [[], [], []]
    for frame in rgb:
        vf = rgb_to_frame(np.ascontiguousarray(frame), "yuv420p", Colour(matrix=1, range=1))
        for i, p in enumerate(vf.planes):
            out[i].append(np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width].copy())
    return [np.stack(x) for x in out]


def test_frame_props_carried(vs_run) -> None:
    info = vs_run["result"]["cases"]["adapt_random"]
    assert (info["format"], info["width"], info["height"], info["frames"]) == ("YUV420P8", 256, 192, 12)
    props = info["props"]
    assert props["_Matrix"] == 1 and props["_DurationNum"] == 1 and props["_DurationDen"] == 24
    assert props.get("_Range", 1 - props.get("_ColorRange", 0)) == 0        # limited, in either prop's coding


def test_random_access_equals_sequential_and_the_engine(vs_run) -> None:
    """Two adapted engine runs (reproducible: adapt_sync, 3 steps), a BT.709 clip at 48 lines (so the
    worker needs --matrix): one through `vspipe -c y4m` (the README's way, sequential requests), the
    other's frames requested concurrently in a shuffled order. The same frames exactly, and the
    engine's own output on the file's frames (as `vsrft enhance` decodes them) within 1."""
    fields = vs_run["result"]["vspipe_header"].split()
    assert b"W256" in fields and b"H192" in fields
    seq, rnd = vs_run["out"]["adapt_seq"], vs_run["out"]["adapt_random"]
    assert seq[0].shape == (12, 192, 256)
    for a, b in zip(seq, rnd):
        assert np.array_equal(a, b)
    for tag in ("seq", "random"):     # the options reach the worker, which finishes its report at the end
        report = json.loads((vs_run["dir"] / f"report_{tag}.json").read_text())
        assert len(report["keyframes"]) >= 1
    ref = _as_yuv420(_reference(vs_run, "--adapt-sync", "--adapt-steps", "3"))
    assert max(_maxdiff(a, b) for a, b in zip(seq, ref)) <= 1
    plain = _as_yuv420(_reference(vs_run, "--no-adapt"))
    assert max(_maxdiff(a, b) for a, b in zip(seq, plain)) > 0          # adaptation changed the output


def test_rgb24_and_rgbs_equal_the_engine(vs_run) -> None:
    ref = _reference(vs_run, "--no-adapt")
    assert vs_run["result"]["cases"]["rgb24"]["format"] == "RGB24"
    rgb24 = np.stack(vs_run["out"]["rgb24"], axis=-1)
    assert rgb24.shape == ref.shape == (12, 192, 256, 3)
    assert _maxdiff(rgb24, ref) <= 1
    assert vs_run["result"]["cases"]["rgbs"]["format"] == "RGBS"
    rgbs = np.stack(vs_run["out"]["rgbs"], axis=-1)
    assert rgbs.dtype == np.float32 and 0 <= rgbs.min() and rgbs.max() <= 1
    assert _maxdiff(np.rint(rgbs * 255), ref) <= 1


def test_10bit_equals_vsrft_pipe(vs_run, monkeypatch) -> None:
    assert vs_run["result"]["cases"]["yuv10"]["format"] == "YUV420P10"
    from vsrft import cli

    stdout = io.BytesIO()          # `vsrft pipe` in this process (no second torch start-up)
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(vs_run["y4m10"])))
    monkeypatch.setattr(sys, "stdout", SimpleNamespace(buffer=stdout))
    args = cli.build_parser().parse_args(["pipe", "--model", str(vs_run["model"]), "--no-adapt", "-q"])
    assert args.func(args) == 0
    _, ref = _read_y4m(stdout.getvalue(), np.dtype("<u2"))
    out = vs_run["out"]["yuv10"]
    assert out[0].shape == ref[0].shape == (8, 192, 256) and out[0].dtype == np.uint16
    assert max(_maxdiff(a, b) for a, b in zip(out, ref)) <= 4          # 1 code value at 8 bits


def test_errors_are_one_clear_line(vs_run) -> None:
    errors = vs_run["result"]["errors"]
    for key, words in {"gray": ("unsupported format GRAY8",), "deep": ("unsupported format YUV420P16",),
                       "option": ("unknown option 'adapt_stepz'",), "command": ("cannot start the worker",),
                       "model": ("worker stopped", "vsrft: error:")}.items():
        message = errors[key]
        assert message is not None, key
        # errors at frame time come back from VapourSynth under a traceback of the callback: the last line says it
        message = [ln for ln in message.splitlines() if ln.strip()][-1]
        if key in ("command", "model"):
            assert message.startswith("vapoursynth.Error: vsrft: "), (key, message)
        assert all(w.lower() in message.lower() for w in words), (key, message)
