"""The 5-frame window rule and scene-cut detection, the latter on real decoded clips."""
from __future__ import annotations

import random

import numpy as np
import pytest

from helpers import SAMPLE
from vsrft.frame import Frame
from vsrft.io.decode import VideoSource
from vsrft.windows import CutDetector, WindowAssembler, window_indices


def reference_windows(n: int, cuts: set[int], radius: int = 2) -> list[list[int]]:
    """The rule, written out independently: frame t sees t-2..t+2 clamped to the bounds of its own shot."""
    starts = sorted({0} | {c for c in cuts if 0 < c < n})
    out = []
    for t in range(n):
        lo = max(s for s in starts if s <= t)
        hi = min([s for s in starts if s > t], default=n) - 1
        out.append([min(max(i, lo), hi) for i in range(t - radius, t + radius + 1)])
    return out


def run_assembler(n: int, cuts: set[int]) -> tuple[list[list[int]], list[bool], list[int]]:
    """Windows (as frame indices), their shot_start flags, and how many windows each push released."""
    asm: WindowAssembler[int] = WindowAssembler()
    windows, flags, released = [], [], []
    for t in range(n):
        got = list(asm.push(t, t in cuts))
        released.append(len(got))
        windows += [w.items for w in got]
        flags += [w.shot_start for w in got]
    tail = list(asm.flush())
    windows += [w.items for w in tail]
    flags += [w.shot_start for w in tail]
    return windows, flags, released


def test_window_indices_by_hand() -> None:
    assert window_indices(0, 0, 9) == [0, 0, 0, 1, 2]          # clip start: edge replicated
    assert window_indices(1, 0, 9) == [0, 0, 1, 2, 3]
    assert window_indices(5, 0, 9) == [3, 4, 5, 6, 7]          # inside: plain neighbourhood
    assert window_indices(9, 0, 9) == [7, 8, 9, 9, 9]          # clip end
    assert window_indices(4, 0, 4) == [2, 3, 4, 4, 4]          # last frame before a cut at 5
    assert window_indices(5, 5, 9) == [5, 5, 5, 6, 7]          # first frame after it
    assert window_indices(3, 3, 3) == [3, 3, 3, 3, 3]          # a one-frame shot


def test_assembler_by_hand_around_a_cut() -> None:
    windows, flags, _ = run_assembler(8, {4})
    assert windows == [
        [0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [0, 1, 2, 3, 3], [1, 2, 3, 3, 3],
        [4, 4, 4, 5, 6], [4, 4, 5, 6, 7], [4, 5, 6, 7, 7], [5, 6, 7, 7, 7],
    ]
    assert flags == [True, False, False, False, True, False, False, False]


@pytest.mark.parametrize("n, cuts", [
    (1, set()), (2, set()), (5, set()), (12, set()),
    (12, {0}),                      # a "cut" on the first frame is no cut
    (12, {6}), (12, {1}), (12, {11}),
    (12, {3, 4}),                   # a one-frame shot
    (12, {2, 3, 4, 5}),             # several one-frame shots in a row
    (20, {5, 7, 15}),
])
def test_assembler_follows_the_rule(n: int, cuts: set[int]) -> None:
    windows, flags, released = run_assembler(n, cuts)
    assert windows == reference_windows(n, cuts)
    shot_starts = {0} | {c for c in cuts if c > 0}
    assert [t in shot_starts for t in range(n)] == flags
    # at most two frames of latency: the window of frame t leaves as soon as frame t+2 arrives
    assert released == [0 if t < 2 else 1 for t in range(n)]


def test_windows_never_span_a_cut_random() -> None:
    rng = random.Random(1234)
    for _ in range(200):
        n = rng.randint(1, 40)
        cuts = {t for t in range(1, n) if rng.random() < 0.2}
        windows, _, _ = run_assembler(n, cuts)
        assert windows == reference_windows(n, cuts)
        shot_of = np.cumsum([t in cuts and t > 0 for t in range(n)])
        for t, w in enumerate(windows):
            assert w[2] == t
            assert {int(shot_of[i]) for i in w} == {int(shot_of[t])}, (n, sorted(cuts), t, w)


def test_assembler_holds_only_a_window_of_items() -> None:
    asm: WindowAssembler[int] = WindowAssembler()
    for t in range(100):
        list(asm.push(t, t % 17 == 0))
        assert len(asm._items) <= 5


def _frames(path) -> list[Frame]:
    with VideoSource(path) as src:
        return [f for f in src.read() if isinstance(f, Frame)]


def _cuts(frames: list[Frame]) -> list[int]:
    det = CutDetector()
    return [f.index for f in frames if det.is_cut(f.rgb, f.key)]


def test_cut_detector_finds_the_cut_in_a_real_clip(clip) -> None:
    frames = _frames(clip("cut"))             # 12 frames of testsrc2, then 12 of a Mandelbrot zoom
    assert len(frames) == 24
    assert _cuts(frames) == [12]


def test_no_false_cut_in_a_fast_pan(clip) -> None:
    frames = _frames(clip("pan"))             # 8 px per frame across a 96 px view, a keyframe every 4 frames
    assert len(frames) == 30
    assert sum(f.key for f in frames) >= 7    # the lower keyframe threshold is exercised too
    motion = [np.abs(a.rgb.astype(np.int16) - b.rgb).mean() for a, b in zip(frames, frames[1:])]
    assert min(motion) > 2.0                  # really moving, every frame
    assert _cuts(frames) == []


def test_cut_detector_on_the_sample() -> None:
    """concert.mp4 has two hard cuts, at about 1.1 s and 3.6 s (24 fps)."""
    frames = _frames(SAMPLE)
    cuts = _cuts(frames)
    assert len(cuts) == 2
    assert abs(cuts[0] - 1.1 * 24) <= 2 and abs(cuts[1] - 3.6 * 24) <= 2


def test_enhancer_counts_the_cuts_of_the_sample(tiny_model) -> None:
    """The Enhancer runs the same detector over the stream; its windows keep to the shots."""
    from vsrft.engine import Enhancer

    frames = _frames(SAMPLE)[:40]            # the first cut only, to stay quick; Frames carry the keyframe flag
    enh = Enhancer(model=str(tiny_model), adapt=False, scale=1)
    out = list(enh.process(frames))
    assert [f.index for f in out] == list(range(40))
    assert enh.stats.cuts == 1
