"""Adaptation quality table: bicubic / base network / projection only / adapted / adapted + projection,
for the three failure cases of the source paper plus the no-harm cases, on held-out footage with
ground truth built with the engine's own degradation operator.

    python benchmarks/quality_adapt.py [--cases gan blur matched x2] [--json out.json] [--quick]

Every run is `--adapt-sync` (adaptation is synchronous in the engine), so it is deterministic.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vsrft.adapt import AdaptConfig  # noqa: E402
from vsrft.degradation import Degradation  # noqa: E402
from vsrft.engine import Enhancer  # noqa: E402
from vsrft.evaluation import bicubic_sequence, degrade_sequence, evaluate, heldout_sequences  # noqa: E402

# case: (model, scale, blur sigma of the footage, blur the user tells vsrft)
CASES = {
    "gan": ("vsrft-gan", 4, 0.0, None),
    "blur": ("vsrft-mse", 4, 1.6, 1.6),
    "matched": ("vsrft-mse", 4, 0.0, None),
    "x2": ("vsrft-mse", 2, 0.0, None),
}
METHODS = ("bicubic", "base", "projection", "adapted", "adapted+projection")


def run_method(method: str, lr: list[np.ndarray], model: str, scale: int, blur: float | None,
               cfg: AdaptConfig) -> tuple[list[np.ndarray], float, list[dict]]:
    t0 = time.perf_counter()
    if method == "bicubic":
        return bicubic_sequence(lr, scale), time.perf_counter() - t0, []
    enh = Enhancer(scale=scale, model=model, adapt=method.startswith("adapted"), blur=blur,
                   project=method.endswith("projection"), adapt_config=cfg)
    t0 = time.perf_counter()
    out = list(enh.process(lr))
    return out, time.perf_counter() - t0, [r.to_dict() for r in enh.reports]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--photos", default="/work/data/photos", help="folder whose held-out photos make sequences")
    ap.add_argument("--quick", action="store_true", help="2 photo sequences of 12 frames, no clips")
    ap.add_argument("--json", default=None)
    ap.add_argument("--model", default=None, help="override the case's model")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--patch", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--layers", default=None)
    ap.add_argument("--anchor", type=float, default=None)
    ap.add_argument("--min-gain", type=float, default=None)
    ap.add_argument("--optimizer", default=None)
    ap.add_argument("--loss", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = AdaptConfig()
    for k in ("steps", "seconds", "patch", "lr", "layers", "anchor", "optimizer", "loss"):
        if getattr(args, k) is not None:
            setattr(cfg, k, getattr(args, k))
    if args.min_gain is not None:
        cfg.min_gain_db = args.min_gain
    seqs = heldout_sequences([args.photos], photos=2 if args.quick else 5, photo_frames=12 if args.quick else 24,
                             clips=not args.quick)
    print(f"# Adaptation quality, {len(seqs)} held-out sequences: {', '.join(s.name for s in seqs)}")
    print(f"adapt config: {cfg.to_dict()}\n")
    results: dict = {}
    for case in args.cases:
        model, scale, footage_blur, told_blur = CASES[case]
        model = args.model or model
        op = Degradation(scale=scale, blur_sigma=footage_blur)
        rows: dict[str, dict] = {}
        for method in args.methods:
            per_seq = []
            for seq in seqs:
                gt = [f[: f.shape[0] // scale * scale, : f.shape[1] // scale * scale] for f in seq.frames]
                lr = degrade_sequence(gt, op)
                out, secs, reports = run_method(method, lr, model, scale, told_blur, cfg)
                m = evaluate(out, gt, scale)
                m.update(seconds=secs, name=seq.name, reports=reports)
                per_seq.append(m)
            rows[method] = {"mean": {k: float(np.mean([p[k] for p in per_seq]))
                                     for k in ("y_psnr", "ssim", "lpips", "tof", "seconds")},
                            "per_sequence": per_seq}
        results[case] = rows
        print(f"## {case}: {model}, footage {op}, x{scale}" + (f", --blur {told_blur}" if told_blur else ""))
        print("\n| method | Y-PSNR | SSIM | LPIPS | tOF | seconds (all sequences) |\n|---|---|---|---|---|---|")
        for method, r in rows.items():
            m = r["mean"]
            print(f"| {method} | {m['y_psnr']:.2f} | {m['ssim']:.4f} | {m['lpips']:.4f} | {m['tof']:.3f} | "
                  f"{m['seconds'] * len(seqs):.1f} |")
        if "base" in rows:
            base = [p["y_psnr"] for p in rows["base"]["per_sequence"]]
            for method in ("projection", "adapted", "adapted+projection"):
                if method in rows:
                    d = [p["y_psnr"] - b for p, b in zip(rows[method]["per_sequence"], base)]
                    print(f"\n{method} - base, Y-PSNR per sequence: " + ", ".join(f"{x:+.2f}" for x in d))
        if "adapted" in rows:
            acc = [rep for p in rows["adapted"]["per_sequence"] for rep in p["reports"]]
            if acc:
                print(f"\nkeyframes: {len(acc)}, accepted {sum(r['accepted'] for r in acc)}, "
                      f"mean {np.mean([r['seconds'] for r in acc]):.1f} s and {np.mean([r['steps'] for r in acc]):.0f} steps each; "
                      "held-out LR-PSNR before -> after: "
                      + ", ".join(f"{r['heldout_psnr_before']:.1f}->{r['heldout_psnr_after']:.1f}" for r in acc))
        print()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=lambda o: None if isinstance(o, float) and math.isnan(o) else str(o)))


if __name__ == "__main__":
    main()
