"""The `vsrft` command: argument parsing, progress bar, one-line errors and exit codes.

Exit codes: 0 success, 2 bad input or environment (one line on stderr), 130 interrupted (Ctrl-C),
143 / 129 stopped by SIGTERM / SIGHUP (handled as Ctrl-C: a clean stop).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from vsrft.errors import VsrftError

EXIT_USAGE = 2


class ProgressBar:
    """Stage, frames, fps and ETA on one stderr line (while adapting: which shot and its steps);
    silent when stderr is not a terminal. Log records go through `BarAwareHandler`, which clears
    the line, writes the record and redraws the bar, so they never land on the bar line."""

    active: "ProgressBar | None" = None        # the bar on screen, for the logging handler

    def __init__(self, enabled: bool, label: str = "") -> None:
        self.enabled = enabled
        self.label = label
        self._last = 0.0
        self._text = ""
        self._lock = threading.RLock()         # called from the encode and the adaptation threads
        if enabled:
            ProgressBar.active = self

    def __call__(self, p) -> None:  # p: vsrft.engine.Progress
        if not self.enabled:
            return
        with self._lock:
            now = time.monotonic()
            final = p.frames_total is not None and p.frames_done >= p.frames_total
            if now - self._last < 0.2 and not final and not (p.stage == "adapting" and p.step in (0, p.steps)):
                return
            self._last = now
            stage = f"adapting {p.shot} step {p.step}/{p.steps}" if p.stage == "adapting" and p.shot else p.stage
            eta = p.eta_s
            if eta is None and p.frames_total and p.fps > 0 and p.stage != "adapting":
                eta = (p.frames_total - p.frames_done) / p.fps
            if p.frames_total:
                bar = "#" * int(min(1.0, p.frames_done / p.frames_total) * 30)
                self._text = (f"{self.label}{stage} [{bar:<30}] {p.frames_done}/{p.frames_total} frames "
                              f"{p.fps:5.1f} fps ETA {_clock(eta) if eta is not None else '-:--:--'}")
            else:
                self._text = f"{self.label}{stage} {p.frames_done} frames {p.fps:5.1f} fps"
            self._draw()

    def _draw(self) -> None:
        sys.stderr.write("\r\x1b[K" + self._text)
        sys.stderr.flush()

    def clear(self) -> None:
        """Erase the bar line (before a log record is written)."""
        if self.enabled and self._text:
            sys.stderr.write("\r\x1b[K")

    def redraw(self) -> None:
        if self.enabled and self._text:
            self._draw()

    def close(self) -> None:
        if ProgressBar.active is self:
            ProgressBar.active = None
        if self.enabled and self._text:
            sys.stderr.write("\n")
            sys.stderr.flush()


class BarAwareHandler(logging.StreamHandler):
    """Writes log records above the progress bar: clear the bar line, write the record, redraw."""

    def emit(self, record: logging.LogRecord) -> None:
        bar = ProgressBar.active
        if bar is None:
            super().emit(record)
            return
        with bar._lock:
            bar.clear()
            super().emit(record)
            bar.redraw()


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _add_model_args(p: argparse.ArgumentParser) -> None:
    """The options every frame-processing subcommand shares, in --help groups (`vsrft.options`)."""
    from vsrft import options

    options.add_arguments(p)


def _matrix_arg(text: str) -> int:
    """--matrix: a name or an H.273 (AVColorSpace) number that the YUV <-> RGB conversion supports."""
    from vsrft.options import MATRICES

    value = MATRICES.get(text.lower()) if not text.isdigit() else int(text)
    if value not in MATRICES.values():
        raise argparse.ArgumentTypeError(f"unsupported matrix {text!r} (use {', '.join(MATRICES)} or 1, 4-7, 9, 10)")
    return value


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are bad input too: one line on stderr, exit code 2 (subcommand parsers inherit this)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"vsrft: error: {message} (see `{self.prog} --help`)\n")


def _encoder_opt(text: str) -> tuple[str, str]:
    """--encoder-opt KEY=VALUE (the value may hold further '=' and ':', as x264-params does)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip().lstrip("-"), value


def encoding_args(args: argparse.Namespace) -> dict:
    """enhance()'s encoding keywords from the command line: crf 18 unless a bitrate is asked for."""
    return {"codec": args.codec, "crf": 18 if args.crf is None and args.bitrate is None else args.crf,
            "bitrate": args.bitrate, "preset": args.preset, "pix_fmt": args.pix_fmt,
            "encoder_options": dict(args.encoder_opt)}


def build_parser() -> argparse.ArgumentParser:
    from vsrft import __version__

    parser = _Parser(prog="vsrft", description="Video super-resolution that corrects itself on the video it is given.")
    parser.add_argument("--version", action="version", version=f"vsrft {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details (model, provider, stage times)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar or info messages")
    # -v/-q are also accepted after the subcommand (`vsrft enhance a.mp4 b.mp4 -q`); SUPPRESS keeps
    # a subcommand's parser from resetting what was given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log details (model, provider, stage times)")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bar or info messages")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser = sub.add_parser
    sub.add_parser = lambda *a, **k: add_parser(*a, parents=[common], **k)   # type: ignore[method-assign]

    p = sub.add_parser("enhance", help="upscale a video file into another")
    io = p.add_argument_group("input/output and encoding")
    io.add_argument("input")
    io.add_argument("output")
    _add_model_args(p)
    p = io      # the encoding options join the input/output group
    p.add_argument("--codec", default=None,
                   help="video encoder (any PyAV/FFmpeg encoder; ffv1 for lossless); default from the output's "
                        "extension: libx264 (.mp4, .mkv, .mov, .avi, ...), libvpx-vp9 for .webm")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--crf", type=float, default=None,
                      help="constant rate factor for x264/x265/vp9/av1 (default 18; 0 = lossless x264)")
    rate.add_argument("--bitrate", default=None, metavar="RATE",
                      help="target bitrate instead of a constant rate factor, e.g. 2M or 800k (bits/s)")
    p.add_argument("--preset", default="veryfast", help="encoder preset (x264/x265/svt-av1)")
    p.add_argument("--encoder-opt", action="append", default=[], metavar="KEY=VALUE", type=_encoder_opt,
                   help="an option for the encoder, as ffmpeg's -KEY VALUE (repeatable), e.g. tune=film, "
                        "x264-params=keyint=48, g=48; an option the encoder does not have is an error")
    p.add_argument("--pix-fmt", default=None, help="output pixel format (default yuv420p, yuv444p for odd sizes; yuv420p10le for 10-bit input)")
    p.add_argument("--resume", action="store_true",
                   help="a resumable job: checkpoint finished segments beside the output and, if an earlier run "
                        "of the same command was interrupted, continue from its last finished segment")
    p = sub.choices["enhance"]
    p.set_defaults(func=cmd_enhance)

    p = sub.add_parser("pipe", help="filter YUV4MPEG2 from stdin to stdout (for ffmpeg pipelines)",
                       description="Reads YUV4MPEG2 (ffmpeg -f yuv4mpegpipe -) on stdin, writes upscaled YUV4MPEG2 "
                                   "on stdout. Example: ffmpeg -i in.mp4 -f yuv4mpegpipe - | vsrft pipe --scale 4 | "
                                   "ffmpeg -i - -i in.mp4 -map 0:v -map 1:a? -c:a copy out.mp4")
    _add_model_args(p)
    p.add_argument("--size", default=None, metavar="WxH", help="read raw rgb24 frames of this size instead of YUV4MPEG2 "
                   "(and write raw rgb24)")
    p.add_argument("--rate", default="25", help="frame rate of raw rgb24 input (default 25)")
    p.add_argument("--matrix", type=_matrix_arg, default=None, metavar="M",
                   help="YUV matrix of the YUV4MPEG2 input (bt709, bt601, bt2020, or an H.273 number); "
                        "default: BT.709 from 720 lines up, else BT.601")
    p.set_defaults(func=cmd_pipe)

    p = sub.add_parser("degrade", help="make LR test footage with exactly the engine's operator A")
    p.add_argument("input", help="high-resolution (ground-truth) video")
    p.add_argument("output")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--blur", type=float, default=0.0, metavar="SIGMA", help="Gaussian blur (HR pixels) before downsampling")
    p.add_argument("--codec", default=None, help="video encoder; default libx264 (libvpx-vp9 for .webm)")
    p.add_argument("--crf", type=float, default=0, help="default 0: lossless x264, so only A degrades the footage")
    p.add_argument("--preset", default="veryfast")
    p.add_argument("--pix-fmt", default="yuv444p", help="default yuv444p: no chroma subsampling on top of A")
    p.set_defaults(func=cmd_degrade)

    p = sub.add_parser("eval", help="full-reference metrics of a video (or image folder) against ground truth")
    p.add_argument("output", help="the upscaled video or image folder")
    p.add_argument("--reference", required=True, help="the ground truth, same size and frame count")
    p.add_argument("--scale", type=int, default=4, help="border of this many pixels is cropped for PSNR/SSIM")
    p.add_argument("--input", default=None, help="the LR input: adds LR consistency PSNR(A x, y) (no reference needed)")
    p.add_argument("--blur", type=float, default=0.0, help="blur of A for the LR consistency check")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    p.add_argument("--json", action="store_true", help="print JSON (with per-frame values) instead of a table")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="side-by-side crops (input / bicubic / base / adapted [/ reference]) as PNG, "
                                         "a side-by-side video, and the adaptation curves of a --report file")
    p.add_argument("input", help="the LR video")
    p.add_argument("--out", required=True, help="folder for compare.png, compare.mp4, adaptation.png")
    _add_model_args(p)
    p.add_argument("--reference", default=None, help="ground-truth HR video: adds a panel")
    p.add_argument("--frame", type=int, default=None, help="frame to show (default: the middle of the clip)")
    p.add_argument("--crop", default=None, metavar="X,Y,W,H", help="HR crop to zoom (default: a detailed region)")
    p.add_argument("--frames", type=int, default=48, help="length of the side-by-side video")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("models", help="list the built-in models")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train", help="train a model from folders of photos and/or clips")
    p.add_argument("data", nargs="*",
                   help="folders (or files) of photos and videos (default: the data folder's photos/: "
                        "$VSRFT_DATA/photos, else ~/.cache/vsrft/data/photos; `python benchmarks/data.py` makes it)")
    p.add_argument("--out", required=True, help="checkpoint to write (a .state.pt beside it allows --resume)")
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--blocks", type=int, default=6)
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--minutes", type=float, default=0.0, help="wall-clock budget (the LR schedule follows it)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr-patch", type=int, default=48)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--gan-weight", type=float, default=0.0, help="> 0 adds the adversarial loss (GAN model)")
    p.add_argument("--init", default=None, help="start from this model (name or checkpoint)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--log-every", type=int, default=100)
    p.set_defaults(func=cmd_train)
    return parser


def make_enhancer(args: argparse.Namespace):
    """The Enhancer every frame-processing subcommand shares, built from the common options."""
    from vsrft import options

    enhancer = options.make_enhancer(options.from_namespace(args))
    _check_input_filter(enhancer)
    return enhancer


def _check_input_filter(enhancer) -> None:
    """A saved model adapted behind the input deblur expects it again: say so when it is missing."""
    wanted = enhancer.network.info.meta.get("input_filter")
    have = enhancer.network.input_filter
    if wanted and (have is None or len(have) != len(wanted) or max(abs(a - b) for a, b in zip(have, wanted)) > 1e-6):
        blur = (enhancer.network.info.meta.get("degradation") or {}).get("blur_sigma")
        logging.getLogger("vsrft").warning(
            "model %s was adapted behind the input deblur of --blur %s; without the same --blur its output differs",
            enhancer.network.info.name, blur)


def write_outputs(args: argparse.Namespace, enhancer) -> None:
    if args.report:
        Path(args.report).write_text(json.dumps(enhancer.report(), indent=2, default=str))
    if args.save_adapted:
        manifest = enhancer.save_adapted(args.save_adapted)
        logging.getLogger("vsrft").info("adapted models and their shots: %s", manifest)


def check_output_paths(args: argparse.Namespace) -> None:
    """--report and --save-adapted are written after the run: find a path that cannot be written now,
    before the work (one line, exit 2), not after an hour of it."""
    import tempfile

    for path, what, folder in ((args.report, "--report", False), (args.save_adapted, "--save-adapted", True)):
        if not path:
            continue
        p = Path(path)
        if folder:
            if p.exists() and not p.is_dir():
                raise VsrftError(f"{what} {path} exists and is not a folder")
            parent = p
            while not parent.exists() and parent != parent.parent:   # it is made with its parents
                parent = parent.parent
        else:
            if p.is_dir():
                raise VsrftError(f"{what} {path} is a folder; give a file name")
            parent = p.parent
            if not parent.is_dir():
                raise VsrftError(f"{what} {path}: folder {parent} does not exist")
        try:
            tempfile.TemporaryFile(dir=parent).close()
        except OSError as exc:
            raise VsrftError(f"{what} {path} cannot be written: {exc.strerror or exc}") from None


def cmd_enhance(args: argparse.Namespace) -> int:
    from vsrft.io.encode import preflight

    # fail on a bad input, output or encoder setting before importing torch and loading the model
    check_output_paths(args)
    encoding = encoding_args(args)
    preflight(args.input, args.output, scale=args.scale, resume=args.resume, **encoding)
    from vsrft.engine import enhance
    enhancer = make_enhancer(args)
    bar = ProgressBar(enabled=not args.quiet and sys.stderr.isatty())
    try:
        stats = enhance(args.input, args.output, **encoding, progress=bar, enhancer=enhancer, resume=args.resume)
    except KeyboardInterrupt:        # Ctrl-C, SIGTERM, SIGHUP (an error stays one line)
        if args.resume:
            logging.getLogger("vsrft").warning("stopped: run the same command again to continue where it stopped")
        raise
    finally:
        bar.close()
    write_outputs(args, enhancer)
    logging.getLogger("vsrft").info(
        "%d frames on %s in %.1f s (%.1f fps); stage seconds: %s", stats.frames, stats.provider,
        stats.seconds["total"], stats.frames / max(stats.seconds["total"], 1e-9),
        ", ".join(f"{k} {v:.1f}" for k, v in stats.seconds.items() if k != "total"))
    return 0


def cmd_pipe(args: argparse.Namespace) -> int:
    from fractions import Fraction

    from vsrft.engine import Progress
    from vsrft.io import y4m

    check_output_paths(args)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    if args.size:
        try:
            width, height = (int(v) for v in args.size.lower().split("x"))
            rate = Fraction(args.rate)
        except ValueError:
            raise VsrftError(f"--size must be WxH and --rate a number, got {args.size!r} and {args.rate!r}") from None
        frames = y4m.read_raw_rgb(stdin, width, height, rate)
        header = None
    else:
        header = y4m.read_header(stdin)
        if args.matrix is not None:
            header.matrix = args.matrix
        frames = y4m.read_frames(stdin, header)
    enhancer = make_enhancer(args)
    bar = ProgressBar(enabled=not args.quiet and sys.stderr.isatty())
    out_header = None
    start = time.monotonic()
    try:
        for n, frame in enumerate(enhancer.process(frames), 1):
            if header is None:
                stdout.write(frame.rgb.tobytes())
            else:
                if out_header is None:
                    out_header = y4m.output_header(header, frame.rgb.shape[1], frame.rgb.shape[0])
                    y4m.write_header(stdout, out_header)
                y4m.write_frame(stdout, frame.rgb, out_header, header.colour)
            bar(Progress(n, None, time.monotonic() - start))
        stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        logging.getLogger("vsrft").info("output pipe closed; stopping")
        return 0
    except OSError as exc:          # stdout on a full disk (> /dev/full), a device error
        _silence_stdout()
        raise VsrftError(f"writing the output to stdout failed: {exc.strerror or exc}") from None
    finally:
        bar.close()
    write_outputs(args, enhancer)
    return 0


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush stays quiet."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def cmd_degrade(args: argparse.Namespace) -> int:
    import numpy as np

    from vsrft.degradation import Degradation, degrade
    from vsrft.frame import Frame
    from vsrft.io.decode import VideoSource
    from vsrft.io.encode import VideoSink

    op = Degradation(scale=args.scale, blur_sigma=args.blur)
    with VideoSource(args.input) as src:
        h, w = src.height // op.scale * op.scale, src.width // op.scale * op.scale
        if (h, w) != (src.height, src.width):
            logging.getLogger("vsrft").warning("cropping %dx%d to %dx%d (a multiple of the scale)", src.width, src.height, w, h)
        sink = VideoSink(args.output, src, w // op.scale, h // op.scale, codec=args.codec, crf=args.crf,
                         preset=args.preset, pix_fmt=args.pix_fmt)
        try:
            for item in src.read():
                if isinstance(item, Frame):
                    lr = degrade(item.rgb[:h, :w].astype(np.float32), op)
                    sink.write(item.with_pixels(np.clip(np.rint(lr), 0, 255).astype(np.uint8)))
                else:
                    sink.mux(item)
            sink.close()
        except BaseException:
            sink.abort()
            raise
    logging.getLogger("vsrft").info("%s: %d frames, %s", args.output, sink.frames_written, op)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import math

    import numpy as np

    from vsrft.io.frames import read_all
    from vsrft import metrics

    if not args.no_lpips and not metrics.lpips_available():   # before reading any video
        raise VsrftError(f"LPIPS needs its weights: run `{metrics.PIP_INSTALL_LPIPS}`, or skip LPIPS with --no-lpips")
    out, ref = read_all(args.output), read_all(args.reference)
    if len(out) != len(ref):
        raise VsrftError(f"{args.output} has {len(out)} frames but {args.reference} has {len(ref)}")
    if out[0].shape != ref[0].shape:
        raise VsrftError(f"{args.output} is {out[0].shape[1]}x{out[0].shape[0]} but {args.reference} is "
                         f"{ref[0].shape[1]}x{ref[0].shape[0]}")
    per_frame: dict[str, list[float]] = {
        "y_psnr": [metrics.psnr_y(o, r, args.scale) for o, r in zip(out, ref)],
        "ssim": [metrics.ssim_y(o, r, args.scale) for o, r in zip(out, ref)],
    }
    if not args.no_lpips:
        model = metrics.LPIPS()
        try:
            per_frame["lpips"] = [model(o, r) for o, r in zip(out, ref)]
        except VsrftError as exc:      # weights present but unreadable
            raise VsrftError(f"{exc}; or skip LPIPS with --no-lpips") from None
    summary = {k: float(np.mean(v)) for k, v in per_frame.items()}
    if len(out) > 1:
        summary["tof"] = metrics.tof(out, ref)
        summary["warping_error_gap"] = metrics.warping_error_gap(out, ref)
        summary["tmse"] = metrics.tmse(out, ref)
    if args.input:
        from vsrft.degradation import Degradation, degrade

        lr = read_all(args.input)
        if len(lr) != len(out):
            raise VsrftError(f"{args.input} has {len(lr)} frames but {args.output} has {len(out)}")
        op = Degradation(scale=args.scale, blur_sigma=args.blur)
        consistency = []
        for o, y in zip(out, lr):
            a = degrade(o.astype(np.float32), op)
            if a.shape != y.shape:
                raise VsrftError(f"A(output) is {a.shape[1]}x{a.shape[0]} but the input is {y.shape[1]}x{y.shape[0]}: "
                                 "check --scale")
            consistency.append(metrics.psnr_rgb(np.clip(np.rint(a), 0, 255), y))
        per_frame["lr_consistency_psnr"] = consistency
        summary["lr_consistency_psnr"] = float(np.mean(consistency))
        summary["flicker"] = metrics.flicker(out, lr)
    if args.json:
        clean = lambda v: None if isinstance(v, float) and math.isinf(v) else v  # noqa: E731
        print(json.dumps({"frames": len(out), "mean": {k: clean(v) for k, v in summary.items()},
                          "per_frame": {k: [clean(x) for x in v] for k, v in per_frame.items()}}, indent=1))
    else:
        print(f"{len(out)} frames")
        for k, v in summary.items():
            print(f"{k:22s} {v:.4f}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from vsrft import compare
    from vsrft.engine import Enhancer
    from vsrft.io.frames import read_all

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    lr = read_all(args.input)
    n = args.frame if args.frame is not None else len(lr) // 2
    if not 0 <= n < len(lr):
        raise VsrftError(f"--frame {n} is outside the clip's {len(lr)} frames")
    # the network as trained: not adapted, and told nothing of the blur (no input deblur either)
    args_base = argparse.Namespace(**{**vars(args), "adapt": False, "input_deblur": False, "report": None,
                                      "save_adapted": None})
    base = list(make_enhancer(args_base).process(lr))
    adapted_enh: Enhancer = make_enhancer(args)
    adapted = list(adapted_enh.process(lr))
    s = args.scale
    h, w = lr[0].shape[:2]
    bicubic = [cv2.resize(f, (w * s, h * s), interpolation=cv2.INTER_CUBIC) for f in lr]
    nearest = cv2.resize(lr[n], (w * s, h * s), interpolation=cv2.INTER_NEAREST)
    if args.crop:
        box = tuple(int(v) for v in args.crop.split(","))
    else:
        box = compare.detailed_box(base[n])
    kept = args.adapt and not any(r.accepted for r in adapted_enh.reports)
    label = " + ".join([*(["input deblur"] if adapted_enh.network.input_filter is not None else []),
                        *(["base kept" if kept else "adapted"] if args.adapt else []),
                        *(["projection"] if adapted_enh.project else [])]) or "network"
    panels = [("input (nearest)", nearest), ("bicubic", bicubic[n]), ("base network", base[n]), (label, adapted[n])]
    if args.reference:
        ref = read_all(args.reference)
        if len(ref) != len(lr) or ref[n].shape != base[n].shape:
            raise VsrftError("--reference must have the input's frame count and the upscaled size")
        panels.append(("ground truth", ref[n]))
    compare.save_png(out_dir / "compare.png", compare.grid([(k, compare.crop_zoom(v, box)) for k, v in panels]))
    import av

    m = min(args.frames, len(lr))
    with av.open(str(out_dir / "compare.mp4"), "w") as c:
        st = c.add_stream("libx264", rate=24)
        st.width, st.height, st.pix_fmt = 2 * w * s + (2 * w * s) % 2, h * s + (h * s) % 2, "yuv420p"
        st.options = {"crf": "16"}
        for i in range(m):
            both = np.concatenate([bicubic[i], adapted[i]], axis=1)      # left bicubic, right vsrft
            both = np.pad(both, ((0, st.height - both.shape[0]), (0, st.width - both.shape[1]), (0, 0)))
            for p in st.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(both), format="rgb24")):
                c.mux(p)
        for p in st.encode(None):
            c.mux(p)
    curves = {}
    for r in adapted_enh.reports:
        if r.losses:
            curves[f"frame {r.frame_index}"] = [10 * np.log10(1 / max(v, 1e-12)) for v in r.losses]
    if curves:
        compare.save_png(out_dir / "adaptation.png", compare.line_plot(curves, "adaptation loss per step, -10 log10(loss) (dB)"))
    Path(out_dir / "report.json").write_text(json.dumps(adapted_enh.report(), indent=2, default=str))
    logging.getLogger("vsrft").info("wrote %s (crop %s of frame %d)", out_dir, box, n)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from vsrft.models import checkpoint

    for name in checkpoint.builtin_names():
        _, info = checkpoint.load(name)
        cfg = info.config
        print(f"{name:12s} x{cfg['scale']} {cfg['arch']} {cfg.get('channels')}ch x {cfg.get('blocks')} blocks, "
              f"{cfg.get('frames', 1)}-frame; {info.meta.get('description', '')}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from vsrft.evaluation import data_line, photos_dir
    from vsrft.train.loop import TrainConfig, train

    data = args.data or [str(photos_dir())]
    if not args.data and not Path(data[0]).is_dir():
        raise VsrftError(f"no training data given and the default folder {data[0]} does not exist: "
                         "make it with `python benchmarks/data.py` (or set VSRFT_DATA, or name folders)")
    cfg = TrainConfig(data=data, out=args.out, channels=args.channels, blocks=args.blocks, steps=args.steps,
                      minutes=args.minutes, batch=args.batch, lr_patch=args.lr_patch, lr=args.lr,
                      gan_weight=args.gan_weight, init=args.init, seed=args.seed, threads=args.threads,
                      resume=args.resume, log_every=args.log_every,
                      meta={"command": "vsrft " + " ".join(sys.argv[1:]), "data": data_line(photos=data[0])})
    try:
        train(cfg)
    except ValueError as exc:      # no usable media, patch too large for the images
        raise VsrftError(str(exc)) from None
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = getattr(args, "quiet", False)
    handler = BarAwareHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("vsrft: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else (logging.WARNING if quiet else logging.INFO),
                        handlers=[handler])
    for noisy in ("PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    previous = _stop_on_signals()
    try:
        return args.func(args)
    except VsrftError as exc:
        print(f"vsrft: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        how = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
        print(f"vsrft: {how}; no output was written", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:
        return 1
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP (systemd, docker, `timeout`, a closed terminal): handled as Ctrl-C is, so the
    run stops cleanly (temporary output removed, a --resume job kept) and exits with 128 + the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop_on_signals() -> dict:
    """Install the handlers (main thread only); returns the previous ones."""
    def stop(signum: int, frame) -> None:
        for s in (signal.SIGTERM, signal.SIGHUP):   # one stop: a second signal must not break the cleanup
            signal.signal(s, signal.SIG_IGN)
        raise Stopped(signum)

    if threading.current_thread() is not threading.main_thread():
        return {}
    _fork_with_default_signals()
    return {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}


_saved_actions: dict = {}
_sigaction = None


def _fork_with_default_signals() -> None:
    """A process a library forks (OpenVINO's telemetry does, from a thread) gets the default SIGTERM and
    SIGHUP: such a child can hang in a lock before it runs any Python, its parent ends it with SIGTERM at
    exit, and a Python handler never runs there, so the parent waited for it forever. The C-level actions
    are set to default around each fork and restored exactly (sigaction) in the parent."""
    global _sigaction
    if _sigaction is not None:
        return
    import ctypes

    class SigAction(ctypes.Structure):       # glibc's struct sigaction (x86-64, aarch64)
        _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * 16), ("flags", ctypes.c_int),
                    ("restorer", ctypes.c_void_p)]

    libc = ctypes.CDLL(None, use_errno=True)
    _sigaction = libc.sigaction
    _sigaction.argtypes = (ctypes.c_int, ctypes.POINTER(SigAction), ctypes.POINTER(SigAction))
    default = SigAction()                    # handler 0: SIG_DFL, empty mask, no flags

    def before() -> None:
        for s in (signal.SIGTERM, signal.SIGHUP):
            old = SigAction()
            if _sigaction(int(s), ctypes.byref(default), ctypes.byref(old)) == 0:
                _saved_actions[s] = old

    def after_in_parent() -> None:
        for s, old in list(_saved_actions.items()):
            _sigaction(int(s), ctypes.byref(old), None)
        _saved_actions.clear()

    os.register_at_fork(before=before, after_in_parent=after_in_parent,
                        after_in_child=lambda: _saved_actions.clear())


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
