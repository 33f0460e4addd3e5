"""Scene cuts and 5-frame windows.

The rule: output frame t sees frames t-2..t+2 of its own shot. Indices outside the shot
(the clip's ends, or the other side of a cut) are replaced by the shot's edge frame, so a
window never mixes two shots. A cut is declared between frames t-1 and t when the colour
histograms differ by more than `threshold` (L1 distance of normalised 3x32-bin
histograms, range 0..2). The decoder's keyframe flag may lower the threshold
(`keyframe_threshold`), but by default it does not: a pipe or a frame server has no
keyframe flags, and every entry point must cut the same stream the same way.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, Iterator, TypeVar

import cv2
import numpy as np

WINDOW = 5
RADIUS = WINDOW // 2

T = TypeVar("T")


def colour_histogram(rgb: np.ndarray, bins: int = 32) -> np.ndarray:
    """(3*bins,) normalised histogram of a subsampled frame: cheap and robust to motion."""
    h, w = rgb.shape[:2]
    step = max(1, int(np.sqrt(h * w / 20000)))
    small = rgb[::step, ::step]
    hists = [cv2.calcHist([small], [c], None, [bins], [0, 256]).ravel() for c in range(3)]
    hist = np.concatenate(hists)
    return hist / max(hist.sum() / 3, 1.0)


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).sum() / 3)


@dataclass
class CutDetector:
    """Stateful: remembers the previous frame's histogram."""

    threshold: float = 0.35
    keyframe_threshold: float = 0.35
    _previous: np.ndarray | None = None

    def is_cut(self, rgb: np.ndarray, keyframe: bool = False) -> bool:
        """True when `rgb` starts a new shot (the first frame of a stream does not count)."""
        hist = colour_histogram(rgb)
        prev, self._previous = self._previous, hist
        if prev is None:
            return False
        d = histogram_distance(prev, hist)
        return d > (self.keyframe_threshold if keyframe else self.threshold)


def window_indices(t: int, shot_start: int, shot_end: int, radius: int = RADIUS) -> list[int]:
    """Frame indices for output t, clamped to its shot [shot_start, shot_end] (edge replication)."""
    return [min(max(i, shot_start), shot_end) for i in range(t - radius, t + radius + 1)]


@dataclass
class Window(Generic[T]):
    """The items around a centre (oldest first); `shot_start` marks the first window of a shot."""

    items: list[T]
    shot_start: bool

    @property
    def centre(self) -> T:
        return self.items[len(self.items) // 2]


class WindowAssembler(Generic[T]):
    """Turns a stream of items into one `Window` per item, `radius` items of latency.

    `push(item, cut)` says whether the item starts a new shot; `flush()` at the end of the
    stream emits the remaining windows. Holds at most 2*radius+1 items.
    """

    def __init__(self, radius: int = RADIUS) -> None:
        self.radius = radius
        self._items: deque[T] = deque()
        self._shot_ids: deque[int] = deque()
        self._shot = 0
        self._next_out = 0          # position in _items of the next centre to emit
        self._last_out_shot = -1

    def push(self, item: T, cut: bool = False) -> Iterator[Window[T]]:
        if cut and self._items:
            self._shot += 1
        self._items.append(item)
        self._shot_ids.append(self._shot)
        while self._next_out + self.radius < len(self._items):
            yield self._emit()

    def flush(self) -> Iterator[Window[T]]:
        while self._next_out < len(self._items):
            yield self._emit()
        self._items.clear()
        self._shot_ids.clear()
        self._next_out = 0

    def _emit(self) -> Window[T]:
        c = self._next_out
        shot = self._shot_ids[c]
        lo = c
        while lo > 0 and self._shot_ids[lo - 1] == shot:
            lo -= 1
        hi = c
        while hi + 1 < len(self._items) and self._shot_ids[hi + 1] == shot:
            hi += 1
        idx = window_indices(c, lo, hi, self.radius)
        window = Window([self._items[i] for i in idx], shot_start=shot != self._last_out_shot)
        self._last_out_shot = shot
        self._next_out += 1
        while self._next_out > self.radius:   # keep radius items of history
            self._items.popleft()
            self._shot_ids.popleft()
            self._next_out -= 1
        return window
