"""`Enhancer`: frames in, upscaled frames out, in order, one for one.

Every entry point (CLI, pipe filter, Python API, plugins) goes through here:
cut detection -> 5-frame windows -> network (ONNX Runtime) [-> adaptation] -> frames.
`enhance()` wires a file source and a file sink around it with decode, inference and
encode on separate threads.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import av
import numpy as np

import torch

from vsrft.adapt import AdaptConfig, AdaptResult, KeyframePolicy, TrainingWindow, finetune
from vsrft.adapt.motion import MOTION_RESOLUTION, chain_motions, motion_between, motion_view
from vsrft.degradation import Degradation, lr_deblur_taps, project
from vsrft.errors import VsrftError
from vsrft.frame import Frame
from vsrft.network import Network, as_float_chw, to_uint8, to_uint16
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
    shot: str = ""                   # while adapting: which shot ("shot at 0:03.4")
    step: int = 0                    # while adapting: fine-tuning steps done of `steps`
    steps: int = 0
    eta_s: float | None = None       # seconds left, pending adaptations included; None: not known yet

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
                                                                "encode": 0.0, "adaptation": 0.0,
                                                                "adaptation_wait": 0.0})
    provider: str = ""


@dataclass(eq=False)
class _Keyframe:
    """A keyframe's adaptation: the windows it learns from, then its outcome."""
    windows: list[Window[Frame]]
    shot_start: bool
    future: Future | None = None
    weights: dict[str, torch.Tensor] | None = None
    result: AdaptResult | None = None
    motion_seconds: float = 0.0     # estimating its frames' motion (on the inference thread)

    def __post_init__(self) -> None:
        self.index, self.time = self.windows[0].centre.index, self.windows[0].centre.time


@dataclass(frozen=True)
class Skipped:
    """In place of an output frame that a resumed job already has (see `Enhancer.skip_before`)."""
    frame: Frame


def _done(value: Any) -> Future:
    f: Future = Future()
    f.set_result(value)
    return f


class Enhancer:
    """Upscales a stream of frames with a 5-frame VSR network that adapts itself to the stream.

    `process(frames)` accepts H x W x 3 uint8 RGB arrays, `av.VideoFrame`s or `vsrft.Frame`s
    and yields the same kind, upscaled, in order, one for one. Latency is two frames without
    adaptation. With it, a shot's frames wait for the shot's weights (so a shot never changes
    weights midway unless `adapt_every` asks for it; then old and new outputs are blended over
    `blend_frames`): the adaptation runs in a background thread on the shot's first
    `adapt_config.frames` windows while up to `lookahead` windows are read ahead and the
    previous shot is still being inferred. That pays only when inference does not use the cores
    the fine-tuning needs, so `adapt_thread=None` (auto) runs it in the background when inference
    is on an accelerator and in line when it is on the CPU (on 2 cores the thread saved no wall
    time, halved the fine-tuning's speed and held more memory: docs/adaptation.md).
    `adapt_sync=True` adapts in line with the step budget only (never the clock), so the output
    is reproducible bit for bit. With a Gaussian `blur`, `input_deblur` first undoes its LR
    equivalent on the input frames (`lr_deblur_taps`), so that the network and its adaptation
    see the bicubic-only input it was trained on; the loss still compares with the frames as
    decoded.

    State: the current weights, the adaptation reports, the position in the stream.
    """

    # Progress hooks and bookkeeping (class defaults: set by `enhance()`, the CLI or a caller).
    on_adapt_step: Callable[[str, int, int], None] | None = None   # (shot label, steps done, step budget)
    keep_decisions: bool = False       # keep every shot's weights for `save_adapted` (memory: one state per shot)
    _decisions: list[tuple[AdaptResult, dict[str, torch.Tensor]]] | None = None
    _adapting: tuple[int, int, float] | None = None    # the running fine-tuning: (steps done, budget, start)
    _frames_in = 0
    _keyframes_started = 0
    _weights_digest: str | None = None
    _streaming = False                 # a process() generator is running (started, not finished or closed)

    def __init__(self, scale: int = 4, model: str = DEFAULT_MODEL, adapt: bool = True,
                 blur: float | None = None, *, kernel: str | None = None, project: bool | None = None,
                 adapt_config: AdaptConfig | dict[str, Any] | None = None, adapt_every: float | None = None,
                 warm_start: bool = False, blend_frames: int = 8, tile: int = 512,
                 providers: list[str] | None = None, threads: int = 0,
                 on_adapt: Callable[[AdaptResult], None] | None = None, adapt_sync: bool = False,
                 adapt_thread: bool | None = None, lookahead: int = 32, input_deblur: bool = True,
                 colour_order: str = "rgb", frame_rate: float | Fraction | str | None = None) -> None:
        self.colour_order = _colour_order(colour_order)          # checked before the model is loaded
        self.frame_rate = _frame_rate(frame_rate)
        self.scale = scale
        self.network = Network.load(model, scale, providers=providers, threads=threads, tile=tile)
        if kernel is not None:
            self.degradation = Degradation.from_kernel_file(kernel, scale)
        else:
            self.degradation = Degradation(scale=scale, blur_sigma=float(blur or 0.0))
        if input_deblur:   # blurred footage becomes the bicubic-only input the network was trained on
            self.network.input_filter = lr_deblur_taps(self.degradation)
        if project and self.degradation.kernel is not None:
            raise VsrftError("--project needs a Gaussian or no blur; it does not support --kernel")
        if project is None:   # self-correction ends with the projection where A^+ is well conditioned:
            # bicubic alone (a told blur has the input deblur instead; A^+ of a blur amplifies noise)
            project = adapt and self.degradation.kernel is None and not self.degradation.blur_sigma
        self.project = project
        self.adapt = adapt
        if not isinstance(adapt_config, AdaptConfig):   # the model's defaults, then these overrides
            info = self.network.info
            adapt_config = AdaptConfig.for_model(info.meta.get("adapted_from", info.name), **(adapt_config or {}))
        self.adapt_config = adapt_config
        self.policy = KeyframePolicy(every_s=adapt_every)
        self.warm_start = warm_start
        self.blend_frames = blend_frames
        self.on_adapt = on_adapt
        self.reports: list[AdaptResult] = []
        self.stats = Stats(provider=self.network.runtime.provider)
        self._pretrained = {k: v.detach().clone() for k, v in self.network.module.state_dict().items()}
        self._current = self._pretrained
        self.adapt_sync = adapt_sync
        if adapt_sync:
            adapt_thread = False
        elif adapt_thread is None:
            adapt_thread = self.network.runtime.provider != "CPUExecutionProvider"
        self.adapt_thread = adapt_thread
        self.lookahead = lookahead if adapt_thread else 0
        self._latest = self._pretrained                        # weights the last adaptation decided
        self._queue: deque[tuple[Window[Frame], _Keyframe | None]] = deque()
        self._collecting: _Keyframe | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._blend: tuple[object, int] | None = None     # (old session, frames left)
        # Resumable jobs (see `enhance(resume=True)`): frames a job may restart at, frames it
        # already has, and the adaptation decisions it already took (frame index -> weights or
        # None for rejected, report).
        self.segment_frames = 0
        self.restart_points: set[int] = set()
        self._last_restart = 0
        self.skip_before = 0
        self.known_adaptations: dict[int, tuple[dict[str, torch.Tensor] | None, AdaptResult]] = {}
        self.on_stage: Callable[[str], None] | None = None  # told "adapting" / "upscaling"

    @property
    def provider(self) -> str:
        return self.network.runtime.provider

    @property
    def weights(self) -> dict[str, torch.Tensor]:
        """The weights in use now (the adapted ones after an accepted adaptation)."""
        return self._current

    def process(self, frames: Iterable[Any], *, colour_order: str | None = None,
                frame_rate: float | Fraction | str | None = None) -> Iterator[Any]:
        """Upscale a stream: yields one output per input frame, in order, of the input's kind.

        frames: any iterable (a generator is read lazily) of H x W x 3 uint8 numpy arrays,
        `av.VideoFrame`s or `vsrft.Frame`s, all of one size. Arrays carry no colour order or
        timing, so say what they are: `colour_order` "rgb" or "bgr" (OpenCV's; outputs come back
        in the same order) and `frame_rate` (frames per second; needed with `adapt_every`, which
        counts seconds: without it that is a ValueError rather than a guess). Both default to the
        constructor's; `av.VideoFrame`s and `Frame`s bring their own timestamps and are RGB.
        Outputs come as soon as they are ready (two frames behind the input without adaptation;
        with it, a shot's frames wait for the shot's weights), the last ones when the input ends.
        Raises ValueError for a frame of another size, dtype or shape than the first.
        """
        order = self.colour_order if colour_order is None else _colour_order(colour_order)
        rate = self.frame_rate if frame_rate is None else _frame_rate(frame_rate)
        if self._streaming:
            raise RuntimeError("this Enhancer is already processing a stream: exhaust or close() the generator of "
                               "the earlier process() call before starting another (or use a second Enhancer)")
        self._streaming = True
        try:
            self._new_stream()
            yield from self._stream(frames, order, rate)
        finally:
            self._streaming = False

    def _new_stream(self) -> None:
        """Forget the previous stream (finished or abandoned mid-way): its queued windows, the keyframe
        being collected, a running blend, the keyframe policy's clock, its stats and reports; weights
        go back to the pretrained ones, so the stream comes out as from a fresh Enhancer."""
        if self._pool is not None:        # an abandoned stream's adaptation may still be running
            self.close()
        self._queue.clear()
        self._collecting = None
        self._blend = None
        self._adapting = None
        self.policy = KeyframePolicy(every_s=self.policy.every_s)
        self._latest = self._pretrained
        if self._current is not self._pretrained:
            self.network.swap(self._pretrained)
            self._current = self._pretrained
        self.restart_points.clear()
        self._last_restart = 0
        self._frames_in = self._keyframes_started = 0
        self.reports = []
        if self._decisions is not None:
            self._decisions = []
        self.stats.frames = self.stats.cuts = 0
        for k in self.stats.seconds:
            self.stats.seconds[k] = 0.0

    def _stream(self, frames: Iterable[Any], order: str, rate: Fraction | None) -> Iterator[Any]:
        cuts = CutDetector()
        windows: WindowAssembler[Frame] = WindowAssembler()
        size: tuple[int, int] | None = None
        kind: type | None = None
        for i, item in enumerate(frames):
            frame, item_kind = _as_frame(item, i, order, rate)
            if i == 0 and item_kind is np.ndarray and self.adapt and self.policy.every_s and rate is None:
                raise ValueError(f"adapt_every={self.policy.every_s:g} s needs the frame rate of plain arrays: "
                                 "pass frame_rate= to Enhancer() or process()")
            self._frames_in = i + 1
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
                    yield _like(out, kind, order)
        for w in windows.flush():
            for out in self._route(w):
                yield _like(out, kind, order)
        for out in self._drain():
            yield _like(out, kind, order)

    def _route(self, w: Window[Frame]) -> Iterator[Frame]:
        """Queue the window; start an adaptation when its keyframe's data is collected; infer what is ready."""
        if not self.adapt:
            yield self._emit(w)
            return
        centre = w.centre
        key: _Keyframe | None = None
        if self.policy.should_adapt(centre.index, centre.time, w.shot_start):
            self._close_collection()
            key = self._collecting = _Keyframe([w], w.shot_start)
        elif self._collecting is not None:
            self._collecting.windows.append(w)
            if len(self._collecting.windows) >= self.adapt_config.frames:
                self._close_collection()
        self._queue.append((w, key))
        yield from self._advance(final=False)

    def _drain(self) -> Iterator[Frame]:
        yield from self._advance(final=True)

    def _advance(self, final: bool) -> Iterator[Frame]:
        """Infer queued windows in order, `lookahead` windows behind the input, so that an adaptation
        started at a shot's first frames runs while the end of the previous shot is inferred.
        A keyframe's window waits for its adaptation."""
        while self._queue and (final or len(self._queue) > self.lookahead):
            w, key = self._queue[0]
            if key is not None:
                if key is self._collecting:      # its data is still arriving
                    if not final:
                        return
                    self._close_collection()
                if not key.future.done():
                    t0 = time.perf_counter()
                    key.future.exception()
                    self.stats.seconds["adaptation_wait"] += time.perf_counter() - t0
                key.future.result()      # re-raises what the adaptation thread raised
                self._apply(key)
            self._queue.popleft()
            yield self._emit(w)

    def _close_collection(self) -> None:
        """The keyframe's data is complete: adapt now (sync) or start adapting beside inference."""
        key, self._collecting = self._collecting, None
        if key is None:
            return
        # the network's input is stacked, and the neighbours' motion estimated on its output, here
        # (its filter cache is not shared across threads)
        frame_lists = [[f.rgb for f in w.items] for w in key.windows]
        data = [(self.network.adaptation_window(frames), frames) for frames in frame_lists]
        key.windows = []
        known = self.known_adaptations.get(key.index)
        if known is not None:                   # decided before a resumed job was interrupted
            start = self._latest if (self.warm_start or not key.shot_start) else self._pretrained
            key.weights = known[0] if known[0] is not None else start
            key.result = known[1]
            self._latest = key.weights
            key.future = _done(None)
            return
        self._keyframes_started += 1
        if self.on_stage:
            self.on_stage("adapting")
        t0 = time.perf_counter()
        motions = self._window_motions(frame_lists) if self.adapt_config.neighbours else [None] * len(data)
        key.motion_seconds = time.perf_counter() - t0
        self.stats.seconds["adaptation"] += key.motion_seconds
        data = [(stack, frames, m) for (stack, frames), m in zip(data, motions)]
        if not self.adapt_thread:
            key.future = _done(self._adapt_job(key, data))
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vsrft-adapt")
            key.future = self._pool.submit(self._adapt_job, key, data)

    def _window_motions(self, windows: list[list[np.ndarray]]) -> list[np.ndarray]:
        """Per window, (frames, 2, 3) affines from each frame's LR pixels to the centre frame's
        (NaN: the centre itself, a repeated frame, or no alignment), for the multi-frame loss.

        Estimated on the network's output (current weights) at twice the LR size, where fine
        texture no longer aliases as it does in the LR frames: each distinct frame is upscaled
        once, in a window of its distinct neighbours in stream order (clamped at the ends), and
        the motion is estimated between consecutive frames, then chained. Runs on the inference
        thread: the network's input filter cache is not shared."""
        order: list[np.ndarray] = []
        position: dict[int, int] = {}
        for frames in windows:
            for f in frames:
                if id(f) not in position:
                    position[id(f)] = len(order)
                    order.append(f)
        half = self.network.frames // 2
        views = []
        for i, f in enumerate(order):
            around = [order[min(max(j, 0), len(order) - 1)] for j in range(i - half, i + half + 1)]
            views.append(motion_view(self.network.infer(around), f.shape[:2], MOTION_RESOLUTION))
        chain = chain_motions(views, MOTION_RESOLUTION)
        out = []
        for frames in windows:
            centre = frames[len(frames) // 2]
            motions = np.full((len(frames), 2, 3), np.nan, np.float32)
            for j, f in enumerate(frames):
                if f is not centre:
                    warp = motion_between(chain, position[id(f)], position[id(centre)])
                    if warp is not None:
                        motions[j] = warp
            out.append(motions)
        return out

    def _adapt_job(self, key: _Keyframe, data: list[tuple[np.ndarray, list[np.ndarray], np.ndarray | None]]) -> None:
        """Runs in the adaptation thread (or in line with --adapt-sync). Jobs run one at a time, in
        stream order, so each starts from the weights the previous one decided."""
        t0 = time.perf_counter()
        start = self._latest if (self.warm_start or not key.shot_start) else self._pretrained
        module = copy.deepcopy(self.network.module)
        module.load_state_dict(start)
        cfg = self.adapt_config
        if self.adapt_sync:   # deterministic: the step budget only, never the clock
            cfg = replace(cfg, seconds=None)
        windows = [TrainingWindow.from_frames(stack, frames, cfg.neighbours, motions)
                   for stack, frames, motions in data]
        label = shot_label(key.index, key.time)

        def on_step(done: int, planned: int) -> None:
            self._adapting = (done, planned, t0)
            if self.on_adapt_step:
                self.on_adapt_step(label, done, planned)

        self._adapting = (0, cfg.steps, t0)
        on_step(0, cfg.steps)
        try:
            state, result = finetune(module, windows, self.degradation, self.network.info.scale, cfg,
                                     frame_index=key.index, time_s=key.time, on_step=on_step,
                                     project=self.project)
        finally:
            self._adapting = None
        result.seconds += key.motion_seconds
        key.weights = state if state is not None else start
        key.result = result
        self._latest = key.weights
        self.stats.seconds["adaptation"] += time.perf_counter() - t0

    def _apply(self, key: _Keyframe) -> None:
        """The keyframe's window is next: put its weights in the session (blended inside a shot)."""
        result = key.result
        if key.weights is not self._current:
            old_session = self.network.runtime.session
            result.swap_seconds = self.network.swap(key.weights)
            if not key.shot_start and self.blend_frames > 0:
                self._blend = (old_session, self.blend_frames)
            self._current = key.weights
        log.debug("adaptation at frame %d: %s in %.1f s (%d steps)", result.frame_index, result.reason,
                  result.seconds, result.steps)
        kept = "the base network" if key.weights is self._pretrained else "the previous weights"
        (log.warning if result.cut_short else log.info)("%s", describe_adaptation(result, kept))
        self.reports.append(result)
        if self.keep_decisions:
            self._decisions = [*(self._decisions or []), (result, key.weights)]
        if self.on_adapt:
            self.on_adapt(result)
        if self.on_stage and (self._collecting is None and all(k is None or k.future.done()
                                                               for _, k in self._queue)):
            self.on_stage("upscaling")

    def adaptation_seconds_left(self, frames_total: int | None) -> float:
        """Seconds of fine-tuning still to come, for the ETA: the rest of the running adaptation at
        the pace of its steps so far, plus, for the frames not read yet, as many adaptations per frame
        as so far, each as long as the finished ones on average."""
        rest, estimate = 0.0, None
        if self._adapting is not None:
            done, planned, t0 = self._adapting
            if done:
                per_step = (time.perf_counter() - t0) / done
                rest, estimate = (planned - done) * per_step, planned * per_step
        finished = [r.seconds for r in self.reports if r.steps]
        mean = sum(finished) / len(finished) if finished else estimate
        if not self.adapt or mean is None or not frames_total or not self._frames_in:
            return rest
        future = self._keyframes_started / self._frames_in * max(frames_total - self._frames_in, 0)
        return rest + future * mean

    def adaptation_seconds_spent(self) -> float:
        """Seconds the inference thread has spent adapting in line (the running adaptation included)."""
        if self.adapt_thread:
            return 0.0
        running = time.perf_counter() - self._adapting[2] if self._adapting is not None else 0.0
        return self.stats.seconds["adaptation"] + running

    def close(self) -> None:
        """Stop the adaptation thread (also done when the object is garbage-collected)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "Enhancer":
        return self

    def __exit__(self, *exc: object) -> None:
        """`with Enhancer(...) as enh:` stops the adaptation thread on the way out, errors included."""
        self.close()

    def _emit(self, w: Window[Frame]) -> Frame | Skipped:
        """The output for a window, or a placeholder for a frame a resumed job already has."""
        index = w.centre.index
        if w.shot_start:
            self._blend = None                  # a blend never runs into the next shot
        if w.shot_start or (self.segment_frames and self._blend is None
                            and index - self._last_restart >= self.segment_frames):
            self.restart_points.add(index)
            self._last_restart = index
        if index < self.skip_before:
            if self._blend is not None:
                self._blend = (self._blend[0], self._blend[1] - 1) if self._blend[1] > 1 else None
            self.stats.frames += 1
            return Skipped(w.centre)
        return self._upscale(w.items)

    def _upscale(self, window: list[Frame]) -> Frame:
        t0 = time.perf_counter()
        centre = window[len(window) // 2]
        rgbs = [f.rgb if f.rgb16 is None else f.rgb16 for f in window]     # deep sources: 16-bit
        hr = self.network.infer(rgbs)
        if self._blend is not None:
            old_session, left = self._blend
            alpha = np.float32(1 - left / (self.blend_frames + 1))
            hr = alpha * hr + (1 - alpha) * self.network.infer(rgbs, old_session)
            self._blend = (old_session, left - 1) if left > 1 else None
        if self.project:
            lr = as_float_chw(centre.rgb if centre.rgb16 is None else centre.rgb16)
            hr = project(hr, lr, self.degradation)
        out = to_uint8(hr)
        self.stats.seconds["inference"] += time.perf_counter() - t0
        self.stats.frames += 1
        return centre.with_pixels(out, None if centre.rgb16 is None else to_uint16(hr))

    def _input_filter_taps(self) -> list[float] | None:
        """The input deblur's taps as recorded in reports and saved checkpoints."""
        return None if self.network.input_filter is None else self.network.input_filter.tolist()

    def settings(self) -> dict[str, Any]:
        """Everything about this Enhancer that determines its output frames, as JSON values: the
        settings part of `report()`, of `save_adapted`'s manifest and of a resumable job's
        fingerprint (a job resumes only onto segments made with the same settings)."""
        info = self.network.info
        if self._weights_digest is None:         # the loaded weights (adapted ones are swapped into the session)
            from vsrft.runtime.export import weights_digest
            self._weights_digest = weights_digest(self.network.module)
        return {"model": info.name, "weights": self._weights_digest, "model_config": info.config,
                "scale": self.scale, "degradation": json.loads(self.degradation.to_json()),
                "input_filter": self._input_filter_taps(), "project": self.project, "adapt": self.adapt,
                "adapt_config": self.adapt_config.to_dict(), "adapt_every_s": self.policy.every_s,
                # in line with the step budget only: a time limit, if any, is ignored
                "adapt_sync": self.adapt_sync, "warm_start": self.warm_start, "blend_frames": self.blend_frames,
                "provider": self.provider, "runtime": self.network.runtime.label}   # bf16 frames differ from fp32

    def report(self) -> dict:
        """Everything a --report file holds: `settings()`, every adaptation decision, stage times."""
        return {**self.settings(), "degradation_text": str(self.degradation),
                "adapt_mode": "in line, step budget only" if self.adapt_sync else
                              "background thread" if self.adapt_thread else "in line",
                "frames": self.stats.frames, "cuts": self.stats.cuts, "seconds": dict(self.stats.seconds),
                "keyframes": [r.to_dict() for r in self.reports]}

    def save_adapted(self, folder: str | Path) -> Path:
        """Write one ONNX file per distinct set of weights the shots used, and manifest.json (shot frame
        ranges, decisions, file names); returns the manifest's path. Each file is self-describing
        (`vsrft.runtime.export.export_for_tools`, docs/onnx.md): plain ONNX Runtime and vs-mlrt run
        it, and `--model FILE` loads it back. Needs `keep_decisions=True` before `process`."""
        from vsrft.runtime.export import export_for_tools

        if self.reports and self._decisions is None:
            raise ValueError("save_adapted needs every shot's weights: set keep_decisions=True before process()")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        info = self.network.info
        decisions = self._decisions or []
        written: dict[int, str] = {}             # id(weights) -> file name
        shots = []
        for n, (result, weights) in enumerate(decisions):
            last = decisions[n + 1][0].frame_index - 1 if n + 1 < len(decisions) else max(self.stats.frames - 1,
                                                                                               result.frame_index)
            if id(weights) not in written:
                base = weights is self._pretrained
                name = f"{info.name}-base.onnx" if base else f"{info.name}-frame{result.frame_index:06d}.onnx"
                written[id(weights)] = name
                self._write_onnx(folder / name, weights, export_for_tools, result if not base else None)
            shots.append({"first_frame": result.frame_index, "last_frame": last, "time_s": result.time_s,
                          "adapted": result.accepted,
                          "cut_short": result.cut_short, "decision": describe_adaptation(result),
                          "reason": result.reason, "file": written[id(weights)]})
        if not decisions:                        # --no-adapt: the network as loaded
            written[id(self._pretrained)] = f"{info.name}-base.onnx"
            self._write_onnx(folder / f"{info.name}-base.onnx", self._pretrained, export_for_tools, None)
        settings = self.settings()
        manifest = {"format": "vsrft-adapted-1", "model": info.name, "scale": info.scale, "frames_total": self.stats.frames,
                    "degradation": settings["degradation"], "input_filter": settings["input_filter"],
                    # vsrft's own output was the graphs' output projected onto the input: x + A^+(y - A x)
                    "projected": settings["project"],
                    "layout": "see docs/onnx.md and each file's metadata_props", "shots": shots,
                    "files": sorted(set(written.values())), "settings": settings}
        path = folder / "manifest.json"
        path.write_text(json.dumps(manifest, indent=2, default=str))
        return path

    def _write_onnx(self, path: Path, weights: dict[str, torch.Tensor], export: Callable, result: AdaptResult | None
                    ) -> None:
        module = copy.deepcopy(self.network.module)
        module.load_state_dict(weights)
        info = self.network.info
        meta: dict[str, Any] = {"adapted_from": info.meta.get("adapted_from", info.name),
                                "degradation": self.degradation.to_json(),
                                # weights adapted behind the input deblur expect it first: apply these taps
                                # along both axes (or reuse the file with the same --blur)
                                "input_filter": self._input_filter_taps()}
        if result is not None:
            meta["adaptation"] = result.to_dict() | {"losses": None}
        path.write_bytes(export(module, info.config, meta))


def _timestamp(seconds: float) -> str:
    """0:03.4, 1:02:03.4: where a shot starts, as a player shows it."""
    tenths = int(round(seconds * 10))
    h, rest = divmod(tenths, 36000)
    m, rest = divmod(rest, 600)
    return (f"{h}:{m:02d}" if h else f"{m}") + f":{rest // 10:02d}.{rest % 10}"


def shot_label(frame_index: int, time_s: float | None) -> str:
    """'shot at 0:03.4' (or 'shot at frame 85' without timestamps): how the terminal names a shot."""
    return f"shot at {_timestamp(time_s)}" if time_s is not None else f"shot at frame {frame_index}"


def describe_adaptation(result: AdaptResult, kept: str = "the base network") -> str:
    """The per-shot line a user reads: which shot, what became of its adaptation and why, in their
    words (the report's `reason` keeps the measurements). `kept`: the weights a rejected shot keeps."""
    if result.accepted:
        what = "adapted"
    elif result.reason.startswith("already consistent"):
        what = f"kept {kept}: it already explains the input, nothing to correct"
    elif result.reason.startswith(("diverged", "non-finite")):
        what = f"kept {kept}: the fine-tuning diverged"
    elif result.reason.startswith("less stable over time"):
        what = f"kept {kept}: the adapted output flickered more"
    elif result.cut_short and result.steps == 0:
        what = f"kept {kept}: not adapted"
    else:
        what = f"kept {kept}: no gain on held-out frames"
    if result.cut_short:
        what += (f" (the --adapt-seconds time limit stopped it after {result.steps} of {result.steps_planned} steps;"
                 " without it the result does not depend on the machine's speed)")
    return f"{shot_label(result.frame_index, result.time_s)}: {what}"


def _colour_order(order: str) -> str:
    value = str(order).lower()
    if value not in ("rgb", "bgr"):
        raise ValueError(f"colour_order must be 'rgb' or 'bgr' (OpenCV's), got {order!r}")
    return value


def _frame_rate(rate: float | Fraction | str | None) -> Fraction | None:
    """Frames per second as a fraction ("30000/1001", 25, 29.97), or None."""
    if rate is None:
        return None
    try:
        value = Fraction(rate).limit_denominator(1_000_000) if not isinstance(rate, Fraction) else rate
    except (TypeError, ValueError):
        value = Fraction(0)
    if value <= 0:
        raise ValueError(f"frame_rate must be a positive number of frames per second, got {rate!r}")
    return value


def _as_frame(item: Any, index: int, order: str = "rgb", rate: Fraction | None = None) -> tuple[Frame, type]:
    """The engine's Frame for an input; arrays are turned to RGB and, given a rate, timed at index / rate."""
    if isinstance(item, Frame):
        _check_rgb(item.rgb, index)
        return item, Frame
    if isinstance(item, av.VideoFrame):
        rgb, rgb16 = _video_frame_rgb(item)
        return Frame(rgb=rgb, index=index, pts=item.pts, time_base=item.time_base, key=bool(item.key_frame),
                     rgb16=rgb16), av.VideoFrame
    if isinstance(item, np.ndarray):
        _check_rgb(item, index)
        rgb = np.ascontiguousarray(item[..., ::-1]) if order == "bgr" else item
        if rate is None:
            return Frame(rgb=rgb, index=index), np.ndarray
        return Frame(rgb=rgb, index=index, pts=index, time_base=1 / rate), np.ndarray
    raise ValueError(f"frame {index} is a {type(item).__name__}; expected an HxWx3 uint8 numpy array, "
                     "an av.VideoFrame or a vsrft.Frame")


def _video_frame_rgb(vf: av.VideoFrame) -> tuple[np.ndarray, np.ndarray | None]:
    """An `av.VideoFrame`'s RGB, converted as `vsrft enhance` converts the frames it decodes
    (`vsrft.io.decode.VideoSource.read`): the matrix and range from the frame's tags, resolved as
    players do when untagged, without swscale's defaults; 16-bit too for frames deeper than 8 bits."""
    from vsrft.io.convert import bit_depth, frame_to_rgb, frame_to_rgb16, guess_colour, rgb16_to_rgb8

    colour = guess_colour(vf.height, vf.format.name, matrix=int(vf.colorspace or 2), rng=int(vf.color_range or 0))
    if bit_depth(vf.format.name) > 8:
        rgb16 = frame_to_rgb16(vf, colour)
        return rgb16_to_rgb8(rgb16), rgb16
    return frame_to_rgb(vf, colour), None


def _check_rgb(rgb: np.ndarray, index: int) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
        shape = getattr(rgb, "shape", None)
        raise ValueError(f"frame {index} has shape {shape}; expected H x W x 3 (RGB)")
    if rgb.dtype != np.uint8:
        raise ValueError(f"frame {index} has dtype {rgb.dtype}; expected uint8")
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"frame {index} is empty")


def _like(frame: Frame | Skipped, kind: type, order: str = "rgb") -> Any:
    if isinstance(frame, Skipped):
        return frame
    if kind is np.ndarray:
        return np.ascontiguousarray(frame.rgb[..., ::-1]) if order == "bgr" else frame.rgb
    if kind is av.VideoFrame:
        vf = av.VideoFrame.from_ndarray(frame.rgb, format="rgb24")
        vf.pts = frame.pts
        if frame.time_base is not None:     # frames made with from_ndarray have none (PyAV cannot set None)
            vf.time_base = frame.time_base
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


def preflight(src: str | Path, dst: str | Path, *, scale: int = 4, codec: str | None = None,
              crf: float | None = 18, preset: str | None = "veryfast", pix_fmt: str | None = None,
              encoder_options: dict[str, str] | None = None, bitrate: str | int | None = None,
              resume: bool = False) -> None:
    """Check the input, the output path and the encoder settings before any model is loaded
    (see `vsrft.io.encode.preflight`), and the scale."""
    from vsrft.io import encode
    from vsrft.network import SUPPORTED_SCALES

    if scale not in SUPPORTED_SCALES:
        raise VsrftError(f"scale must be one of {', '.join(map(str, SUPPORTED_SCALES))}, got {scale}")
    encode.preflight(src, dst, scale=scale, codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt,
                     encoder_options=encoder_options, bitrate=bitrate, resume=resume)


def enhance(src: str | Path, dst: str | Path, *, codec: str | None = None, crf: float | None = 18,
            preset: str | None = "veryfast", pix_fmt: str | None = None,
            encoder_options: dict[str, str] | None = None, bitrate: str | int | None = None,
            progress: ProgressCallback | None = None, enhancer: Enhancer | None = None, resume: bool = False,
            segment_seconds: float = 10.0, **options: Any) -> Stats:
    """Upscale a video file into another: decode, inference (and adaptation) and encode run concurrently.

    `options` are `Enhancer`'s (scale, model, adapt, blur, ...), or pass a ready `enhancer`.
    Encoding: `codec` None picks one from the output's extension (libx264, .webm: libvpx-vp9);
    `encoder_options` go to the encoder as `--encoder-opt` does (e.g. {"tune": "film"}; an option
    the encoder lacks is an error); `bitrate` ("2M") asks for a target bitrate instead of `crf`.
    The output appears at `dst` only when complete (written to a temporary file, renamed).
    `resume`: a resumable job (see `vsrft.io.segments`): segments of at most `segment_seconds`
    are checkpointed beside the output, and a job interrupted earlier continues where it stopped.
    """
    from vsrft.io.decode import VideoSource
    from vsrft.io.encode import VideoSink
    from vsrft.io.segments import Job, SegmentWriter, fingerprint, job_folder

    if enhancer is None:
        preflight(src, dst, scale=int(options.get("scale", 4)), codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt,
                  encoder_options=encoder_options, bitrate=bitrate, resume=resume)
    source = VideoSource(src)
    try:
        enh = enhancer or Enhancer(**options)
        sink = VideoSink(dst, source, source.width * enh.scale, source.height * enh.scale,
                         codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt, options=encoder_options,
                         bitrate=bitrate)
        if resume and sink.direct:
            sink.abort()
            raise VsrftError(f"--resume needs a regular file as the output; {dst} is a device or FIFO")
    except BaseException:
        source.close()
        raise
    writer: SegmentWriter | None = None
    if resume:
        settings = {"enhancer": enh.settings(), "codec": sink.codec, "crf": crf, "preset": preset, "pix_fmt": pix_fmt,
                    "encoder_options": sink.encoder_options, "bitrate": sink.video.codec_context.bit_rate,
                    "segment_seconds": segment_seconds}
        try:
            job = Job(job_folder(dst), fingerprint(src, settings))
            job.claim(sink.tmp_path)
            enh.segment_frames = max(1, round(segment_seconds * float(source.rate or 25)))
            enh.skip_before = job.resume_from
            enh.known_adaptations = job.known_adaptations()
        except BaseException:
            sink.abort()
            source.close()
            if "job" in locals():
                job.unlock()
            raise
        writer = SegmentWriter(sink, job)
        user_on_adapt = enh.on_adapt

        def keep_decision(result: AdaptResult) -> None:
            job.add_adaptation(result, enh.weights if result.accepted else None)
            if user_on_adapt:
                user_on_adapt(result)

        enh.on_adapt = keep_decision
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

    def eta() -> float | None:
        """Frames left at the upscaling pace so far (adaptation excluded), plus pending adaptations."""
        if not total or not done[0]:
            return None
        upscaling = max(time.perf_counter() - t_start - enh.adaptation_seconds_spent(), 0.0)
        return (total - done[0]) * upscaling / done[0] + enh.adaptation_seconds_left(total)

    if progress:
        enh.on_stage = lambda stage: progress(Progress(done[0], total, time.perf_counter() - t_start, stage,
                                                       eta_s=eta()))
        enh.on_adapt_step = lambda shot, step, steps: progress(Progress(
            done[0], total, time.perf_counter() - t_start, "adapting", shot=shot, step=step, steps=steps, eta_s=eta()))

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
            if writer is None:
                sink.write(item)
            elif isinstance(item, Skipped):
                writer.skip(item.frame)
            else:
                writer.write(item, restart=item.index in enh.restart_points)
            stats.seconds["encode"] += time.perf_counter() - t0
            done[0] += 1
            if progress:
                progress(Progress(done[0], total, time.perf_counter() - t_start, eta_s=eta()))

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
        if writer is not None:
            writer.close()
            writer.job.remove()
        else:
            sink.close()
        ok = True
    finally:
        stop.set()
        decoder.join(timeout=5)
        encoder.join(timeout=5)   # before abort(): the encoder thread may still be writing to the file
        if not ok:
            sink.abort()
            if writer is not None:        # the job stays for a rerun; its lock goes with this run
                writer.job.unlock()
        source.close()
    stats.seconds["total"] = time.perf_counter() - t_start
    return stats
