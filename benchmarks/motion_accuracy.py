"""How well does the multi-frame loss's motion explain the ground truth? LR frames vs the network's output.

For frame pairs (t, t+-1), (t, t+-2) of each held-out sequence, the affine motion is estimated
as the fine-tuner would: pair by pair on the LR frames' luma (`global_motion`, as the
LR-only fallback `window_motions` does; before the output views the engine did this too, but
with ECC started from no motion, coarse to fine), and as the engine does now, on the
`motion_view` of the input-deblur network's output (`--blur S --no-adapt`, the weights an
adaptation starts from) at twice the LR size, between consecutive frames, chained
(`chain_motions`, `motion_between`). Each motion then warps the *ground-truth* HR frame t into frame k's view (`hr_sampling_grid`, bicubic); the PSNR
against ground-truth frame k, away from the borders, measures the motion (a motion model that
misses moving objects or parallax caps it too). Pairs where ECC fails or the motion is
implausible are counted as not aligned.

    python benchmarks/motion_accuracy.py [--case blur] [--second-set | --third-set]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_adapt import CASES, EXTRA_CASES, footage, sequence_set  # noqa: E402
from vsrft.adapt.motion import (MOTION_RESOLUTION, chain_motions, global_motion, hr_sampling_grid,  # noqa: E402
                                luma, motion_between, motion_view)
from vsrft.engine import Enhancer  # noqa: E402
from vsrft.evaluation import data_line, photos_dir  # noqa: E402


def warp_psnr(motion: np.ndarray, scale: int, centre: np.ndarray, other: np.ndarray, border: int = 8) -> float:
    """PSNR of ground-truth `centre` warped by `motion` into `other`'s view, inside both frames."""
    h, w = centre.shape[:2]
    grid = hr_sampling_grid(motion, scale, (0, 0), (h, w))[None]
    x = torch.from_numpy(centre.astype(np.float32).transpose(2, 0, 1))[None]
    warped = F.grid_sample(x, grid, mode="bicubic", align_corners=False)[0].numpy().transpose(1, 2, 0)
    inside = F.grid_sample(torch.ones(1, 1, h, w), grid, align_corners=False)[0, 0].numpy() > 0.999
    inside[:border] = inside[-border:] = False
    inside[:, :border] = inside[:, -border:] = False
    mse = float(((warped - other.astype(np.float32)) ** 2)[inside].mean())
    return 10 * np.log10(255 ** 2 / mse)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", default="blur", choices=[*CASES, *EXTRA_CASES])
    ap.add_argument("--data", default=None, metavar="DIR",
                    help="data folder made by benchmarks/data.py (default: $VSRFT_DATA, else ~/.cache/vsrft/data)")
    ap.add_argument("--photos", default=None, help="folder whose held-out photos make sequences (default: DIR/photos)")
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--step", type=int, default=4, help="every step-th frame is a centre")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--second-set", action="store_true")
    group.add_argument("--third-set", action="store_true")
    args = ap.parse_args()
    print(data_line(args.data, None if args.data or not args.photos else args.photos), flush=True)
    args.photos = args.photos or str(photos_dir(args.data))   # its clips: the data folder it sits in
    model, scale, blur, told, crf = {**CASES, **EXTRA_CASES}[args.case]
    seqs = sequence_set(args.photos, args.frames,
                        "second" if args.second_set else "third" if args.third_set else "benchmark")
    print(f"# motion accuracy, case {args.case}: warp of the ground truth by the estimated motion, PSNR (dB)\n")
    print("| sequence | pairs | LR frames: aligned, PSNR | network output at 2x, chained: aligned, PSNR |")
    print("|---|---|---|---|")
    t0 = time.time()
    totals: dict[str, list[float]] = {"lr": [], "view": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seq, (gt, lr) in zip(seqs, footage(seqs, scale, blur, Path(tmp), crf)):
            out = Enhancer(scale=scale, model=model, adapt=False, blur=told).process(lr)
            views = [motion_view(o.transpose(2, 0, 1).astype(np.float32) / 255, f.shape[:2]) for o, f in zip(out, lr)]
            chain = chain_motions(views, MOTION_RESOLUTION)
            found: dict[str, list[float]] = {"lr": [], "view": []}
            pairs = 0
            for t in range(2, len(lr) - 2, args.step):
                for k in (t - 2, t - 1, t + 1, t + 2):
                    pairs += 1
                    for tag, motion in (("lr", global_motion(luma(lr[t]), luma(lr[k]))),
                                        ("view", motion_between(chain, k, t))):
                        if motion is not None:
                            found[tag].append(warp_psnr(motion, scale, gt[t], gt[k]))
            cells = [f"{len(v)}/{pairs}, {np.mean(v):.2f}" if v else f"0/{pairs}, -" for v in found.values()]
            print(f"| {seq.name} | {pairs} | {cells[0]} | {cells[1]} |", flush=True)
            for tag, v in found.items():
                totals[tag].extend(v)
    print(f"\nall pairs: LR {len(totals['lr'])} aligned, mean {np.mean(totals['lr']):.2f} dB; "
          f"output {len(totals['view'])} aligned, mean {np.mean(totals['view']):.2f} dB ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
