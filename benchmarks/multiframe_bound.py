"""How much can the neighbouring frames tell? An analysis, not a product path.

Each output frame x_t of the input-deblur network (`--blur S --no-adapt`) is refined to fit
its own LR frame *and* the window's other frames through their global motion (estimated, as
the engine does, on the outputs at twice the LR size),
min_x sum_k || M_k (A W_k x - y_k) ||^2 (k = t-2..t+2, W_t = I), by steepest descent from
x_t, with the motion W_k and the mask M_k (inside the frame, and aligned: the neighbour's
residual at most `--tolerance` code values above the centre's) exactly as the fine-tuner's
multi-frame loss has them (`vsrft.adapt.finetune`). Exact per frame, so it bounds what a
fine-tuning with that loss can reach; the single-frame analogue is the exact projection.

    python benchmarks/multiframe_bound.py [--case blur] [--iterations 10] [--tolerance 0.5] [--second-set]
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
from vsrft.adapt import AdaptConfig  # noqa: E402
from vsrft.adapt.finetune import aligned_pixels  # noqa: E402
from vsrft.adapt.motion import MOTION_RESOLUTION, chain_motions, hr_sampling_grid, motion_between, motion_view  # noqa: E402
from vsrft.degradation import Degradation, degrade_torch  # noqa: E402
from vsrft.engine import Enhancer  # noqa: E402
from vsrft.evaluation import data_line, photos_dir  # noqa: E402
from vsrft.metrics.fidelity import psnr_y  # noqa: E402


def _chw(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb.astype(np.float32).transpose(2, 0, 1))[None] / 255


def _uint8(x: torch.Tensor) -> np.ndarray:
    return (x[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)


def refine(x: torch.Tensor, lr: list[np.ndarray], chain: list[np.ndarray | None], t: int, op: Degradation,
           iterations: int, tolerance: float, radius: int = 2) -> torch.Tensor:
    """x: (1, 3, H, W) output for frame t -> the same, fitted to frames t-radius..t+radius, whose
    motion comes from `chain` (`chain_motions` on the outputs' views, as the engine does)."""
    lo, hi = max(0, t - radius), min(len(lr), t + radius + 1)
    motions = [np.full((2, 3), np.nan) if k == t else motion_between(chain, k, t) for k in range(lo, hi)]
    motions = [np.full((2, 3), np.nan) if m is None else m for m in motions]
    h, w = x.shape[-2:]
    y_t = _chw(lr[t])
    d_t = degrade_torch(x, op) - y_t
    terms = [(None, y_t, torch.ones_like(d_t[:, :1]))]
    for i, motion in enumerate(motions):
        if not np.isfinite(motion).all():
            continue
        grid = hr_sampling_grid(motion, op.scale, (0, 0), (h, w))[None]
        y_k = _chw(lr[lo + i])
        with torch.no_grad():
            d = degrade_torch(F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False), op) - y_k
            terms.append((grid, y_k, aligned_pixels(d_t, d, grid, op, tolerance).float()))

    def forward(z: torch.Tensor, grid: torch.Tensor | None) -> torch.Tensor:
        if grid is not None:
            z = F.grid_sample(z, grid, mode="bicubic", padding_mode="border", align_corners=False)
        return degrade_torch(z, op)

    for _ in range(iterations):
        z = x.clone().requires_grad_(True)
        loss = sum(0.5 * ((m * (forward(z, g) - y)) ** 2).sum() for g, y, m in terms)
        (grad,) = torch.autograd.grad(loss, z)
        with torch.no_grad():       # exact line search: the objective is quadratic
            curvature = sum(((m * forward(grad, g)) ** 2).sum() for g, _, m in terms)
            x = x - float((grad * grad).sum() / curvature) * grad
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="blur", choices=[*CASES, *EXTRA_CASES])
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--tolerance", type=float, default=AdaptConfig().align_tolerance,
                    help="code values, as AdaptConfig.align_tolerance (its default)")
    ap.add_argument("--data", default=None, metavar="DIR",
                    help="data folder made by benchmarks/data.py (default: $VSRFT_DATA, else ~/.cache/vsrft/data)")
    ap.add_argument("--photos", default=None, help="folder whose held-out photos make sequences (default: DIR/photos)")
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--second-set", action="store_true")
    args = ap.parse_args()
    print(data_line(args.data, None if args.data or not args.photos else args.photos), flush=True)
    args.photos = args.photos or str(photos_dir(args.data))   # its clips: the data folder it sits in
    torch.set_num_threads(2)
    model, scale, footage_blur, told, crf = {**CASES, **EXTRA_CASES}[args.case]
    seqs = sequence_set(args.photos, args.frames, "second" if args.second_set else "benchmark")
    op = Degradation(scale=scale, blur_sigma=told or None)
    t_start = time.perf_counter()
    rows = {"projection": [], "input deblur": [], "input deblur+projection": [], "multi-frame fit": []}
    print(f"# Multi-frame bound, case {args.case}, {len(seqs)} sequences of {args.frames} frames, "
          f"{args.iterations} iterations, tolerance {args.tolerance:g}\n")
    print("| sequence | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    with tempfile.TemporaryDirectory() as tmp:
        for seq, (gt, lr) in zip(seqs, footage(seqs, scale, footage_blur, Path(tmp), crf)):
            outs = {
                "projection": Enhancer(scale=scale, model=model, adapt=False, blur=told, project=True,
                                       input_deblur=False).process(lr),
                "input deblur": Enhancer(scale=scale, model=model, adapt=False, blur=told).process(lr),
                "input deblur+projection": Enhancer(scale=scale, model=model, adapt=False, blur=told,
                                                    project=True).process(lr),
            }
            outs = {name: list(frames) for name, frames in outs.items()}
            scores = {name: float(np.mean([psnr_y(o, g, border=scale) for o, g in zip(out, gt)]))
                      for name, out in outs.items()}
            deblurred = outs["input deblur"]
            views = [motion_view(x.transpose(2, 0, 1).astype(np.float32) / 255, f.shape[:2])
                     for x, f in zip(deblurred, lr)]
            chain = chain_motions(views, MOTION_RESOLUTION)
            fitted = [_uint8(refine(_chw(x), lr, chain, t, op, args.iterations, args.tolerance))
                      for t, x in enumerate(deblurred)]
            scores["multi-frame fit"] = float(np.mean([psnr_y(o, g, border=scale) for o, g in zip(fitted, gt)]))
            for name, v in scores.items():
                rows[name].append(v)
            print(f"| {seq.name} | " + " | ".join(f"{scores[n]:.3f}" for n in rows) + " |", flush=True)
    print("| mean | " + " | ".join(f"{np.mean(v):.3f}" for v in rows.values()) + " |")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
