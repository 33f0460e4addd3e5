"""`Enhancer`: frames in, upscaled frames out, in order, one for one.

Every entry point (CLI, pipe filter, Python API, plugins) goes through here:
cut detection -> 5-frame windows -> network (ONNX Runtime) [-> adaptation] -> frames.
`enhance()` wires a file source and a file sink around it with decode, inference and
encode on separate threads.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import av
import numpy as np

from vsrft.errors import VsrftError
from vsrft.frame import Frame
from vsrft.network import Network
from vsrft.windows import CutDetector, WindowAssembler

log = logging.getLogger(__name__)

DEFAULT_MODEL = "vsrft-mse"


@dataclass
class Progress:
    """What a progress callback receives after each output frame."""

    frames_done: int
    frames_total: int | None
    elapsed_s: float
    stage: str = "upscaling"

    @property
    def fps(self) -> float:
        return self.frames_done / self.elapsed_s if self.elapsed_s > 0 else 0.0


ProgressCallback = Callable[[Progress], None]


@dataclass
class Stats:
    """Seconds spent per stage, frame and cut counts: filled in by a run, read by benchmarks."""

    frames: int = 0
    cuts: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"decode": 0.0, "windows": 0.0, "inference": 0.0,
                                                                "encode": 0.0, "adaptation": 0.0})
    provider: str = ""


class Enhancer:
    """Upscales a stream of frames with a 5-frame VSR network.

    `process(frames)` accepts H x W x 3 uint8 RGB arrays, `av.VideoFrame`s or `vsrft.Frame`s
    and yields the same kind, upscaled, with at most two frames of latency.
    """

    def __init__(self, scale: int = 4, model: str = DEFAULT_MODEL, adapt: bool = False,
                 blur: float | None = None, *, tile: int = 512, providers: list[str] | None = None,
                 threads: int = 0) -> None:
        if adapt:
            raise VsrftError("test-time adaptation is not available yet; run with adapt=False (--no-adapt)")
        self.scale = scale
        self.network = Network.load(model, scale, providers=providers, threads=threads, tile=tile)
        self.stats = Stats(provider=self.network.runtime.provider)

    @property
    def provider(self) -> str:
        return self.network.runtime.provider

    def process(self, frames: Iterable[Any]) -> Iterator[Any]:
        cuts = CutDetector()
        windows: WindowAssembler[Frame] = WindowAssembler()
        size: tuple[int, int] | None = None
        kind: type | None = None
        for i, item in enumerate(frames):
            frame, item_kind = _as_frame(item, i)
            if kind is None:
                kind, size = item_kind, frame.rgb.shape[:2]
            elif frame.rgb.shape[:2] != size:
                raise ValueError(f"frame {i} is {frame.rgb.shape[1]}x{frame.rgb.shape[0]} but the stream started at "
                                 f"{size[1]}x{size[0]}: all frames of a stream must have one size")
            t0 = time.perf_counter()
            cut = cuts.is_cut(frame.rgb, frame.key)
            self.stats.cuts += cut
            self.stats.seconds["windows"] += time.perf_counter() - t0
            for w in windows.push(frame, cut):
                yield _like(self._upscale(w.items), kind)
        for w in windows.flush():
            yield _like(self._upscale(w.items), kind)

    def _upscale(self, window: list[Frame]) -> Frame:
        t0 = time.perf_counter()
        centre = window[len(window) // 2]
        hr = self.network.upscale([f.rgb for f in window])
        self.stats.seconds["inference"] += time.perf_counter() - t0
        self.stats.frames += 1
        return centre.with_pixels(hr)


def _as_frame(item: Any, index: int) -> tuple[Frame, type]:
    if isinstance(item, Frame):
        _check_rgb(item.rgb, index)
        return item, Frame
    if isinstance(item, av.VideoFrame):
        rgb = item.to_ndarray(format="rgb24")
        return Frame(rgb=rgb, index=index, pts=item.pts, time_base=item.time_base, key=bool(item.key_frame)), av.VideoFrame
    if isinstance(item, np.ndarray):
        _check_rgb(item, index)
        return Frame(rgb=item, index=index), np.ndarray
    raise ValueError(f"frame {index} is a {type(item).__name__}; expected an HxWx3 uint8 numpy array, "
                     "an av.VideoFrame or a vsrft.Frame")


def _check_rgb(rgb: np.ndarray, index: int) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
        shape = getattr(rgb, "shape", None)
        raise ValueError(f"frame {index} has shape {shape}; expected H x W x 3 (RGB)")
    if rgb.dtype != np.uint8:
        raise ValueError(f"frame {index} has dtype {rgb.dtype}; expected uint8")
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"frame {index} is empty")


def _like(frame: Frame, kind: type) -> Any:
    if kind is np.ndarray:
        return frame.rgb
    if kind is av.VideoFrame:
        vf = av.VideoFrame.from_ndarray(frame.rgb, format="rgb24")
        vf.pts, vf.time_base = frame.pts, frame.time_base
        return vf
    return frame


_END = object()


class _Worker(threading.Thread):
    """A pipeline stage on its own thread; its exception is re-raised by `join_checked`."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._target_fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc


def enhance(src: str | Path, dst: str | Path, *, scale: int = 4, model: str = DEFAULT_MODEL, adapt: bool = False,
            codec: str = "libx264", crf: float | None = 18, preset: str | None = "veryfast",
            pix_fmt: str | None = None, tile: int = 512, providers: list[str] | None = None,
            progress: ProgressCallback | None = None, enhancer: Enhancer | None = None) -> Stats:
    """Upscale a video file into another: decode, inference and encode run concurrently.

    The output appears at `dst` only when complete (written to a temporary file, renamed).
    """
    from vsrft.io.decode import VideoSource
    from vsrft.io.encode import VideoSink

    source = VideoSource(src)
    try:
        enh = enhancer or Enhancer(scale=scale, model=model, adapt=adapt, tile=tile, providers=providers)
        sink = VideoSink(dst, source, source.width * enh.scale, source.height * enh.scale,
                         codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt)
    except BaseException:
        source.close()
        raise
    stats = enh.stats
    frames_q: queue.Queue = queue.Queue(maxsize=8)
    packets_q: queue.Queue = queue.Queue()
    out_q: queue.Queue = queue.Queue(maxsize=8)
    stop = threading.Event()
    total = source.frame_count_hint
    t_start = time.perf_counter()

    def put(q: queue.Queue, item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def decode() -> None:
        try:
            t0 = time.perf_counter()
            for item in source.read():
                if isinstance(item, Frame):
                    stats.seconds["decode"] += time.perf_counter() - t0
                    if not put(frames_q, item):
                        return
                    t0 = time.perf_counter()
                else:
                    packets_q.put(item)
        finally:
            put(frames_q, _END)

    def drain_packets() -> None:
        while True:
            try:
                sink.mux(packets_q.get_nowait())
            except queue.Empty:
                return

    def encode() -> None:
        done = 0
        while True:
            item = out_q.get()
            if item is _END:
                break
            t0 = time.perf_counter()
            drain_packets()
            sink.write(item)
            stats.seconds["encode"] += time.perf_counter() - t0
            done += 1
            if progress:
                progress(Progress(done, total, time.perf_counter() - t_start))

    def frames_in() -> Iterator[Frame]:
        while True:
            item = frames_q.get()
            if item is _END:
                return
            yield item

    decoder = _Worker(decode, "vsrft-decode")
    encoder = _Worker(encode, "vsrft-encode")
    decoder.start()
    encoder.start()
    ok = False
    n_in = 0
    try:
        for hr in enh.process(_counting(frames_in(), lambda: None)):
            if encoder.error or not put(out_q, hr):
                break
        put(out_q, _END)
        encoder.join()
        decoder.join()
        for w in (decoder, encoder):
            if w.error:
                raise w.error
        drain_packets()
        n_in = stats.frames
        if sink.frames_written != n_in:
            raise VsrftError(f"internal error: {n_in} frames upscaled but {sink.frames_written} encoded")
        sink.close()
        ok = True
    finally:
        stop.set()
        if not ok:
            sink.abort()
        decoder.join(timeout=5)
        encoder.join(timeout=5)
        source.close()
    stats.seconds["total"] = time.perf_counter() - t_start
    return stats


def _counting(it: Iterator[Frame], _: Callable[[], None]) -> Iterator[Frame]:
    yield from it
