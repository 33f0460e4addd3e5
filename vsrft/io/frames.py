"""Read all frames of a video file or an image folder as RGB arrays (for evaluation, not streaming)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from vsrft.errors import VsrftError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def read_all(path: str | Path, limit: int | None = None) -> list[np.ndarray]:
    """(H, W, 3) uint8 RGB frames of a video (PyAV, same colour handling as `enhance`) or a folder of images."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise VsrftError(f"no images in folder {p}")
        frames = []
        for f in files[:limit]:
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                raise VsrftError(f"cannot read image {f}")
            frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        return frames
    from vsrft.frame import Frame
    from vsrft.io.decode import VideoSource

    frames = []
    with VideoSource(p) as src:
        for item in src.read():
            if isinstance(item, Frame):
                frames.append(item.rgb)
                if limit and len(frames) >= limit:
                    break
    return frames
