"""Pictures people can look at: labelled side-by-side crops and adaptation curves, as PNG arrays.

Pure functions on RGB uint8 arrays; the CLI (`vsrft compare`) decides what goes in.
"""
from __future__ import annotations

import cv2
import numpy as np


def label(img: np.ndarray, text: str) -> np.ndarray:
    """img with a caption bar on top (white text on black)."""
    bar = np.zeros((22, img.shape[1], 3), np.uint8)
    cv2.putText(bar, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([bar, img], axis=0)


def crop_zoom(img: np.ndarray, box: tuple[int, int, int, int], size: int = 256) -> np.ndarray:
    """Crop (x, y, w, h) and enlarge with nearest neighbour so pixels stay visible."""
    x, y, w, h = box
    c = img[y:y + h, x:x + w]
    f = max(1, size // max(w, h))
    return cv2.resize(c, (w * f, h * f), interpolation=cv2.INTER_NEAREST)


def detailed_box(img: np.ndarray, size: int = 64) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the size x size window with the most Laplacian energy: where SR differences show."""
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    energy = cv2.boxFilter(np.abs(cv2.Laplacian(gray, cv2.CV_32F)), -1, (size, size))
    half = size // 2
    inner = energy[half:-half, half:-half] if min(energy.shape) > size else energy
    y, x = np.unravel_index(int(np.argmax(inner)), inner.shape)
    return int(x), int(y), size, size


def grid(panels: list[tuple[str, np.ndarray]], gap: int = 4) -> np.ndarray:
    """Labelled panels of equal size in one row."""
    h = max(p.shape[0] for _, p in panels)
    cols = []
    for name, p in panels:
        if p.shape[0] != h:
            p = np.pad(p, ((0, h - p.shape[0]), (0, 0), (0, 0)))
        cols.append(label(p, name))
        cols.append(np.full((h + 22, gap, 3), 255, np.uint8))
    return np.concatenate(cols[:-1], axis=1)


def line_plot(series: dict[str, list[float]], title: str, size: tuple[int, int] = (640, 360)) -> np.ndarray:
    """A minimal line plot (one colour per series, min/max on the y axis) drawn with OpenCV."""
    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 60, 10, 30, 30
    values = [v for s in series.values() for v in s if np.isfinite(v)]
    if not values:
        return img
    lo, hi = min(values), max(values)
    hi = hi if hi > lo else lo + 1
    cv2.rectangle(img, (left, top), (w - right, h - bottom), (0, 0, 0), 1)
    cv2.putText(img, title, (left, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for v, y in ((hi, top), (lo, h - bottom)):
        cv2.putText(img, f"{v:.3g}", (2, y + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    colours = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]
    longest = max(len(s) for s in series.values())
    for i, (name, s) in enumerate(series.items()):
        col = colours[i % len(colours)]
        pts = [(int(left + (w - left - right) * j / max(1, longest - 1)),
                int(h - bottom - (h - top - bottom) * (v - lo) / (hi - lo))) for j, v in enumerate(s) if np.isfinite(v)]
        if len(pts) > 1:
            cv2.polylines(img, [np.array(pts, np.int32)], False, col, 2, cv2.LINE_AA)
        cv2.putText(img, name, (w - right - 200, top + 18 + 16 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45, col, 1, cv2.LINE_AA)
    cv2.putText(img, "step", (w // 2, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def save_png(path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")
