"""vsrft in VapourSynth: ``vsrft_vs.enhance(clip, scale=4, ...)`` returns the upscaled clip.

The plugin needs only ``vapoursynth`` and ``numpy``. The network runs in a worker process,
the ``vsrft pipe`` command of a vsrft install (which brings torch and ONNX Runtime, and may
live in another Python): the clip's frames go to its stdin as YUV4MPEG2 (YUV clips) or raw
rgb24 (RGB clips) and the upscaled frames come back on its stdout. So the plugin and
``vsrft enhance`` / ``vsrft pipe`` share one engine and give the same pixels.

Frame order. The engine is stateful: output frame t needs source frames t-2..t+2 of its shot,
and with adaptation each shot's first frames wait for the weights fine-tuned on that shot.
One clip therefore has one engine run that sees the source in stream order, 0, 1, 2, ...
Output frames are written to a disk-backed cache (a deleted temporary file, ``cache_dir``)
as they come; a request for a frame the engine has not reached drives it forward (feeding
source frames in order, at most ``lookahead`` frames ahead of the engine's output), a request
for an earlier frame is read from the cache. The output is thus the same whatever order
frames are requested in (random access == sequential access, exactly), and each source
frame is requested once. Disk use: the size of the output frames computed so far.
"""
from __future__ import annotations

import collections
import os
import shlex
import subprocess
import tempfile
import threading
import weakref
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

import numpy as np
import vapoursynth as vs

__all__ = ["enhance", "WORKER_ENV"]

WORKER_ENV = "VSRFT_COMMAND"
_DEFAULT_COMMAND = "vsrft"

# This module runs in a Python without vsrft (and torch), so it keeps copies of two tables of vsrft's
# options schema (vsrft/options.py); tests/test_options.py fails when they differ from the schema's.
# H.273 matrix numbers (VapourSynth's _Matrix, FFmpeg's AVColorSpace) the engine converts with:
# vsrft.options.MATRICES.
_MATRICES = {"bt709": 1, "fcc": 4, "bt470bg": 5, "bt601": 6, "smpte170m": 6, "smpte240m": 7, "bt2020": 9,
             "bt2020nc": 9, "bt2020c": 10}
_UNSPECIFIED = 2

# keyword -> how `vsrft pipe` takes it: ("value", flag, None), or ("switch", flag when true, flag when
# false; None gives no flag): vsrft.options.vapoursynth_table().
_OPTIONS = {
    "scale": ("value", "--scale", None),
    "model": ("value", "--model", None),
    "blur": ("value", "--blur", None),
    "kernel": ("value", "--kernel", None),
    "input_deblur": ("switch", None, "--no-input-deblur"),
    "adapt": ("switch", None, "--no-adapt"),
    "adapt_every": ("value", "--adapt-every", None),
    "adapt_steps": ("value", "--adapt-steps", None),
    "adapt_seconds": ("value", "--adapt-seconds", None),
    "adapt_lr": ("value", "--adapt-lr", None),
    "multi_frame_loss": ("switch", None, "--single-frame-loss"),
    "adapt_sync": ("switch", "--adapt-sync", None),
    "adapt_background": ("switch", "--adapt-background", None),
    "warm_start": ("switch", "--warm-start", None),
    "report": ("value", "--report", None),
    "save_adapted": ("value", "--save-adapted", None),
    "project": ("switch", "--project", "--no-project"),
    "tile": ("value", "--tile", None),
    "memory_limit": ("value", "--memory-limit", None),
    "provider": ("value", "--provider", None),
    "threads": ("value", "--threads", None),
    "runtime": ("value", "--runtime", None),
    "precision": ("value", "--precision", None),
}


def _pipe_argv(command: list[str], options: dict[str, Any]) -> list[str]:
    """The worker's command line: `vsrft pipe -q` and a flag for each option (see `_OPTIONS`); the worker
    checks the values and their combinations (vsrft.options.validate), as `vsrft pipe` does."""
    argv = [*command, "pipe", "-q"]
    for key, value in options.items():
        if key not in _OPTIONS:
            raise vs.Error(f"vsrft: unknown option {key!r} (known: {', '.join(_OPTIONS)})")
        kind, flag, off_flag = _OPTIONS[key]
        if kind == "switch":
            switch = None if value is None else flag if value else off_flag
            if switch is not None:
                argv.append(switch)
            continue
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            if v is not None:
                argv += [flag, str(v)]
    return argv


@dataclass(frozen=True)
class _Layout:
    """How a VapourSynth format travels to the worker and back."""

    kind: str            # "yuv" (YUV4MPEG2), "rgb24" or "rgbs" (raw rgb24)
    chroma: str = ""     # YUV4MPEG2 C tag
    ssw: int = 0
    ssh: int = 0
    bytes_per_sample: int = 1

    def frame_bytes(self, width: int, height: int) -> int:
        if self.kind != "yuv":
            return width * height * 3
        cw, ch = width >> self.ssw, height >> self.ssh
        return (width * height + 2 * cw * ch) * self.bytes_per_sample


def _layout(fmt: vs.VideoFormat | None) -> _Layout:
    if fmt is None:
        raise vs.Error("vsrft: clips with a variable format are not supported")
    if fmt.color_family == vs.RGB:
        if fmt.sample_type == vs.INTEGER and fmt.bits_per_sample == 8:
            return _Layout("rgb24")
        if fmt.sample_type == vs.FLOAT and fmt.bits_per_sample == 32:
            return _Layout("rgbs")
    elif fmt.color_family == vs.YUV and fmt.sample_type == vs.INTEGER and fmt.bits_per_sample in (8, 10):
        sub = {(1, 1): "420", (1, 0): "422", (0, 0): "444"}.get((fmt.subsampling_w, fmt.subsampling_h))
        if sub is not None:
            tag = ("420jpeg" if sub == "420" else sub) if fmt.bits_per_sample == 8 else f"{sub}p10"
            return _Layout("yuv", tag, fmt.subsampling_w, fmt.subsampling_h, fmt.bytes_per_sample)
    raise vs.Error(f"vsrft: unsupported format {fmt.name}: use RGB24, RGBS, or YUV420/422/444 at 8 or 10 bits "
                   "(e.g. clip.resize.Bicubic(format=vs.YUV420P8))")


def _matrix_number(value: Any) -> int:
    number = _MATRICES.get(str(value).lower()) if isinstance(value, str) else value
    if number not in _MATRICES.values():
        raise vs.Error(f"vsrft: unsupported matrix {value!r}: use one of {', '.join(_MATRICES)} or 1, 4-7, 9, 10")
    return int(number)


def _guess_matrix(height: int) -> int:
    """vsrft's own rule for untagged YUV (vsrft.io.convert.guess_colour): BT.709 from 720 lines up."""
    return 1 if height >= 720 else 6


def _command(command: str | Sequence[str] | None) -> list[str]:
    if command is None:
        command = os.environ.get(WORKER_ENV) or _DEFAULT_COMMAND
    argv = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
    if not argv:
        raise vs.Error(f"vsrft: the worker command is empty (command= or ${WORKER_ENV})")
    return argv


def enhance(clip: vs.VideoNode, scale: int = 4, model: str = "vsrft-mse", adapt: bool = True,
            blur: float | None = None, *, command: str | Sequence[str] | None = None,
            matrix: int | str | None = None, range: str | None = None, lookahead: int = 24,
            cache_dir: str | None = None, **options: Any) -> vs.VideoNode:
    """Upscale `clip` by `scale` with vsrft, adapting the network to the clip per shot (unless adapt=False).

    clip: RGB24, RGBS, or YUV 4:2:0/4:2:2/4:4:4 at 8 or 10 bits, constant size. The output has
        the same format (RGBS goes through the engine as 8-bit RGB) and the source's frame props.
    model: built-in model name or checkpoint path (as seen by the worker). blur: Gaussian sigma
        of the source's blur (see `vsrft pipe --help`).
    command: the worker, a `vsrft` command (string or argv list; default ``$VSRFT_COMMAND`` or
        ``vsrft`` on PATH); ``pipe`` and the options are appended.
    matrix, range: override the YUV clip's ``_Matrix`` / ``_Range`` frame props (``_ColorRange`` before R81)
        (matrix: "bt709", "bt601", "bt2020", ... or an H.273 number; range: "limited"/"full").
        Without props or overrides, vsrft's rule applies: BT.709 from 720 lines up, else BT.601;
        limited range.
    lookahead: most source frames fed ahead of the engine's output (it only bounds work done
        ahead of requests; the output does not depend on it).
    cache_dir: folder of the output frame cache (default: the system's temporary folder).
    options: more engine options, as `vsrft pipe`'s flags with underscores: kernel, input_deblur,
        adapt_every, adapt_steps, adapt_seconds, adapt_lr, multi_frame_loss (False: --single-frame-loss),
        adapt_sync, adapt_background, warm_start, report, save_adapted, project (True/False:
        --project/--no-project; None: the default), tile, memory_limit, provider (a name or a list),
        threads. A value the worker rejects is its one-line error.
    """
    if not isinstance(clip, vs.VideoNode):
        raise vs.Error("vsrft: clip must be a VapourSynth video clip")
    layout = _layout(clip.format)
    if clip.width == 0 or clip.height == 0:
        raise vs.Error("vsrft: clips with a variable frame size are not supported")
    if not isinstance(scale, int) or scale < 1:
        raise vs.Error(f"vsrft: scale must be a positive integer, got {scale!r}")
    if int(lookahead) < 1:
        raise vs.Error("vsrft: lookahead must be at least 1")
    if range is not None and str(range).lower() not in ("limited", "full"):
        raise vs.Error(f"vsrft: range must be 'limited' or 'full', got {range!r}")
    argv = _pipe_argv(_command(command), {"scale": scale, "model": model, "adapt": adapt,
                                          "blur": None if blur is None else float(blur), **options})
    if layout.kind != "yuv":
        rate = clip.fps if clip.fps > 0 else Fraction(25)
        argv += ["--size", f"{clip.width}x{clip.height}", "--rate", f"{rate.numerator}/{rate.denominator}"]
    run = _Run(clip, layout, argv, scale, None if matrix is None else _matrix_number(matrix),
               None if range is None else str(range).lower(), int(lookahead), cache_dir)
    template = clip.std.BlankClip(width=clip.width * scale, height=clip.height * scale, keep=True)
    return template.std.ModifyFrame(clips=template, selector=run.modify)


class _State:
    """What the worker's threads share with the frame requests (no reference to the _Run, so it can be freed)."""

    def __init__(self, cache_dir: str | None) -> None:
        self.cond = threading.Condition()
        self.produced = 0                 # output frames in the cache (they come in order)
        self.error: str | None = None
        self.cache = tempfile.TemporaryFile(prefix="vsrft-vs-", dir=cache_dir)
        self.stderr: collections.deque[str] = collections.deque(maxlen=40)
        self.proc: subprocess.Popen | None = None
        self.stderr_thread: threading.Thread | None = None
        self.input_done = False           # every source frame was written and stdin closed

    def fail(self, message: str) -> None:
        with self.cond:
            if self.error is None:
                self.error = message
            self.cond.notify_all()

    def worker_error(self) -> str:
        if self.proc is not None and self.proc.poll() is not None and self.stderr_thread is not None:
            self.stderr_thread.join(timeout=5)     # the worker has exited: its last words are on the way
        lines = [ln for ln in self.stderr if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower()]
        return (errors or lines or ["no message"])[-1].strip()

    def close(self) -> None:
        """Stop the worker: let it finish (report, saved weights) if it has the whole clip, else kill it."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                if self.input_done and self.error is None:
                    proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
            try:
                proc.kill()
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        for stream in (proc.stdin, proc.stdout, proc.stderr) if proc is not None else ():
            try:
                stream.close()
            except (OSError, ValueError):
                pass
        self.cache.close()


def _read_exact(stream, n: int) -> bytes:
    # the same loop as vsrft.io.y4m._read_exact: this module runs in the VapourSynth Python,
    # which has numpy but not vsrft (no torch wheel on disk for 3.12), so it cannot import it
    chunks, got = [], 0
    while got < n:
        b = stream.read(n - got)
        if not b:
            break
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def _reader(state: _State, stdout, layout: _Layout, width: int, height: int, total: int) -> None:
    """Worker stdout -> cache file, frame by frame; any end before `total` frames is the run's error."""
    size = layout.frame_bytes(width, height)
    try:
        if layout.kind == "yuv":
            header = stdout.readline()
            if header:
                fields = header.split()
                if fields[:1] != [b"YUV4MPEG2"] or b"W%d" % width not in fields or b"H%d" % height not in fields:
                    state.fail(f"vsrft: the worker wrote an unexpected stream header {header[:80]!r} "
                               f"(expected {width}x{height})")
                    return
        while state.produced < total:
            if layout.kind == "yuv":
                line = stdout.readline()
                if not line:
                    break
                if not line.startswith(b"FRAME"):
                    state.fail(f"vsrft: the worker's output is corrupt at frame {state.produced}")
                    return
            data = _read_exact(stdout, size)
            if len(data) < size:
                break
            os.pwrite(state.cache.fileno(), data, state.produced * size)
            with state.cond:
                state.produced += 1
                state.cond.notify_all()
    except (OSError, ValueError) as exc:       # closed while shutting down
        state.fail(f"vsrft: reading the worker's output failed: {exc}")
        return
    if state.produced < total:
        proc = state.proc
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        state.fail(f"vsrft: the worker stopped after {state.produced} of {total} frames: {state.worker_error()}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _drain_stderr(state: _State, stderr) -> None:
    for raw in iter(stderr.readline, b""):
        state.stderr.append(raw.decode("utf-8", "replace").rstrip())


# VapourSynth R81 replaced _ColorRange (0 = full, 1 = limited) by _Range (1 = full, 0 = limited).
_NEW_RANGE = int(getattr(vs, "RANGE_FULL", 0)) == 1


def _is_full_range(props) -> bool:
    if "_Range" in props:
        return int(props["_Range"]) == 1
    if "_ColorRange" in props:
        return int(props["_ColorRange"]) == 0
    return False                               # YUV without the prop: limited, as vsrft assumes


def _set_range(props, full: bool) -> None:
    if _NEW_RANGE:
        props["_Range"] = 1 if full else 0
    else:
        props["_ColorRange"] = 0 if full else 1


def _plain_props(props) -> dict[str, Any]:
    """Frame props that can be copied to another frame (numbers, strings, data; not frames or clips)."""
    out = {}
    for key, value in props.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        if all(isinstance(v, (int, float, str, bytes)) for v in items):
            out[key] = value
    return out


class _Run:
    """One engine run over one clip: feeds source frames in order, caches the output frames."""

    def __init__(self, clip: vs.VideoNode, layout: _Layout, argv: list[str], scale: int, matrix: int | None,
                 crange: str | None, lookahead: int, cache_dir: str | None) -> None:
        self.clip, self.layout, self.argv = clip, layout, argv
        self.width, self.height = clip.width * scale, clip.height * scale
        self.total = clip.num_frames
        self.frame_bytes = layout.frame_bytes(self.width, self.height)
        self.matrix_override, self.range_override = matrix, crange
        self.matrix = self.range = None     # resolved at the first frame (YUV)
        self.lookahead = lookahead
        self.fed = 0
        self.props: list[dict[str, Any]] = []
        self.drive = threading.Lock()
        self.state = _State(cache_dir)
        self._finalizer = weakref.finalize(self, self.state.close)

    # ---------------------------------------------------------------- requests

    def modify(self, n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        data = self._output(n)
        out = f.copy()
        self._fill(out, data)
        props = out.props
        for key, value in self.props[n].items():
            try:
                props[key] = value
            except (TypeError, vs.Error):
                pass
        if self.layout.kind == "yuv":
            props["_Matrix"] = self.matrix
            _set_range(props, self.range == "full")
        return out

    def _output(self, n: int) -> bytes:
        state = self.state
        with self.drive:                      # one request drives the engine at a time
            while True:
                with state.cond:
                    if state.produced > n:
                        break
                    if state.error:
                        raise vs.Error(state.error)
                    ahead = self.fed - state.produced
                if self.fed < self.total and ahead < self.lookahead:
                    self._feed()
                    continue
                with state.cond:
                    before = state.produced
                    state.cond.wait_for(lambda: state.produced != before or state.error is not None, timeout=1.0)
                    stalled = state.produced == before and state.error is None
                if stalled and self.fed < self.total:
                    self._feed()              # the engine holds back more than `lookahead` frames: keep it going
        data = os.pread(state.cache.fileno(), self.frame_bytes, n * self.frame_bytes)
        if len(data) != self.frame_bytes:
            raise vs.Error(f"vsrft: the frame cache lost frame {n}")
        return data

    # ---------------------------------------------------------------- feeding the worker

    def _feed(self) -> None:
        i = self.fed
        frame = self.clip.get_frame(i)
        props = frame.props
        if self.layout.kind == "yuv":
            self._check_colour(i, props)
        payload = self._pack(frame)
        self.props.append(_plain_props(props))
        del frame
        chunks = [b"FRAME\n", payload] if self.layout.kind == "yuv" else [payload]
        if self.state.proc is None:
            self._start()
            if self.layout.kind == "yuv":
                chunks.insert(0, self._header())
        proc = self.state.proc
        try:
            _write_all(proc.stdin.fileno(), b"".join(chunks))
            self.fed += 1
            if self.fed == self.total:
                proc.stdin.close()            # end of stream: the worker flushes its last frames
                self.state.input_done = True
        except (BrokenPipeError, OSError, ValueError):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self.state.fail(f"vsrft: the worker stopped at frame {i}: {self.state.worker_error()}")
            raise vs.Error(self.state.error) from None

    def _check_colour(self, i: int, props) -> None:
        m = props.get("_Matrix", _UNSPECIFIED)
        if self.matrix is None:
            if self.matrix_override is not None:
                self.matrix = self.matrix_override
            elif m == _UNSPECIFIED:
                self.matrix = _guess_matrix(self.clip.height)
            elif m in _MATRICES.values():
                self.matrix = int(m)
            else:
                raise vs.Error(f"vsrft: frame {i} has _Matrix={m}, which vsrft does not convert: supported "
                               "1 (BT.709), 4-7 (BT.601 family), 9/10 (BT.2020); set matrix= or convert first")
            self.range = self.range_override or ("full" if _is_full_range(props) else "limited")
        elif self.matrix_override is None and m != _UNSPECIFIED and m != self.matrix:
            raise vs.Error(f"vsrft: frame {i} has _Matrix={m} but the clip started with {self.matrix}: "
                           "vsrft converts a clip with one matrix (set matrix= to force one)")

    def _pack(self, frame: vs.VideoFrame) -> bytes:
        kind = self.layout.kind
        if kind == "yuv":
            dtype = "<u2" if self.layout.bytes_per_sample == 2 else np.uint8
            return b"".join(np.asarray(frame[p]).astype(dtype, copy=False).tobytes() for p in range(3))
        planes = [np.asarray(frame[p]) for p in range(3)]
        if kind == "rgbs":
            planes = [np.rint(np.clip(p, 0.0, 1.0) * 255.0).astype(np.uint8) for p in planes]
        return np.stack(planes, axis=-1).tobytes()

    def _fill(self, out: vs.VideoFrame, data: bytes) -> None:
        kind = self.layout.kind
        if kind == "yuv":
            dtype = "<u2" if self.layout.bytes_per_sample == 2 else np.uint8
            off = 0
            for p in range(3):
                dst = np.asarray(out[p])
                n = dst.size * self.layout.bytes_per_sample
                dst[:] = np.frombuffer(data, dtype, dst.size, off).reshape(dst.shape)
                off += n
            return
        rgb = np.frombuffer(data, np.uint8).reshape(self.height, self.width, 3)
        for p in range(3):
            dst = np.asarray(out[p])
            dst[:] = rgb[:, :, p] if kind == "rgb24" else rgb[:, :, p].astype(np.float32) / np.float32(255)

    def _header(self) -> bytes:
        rate = self.clip.fps if self.clip.fps > 0 else Fraction(25)
        fields = [f"W{self.clip.width}", f"H{self.clip.height}", f"F{rate.numerator}:{rate.denominator}", "Ip",
                  "A0:0", f"C{self.layout.chroma}", f"XCOLORRANGE={self.range.upper()}"]
        return b"YUV4MPEG2 " + " ".join(fields).encode() + b"\n"

    def _start(self) -> None:
        argv = list(self.argv)
        if self.layout.kind == "yuv" and self.matrix != _guess_matrix(self.clip.height):
            argv += ["--matrix", str(self.matrix)]     # only when vsrft's own guess would differ
        state = self.state
        try:
            state.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, bufsize=0)
        except OSError as exc:
            state.fail(f"vsrft: cannot start the worker {argv[0]!r} ({exc.strerror or exc}): set command= or "
                       f"${WORKER_ENV} to a `vsrft` command (a Python install of vsrft with torch)")
            raise vs.Error(state.error) from None
        threading.Thread(target=_reader, name="vsrft-vs-reader", daemon=True,
                         args=(state, state.proc.stdout, self.layout, self.width, self.height, self.total)).start()
        state.stderr_thread = threading.Thread(target=_drain_stderr, name="vsrft-vs-stderr", daemon=True,
                                               args=(state, state.proc.stderr))
        state.stderr_thread.start()
