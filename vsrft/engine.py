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
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import av
import numpy as np

import torch

from vsrft.adapt import AdaptConfig, AdaptResult, KeyframePolicy, finetune
from vsrft.degradation import Degradation, project
from vsrft.errors import VsrftError
from vsrft.frame import Frame
from vsrft.network import Network, to_uint8
from vsrft.windows import CutDetector, Window, WindowAssembler

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
    """Upscales a stream of frames with a 5-frame VSR network that adapts itself to the stream.

    `process(frames)` accepts H x W x 3 uint8 RGB arrays, `av.VideoFrame`s or `vsrft.Frame`s
    and yields the same kind, upscaled, in order, one for one. Latency is two frames, plus
    `adapt_config.frames` at each keyframe when adapting (the shot's first frames are held
    back until the weights for the shot are chosen, so a shot never changes weights midway
    unless `adapt_every` asks for it; then old and new outputs are blended over
    `blend_frames`).

    State: the current weights, the adaptation reports, the position in the stream.
    """

    def __init__(self, scale: int = 4, model: str = DEFAULT_MODEL, adapt: bool = True,
                 blur: float | None = None, *, kernel: str | None = None, project: bool = False,
                 adapt_config: AdaptConfig | None = None, adapt_every: float | None = None,
                 warm_start: bool = False, blend_frames: int = 8, tile: int = 512,
                 providers: list[str] | None = None, threads: int = 0,
                 on_adapt: Callable[[AdaptResult], None] | None = None) -> None:
        self.scale = scale
        self.network = Network.load(model, scale, providers=providers, threads=threads, tile=tile)
        if kernel is not None:
            self.degradation = Degradation.from_kernel_file(kernel, scale)
        else:
            self.degradation = Degradation(scale=scale, blur_sigma=float(blur or 0.0))
        if project and self.degradation.kernel is not None:
            raise VsrftError("--project needs a Gaussian or no blur; it does not support --kernel")
        self.project = project
        self.adapt = adapt
        self.adapt_config = adapt_config or AdaptConfig()
        self.policy = KeyframePolicy(every_s=adapt_every)
        self.warm_start = warm_start
        self.blend_frames = blend_frames
        self.on_adapt = on_adapt
        self.reports: list[AdaptResult] = []
        self.stats = Stats(provider=self.network.runtime.provider)
        self._pretrained = {k: v.detach().clone() for k, v in self.network.module.state_dict().items()}
        self._current = self._pretrained
        self._pending: list[Window[Frame]] = []
        self._blend: tuple[object, int] | None = None     # (old session, frames left)
        self.on_stage: Callable[[str], None] | None = None  # told "adapting" / "upscaling"

    @property
    def provider(self) -> str:
        return self.network.runtime.provider

    @property
    def weights(self) -> dict[str, torch.Tensor]:
        """The weights in use now (the adapted ones after an accepted adaptation)."""
        return self._current

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
                for out in self._route(w):
                    yield _like(out, kind)
        for w in windows.flush():
            for out in self._route(w):
                yield _like(out, kind)
        for out in self._drain():
            yield _like(out, kind)

    def _route(self, w: Window[Frame]) -> Iterator[Frame]:
        """Infer now, or hold the window back while collecting a keyframe's adaptation data."""
        if not self.adapt:
            yield self._upscale(w.items)
            return
        if self._pending and (w.shot_start or len(self._pending) >= self.adapt_config.frames):
            yield from self._drain()
        centre = w.centre
        if self.policy.should_adapt(centre.index, centre.time, w.shot_start):
            self._pending = [w]
        elif self._pending:
            self._pending.append(w)
        else:
            yield self._upscale(w.items)

    def _drain(self) -> Iterator[Frame]:
        pending, self._pending = self._pending, []
        if not pending:
            return
        self._adapt(pending)
        for w in pending:
            yield self._upscale(w.items)

    def _adapt(self, pending: list[Window[Frame]]) -> None:
        t0 = time.perf_counter()
        if self.on_stage:
            self.on_stage("adapting")
        key = pending[0]
        shot_start = key.shot_start
        start = self._current if (self.warm_start or not shot_start) else self._pretrained
        module = self.network.module
        module.load_state_dict(start)
        data = [self.network.stack([f.rgb for f in w.items]) for w in pending]
        state, result = finetune(module, data, self.degradation, self.network.info.scale, self.adapt_config,
                                 frame_index=key.centre.index, time_s=key.centre.time)
        new = state if state is not None else start
        if new is not self._current:
            old_session = self.network.runtime.session
            result.swap_seconds = self.network.swap(new)
            if not shot_start and self.blend_frames > 0:
                self._blend = (old_session, self.blend_frames)
            self._current = new
        log.info("adaptation at frame %d: %s in %.1f s (%d steps)", result.frame_index, result.reason,
                 result.seconds, result.steps)
        self.reports.append(result)
        self.stats.seconds["adaptation"] += time.perf_counter() - t0
        if self.on_adapt:
            self.on_adapt(result)
        if self.on_stage:
            self.on_stage("upscaling")

    def _upscale(self, window: list[Frame]) -> Frame:
        t0 = time.perf_counter()
        centre = window[len(window) // 2]
        rgbs = [f.rgb for f in window]
        hr = self.network.infer(rgbs)
        if self._blend is not None:
            old_session, left = self._blend
            alpha = np.float32(1 - left / (self.blend_frames + 1))
            hr = alpha * hr + (1 - alpha) * self.network.infer(rgbs, old_session)
            self._blend = (old_session, left - 1) if left > 1 else None
        if self.project:
            lr = centre.rgb.transpose(2, 0, 1).astype(np.float32) * np.float32(1 / 255)
            hr = project(hr, lr, self.degradation)
        out = to_uint8(hr)
        self.stats.seconds["inference"] += time.perf_counter() - t0
        self.stats.frames += 1
        return centre.with_pixels(out)

    def report(self) -> dict:
        """Everything a --report file holds: settings, every adaptation decision, stage times."""
        return {"model": self.network.info.name, "model_config": self.network.info.config, "scale": self.scale,
                "degradation": str(self.degradation), "degradation_json": self.degradation.to_json(),
                "adapt": self.adapt, "adapt_config": self.adapt_config.to_dict(),
                "adapt_every_s": self.policy.every_s, "project": self.project, "provider": self.provider,
                "frames": self.stats.frames, "cuts": self.stats.cuts, "seconds": dict(self.stats.seconds),
                "keyframes": [r.to_dict() for r in self.reports]}

    def save_adapted(self, folder: str | Path) -> Path:
        """Write the weights in use as a checkpoint and as ONNX, reusable with --model."""
        from vsrft.models import checkpoint

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        module = self.network.module
        module.load_state_dict(self._current)
        meta = {"adapted_from": self.network.info.name, "degradation": str(self.degradation),
                "degradation_json": self.degradation.to_json(), "reports": [r.to_dict() for r in self.reports]}
        path = folder / f"{self.network.info.name}-adapted.pt"
        checkpoint.save(path, module, self.network.info.config, meta)
        (folder / f"{self.network.info.name}-adapted.onnx").write_bytes(self.network.runtime.proto.SerializeToString())
        return path


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


def preflight(src: str | Path, dst: str | Path, *, scale: int = 4, codec: str = "libx264",
              crf: float | None = 18, preset: str | None = "veryfast", pix_fmt: str | None = None) -> None:
    """Check the input, the output path and the encoder settings before any model is loaded
    (see `vsrft.io.encode.preflight`), and the scale."""
    from vsrft.io import encode
    from vsrft.network import SUPPORTED_SCALES

    if scale not in SUPPORTED_SCALES:
        raise VsrftError(f"scale must be one of {', '.join(map(str, SUPPORTED_SCALES))}, got {scale}")
    encode.preflight(src, dst, scale=scale, codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt)


def enhance(src: str | Path, dst: str | Path, *, codec: str = "libx264", crf: float | None = 18,
            preset: str | None = "veryfast", pix_fmt: str | None = None,
            progress: ProgressCallback | None = None, enhancer: Enhancer | None = None, **options: Any) -> Stats:
    """Upscale a video file into another: decode, inference (and adaptation) and encode run concurrently.

    `options` are `Enhancer`'s (scale, model, adapt, blur, ...), or pass a ready `enhancer`.
    The output appears at `dst` only when complete (written to a temporary file, renamed).
    """
    from vsrft.io.decode import VideoSource
    from vsrft.io.encode import VideoSink

    if enhancer is None:
        preflight(src, dst, scale=int(options.get("scale", 4)), codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt)
    source = VideoSource(src)
    try:
        enh = enhancer or Enhancer(**options)
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

    def put(q: queue.Queue, item: object, consumer: threading.Thread | None = None) -> bool:
        # Gives up when the run is stopped or the consumer has died: a full queue must never hang the run.
        while not stop.is_set() and (consumer is None or consumer.is_alive()):
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
                    decoded[0] += 1
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

    done = [0]
    if progress:
        enh.on_stage = lambda stage: progress(Progress(done[0], total, time.perf_counter() - t_start, stage))

    def encode() -> None:
        while not stop.is_set():
            try:
                item = out_q.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _END:
                break
            t0 = time.perf_counter()
            drain_packets()
            sink.write(item)
            stats.seconds["encode"] += time.perf_counter() - t0
            done[0] += 1
            if progress:
                progress(Progress(done[0], total, time.perf_counter() - t_start))

    def frames_in() -> Iterator[Frame]:
        while True:
            item = frames_q.get()
            if item is _END:
                return
            yield item

    decoded = [0]
    decoder = _Worker(decode, "vsrft-decode")
    encoder = _Worker(encode, "vsrft-encode")
    decoder.start()
    encoder.start()
    ok = False
    try:
        for hr in enh.process(frames_in()):
            if not put(out_q, hr, encoder):
                break
        if encoder.error:   # raise now: the decoder may be blocked on a full queue until `stop` is set
            raise encoder.error
        put(out_q, _END, encoder)
        encoder.join()
        decoder.join()
        for w in (decoder, encoder):
            if w.error:
                raise w.error
        drain_packets()
        if not (decoded[0] == stats.frames == sink.frames_written):
            raise VsrftError(f"internal error: {decoded[0]} frames decoded, {stats.frames} upscaled, "
                             f"{sink.frames_written} encoded")
        sink.close()
        ok = True
    finally:
        stop.set()
        decoder.join(timeout=5)
        encoder.join(timeout=5)   # before abort(): the encoder thread may still be writing to the file
        if not ok:
            sink.abort()
        source.close()
    stats.seconds["total"] = time.perf_counter() - t_start
    return stats
