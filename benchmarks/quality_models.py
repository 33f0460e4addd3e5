"""Model-card validation table: bicubic vs the vsrft models at x4 on the held-out set.

    python benchmarks/data.py                  # once: the photos and clips (see README, "Reproduce the figures")
    PYTHONPATH=. python benchmarks/quality_models.py --models vsrft-mse vsrft-gan --json quality.json

Builds `vsrft.evaluation.heldout_sequences` (camera motion over the photos training held out,
plus bikes.mp4 / vtest.avi when installed), degrades them with the training operator
(bicubic x4), upscales with bicubic and each model through `Enhancer`, and prints the data
folder's manifest digest (`--data`: the folder `benchmarks/data.py` made), a markdown table
(Y-PSNR, SSIM, LPIPS, tOF, warping-error gap), the per-sequence values, the sequences used,
the checks of the "Built-in VSR models" bar and the exact command. `--quick` is a small smoke
run (2 photos, 8 frames per sequence); its numbers are not the model card's.
Models are built-in names or checkpoint paths. Exit status 1 when a bar check fails, 2 when a
model cannot be loaded (unless --skip-missing).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import sys
import time
from pathlib import Path

try:
    import vsrft  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# figures comparable across machines: float32 ONNX Runtime unless VSRFT_RUNTIME/VSRFT_PRECISION say otherwise
# (--runtime auto picks per machine, and bf16 moves outputs by up to 0.02 dB: docs/speed.md)
os.environ.setdefault("VSRFT_RUNTIME", "onnxruntime")
os.environ.setdefault("VSRFT_PRECISION", "fp32")

from vsrft.degradation import Degradation  # noqa: E402
from vsrft.errors import VsrftError  # noqa: E402
from vsrft.evaluation import (bar_checks, data_dir, data_line, heldout_sequences, model_table,  # noqa: E402
                              photos_dir, split_method, to_markdown)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["vsrft-mse", "vsrft-gan"],
                   help="built-in model names or checkpoint paths (default: vsrft-mse vsrft-gan), adaptation off; "
                        "append +adapt (vsrft-gan+adapt) for a row with test-time adaptation on")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="data folder made by benchmarks/data.py (default: $VSRFT_DATA, else ~/.cache/vsrft/data)")
    p.add_argument("--photos", nargs="+", default=None,
                   help="photo folders; only photos is_held_out(path, 0.12) are used (default: DIR/photos)")
    p.add_argument("--json", metavar="PATH", help="also write the table, sequences and command as JSON")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 photos and 8 frames per sequence")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="camera-motion seed (default 0: the model-card set)")
    p.add_argument("--no-clips", action="store_true", help="leave out bikes.mp4 and vtest.avi")
    p.add_argument("--threads", type=int, default=0,
                   help="torch and ONNX Runtime threads (default 0: their defaults); 1 is faster beside a busy CPU")
    p.add_argument("--mse", help="model checked against the MSE bar (default: the first --models entry with "
                                 "'mse' in its name, else the first)")
    p.add_argument("--gan", help="model checked against the GAN bar (default: the first --models entry with "
                                 "'gan' in its name, else the second)")
    p.add_argument("--skip-missing", action="store_true", help="leave out models that cannot be loaded")
    p.add_argument("-v", "--verbose", action="store_true", help="log per-sequence progress")
    return p


def _role(models: list[str], explicit: str | None, word: str, index: int) -> str | None:
    if explicit:
        return explicit
    named = sorted((m for m in models if word in Path(split_method(m)[0]).name.lower()),
                   key=lambda m: split_method(m)[1])           # the shipped model before its +adapt row
    if named:
        return named[0]
    return models[index] if len(models) > index else None


def _jsonable(x):
    if isinstance(x, float):
        return None if math.isnan(x) else ("inf" if math.isinf(x) else x)
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    from vsrft.models import checkpoint
    models, missing = [], []
    for m in args.models:
        try:
            checkpoint.load(split_method(m)[0])
            models.append(m)
        except VsrftError as exc:
            missing.append(m)
            print(f"model {m}: {exc}", file=sys.stderr)
    if missing and not args.skip_missing:
        print("cannot load " + ", ".join(missing) + " (pass --skip-missing to leave them out)", file=sys.stderr)
        return 2

    print(data_line(args.data, None if args.data or not args.photos else args.photos[0]), flush=True)
    seqs = heldout_sequences(args.photos or [photos_dir(args.data)], data=args.data, photos=2 if args.quick else None,
                             photo_frames=8 if args.quick else 12, clips=not args.no_clips, clip_frames=8 if args.quick else 30, scale=args.scale,
                             seed=args.seed)
    if not seqs:
        print(f"no validation sequences (no held-out photos under {args.photos or photos_dir(args.data)} and no clip; "
              f"run python benchmarks/data.py {data_dir(args.data)})", file=sys.stderr)
        return 2
    op = Degradation(scale=args.scale)
    rows = model_table(models, seqs, scale=args.scale, degradation=op, threads=args.threads)
    mse, gan = _role(models, args.mse, "mse", 0), _role(models, args.gan, "gan", 1)
    checks = bar_checks(rows, mse, gan)
    elapsed = time.perf_counter() - t_start
    command = "PYTHONPATH=. python benchmarks/quality_models.py " + shlex.join(argv)

    print(f"## Validation at x{args.scale}{' (QUICK smoke run: not the model-card set)' if args.quick else ''}\n")
    print(f"Degradation: {op} (8-bit LR). Bicubic: cv2.INTER_CUBIC (a = -0.75). Means over sequences; "
          f"Y-PSNR/SSIM with a {args.scale}-pixel border; LPIPS AlexNet; tOF in pixels; warping-error gap = "
          f"output minus ground truth, x1e-4 on the [0, 1]^2 scale. Lower is better for LPIPS, tOF, gap.\n")
    print(to_markdown(rows, per_sequence=True))
    print("\nSequences:")
    for s in seqs:
        d = s.describe()
        print(f"- {d['name']}: {d['frames']} frames {d['width']}x{d['height']}, {d['source']} [sha1 {d['digest']}]")
    if missing:
        print("\nModels left out (could not be loaded): " + ", ".join(missing))
    if checks:
        print("\nBar (issue \"Built-in VSR models\"):")
        for c in checks:
            v = c["value"]
            shown = "n/a" if math.isnan(v) else f"{v:+.2f}" if "dB" in c["check"] or "LPIPS" in c["check"] else f"{v:.2f}"
            print(f"- {c['check']}: {shown} -> {'PASS' if c['passed'] else 'FAIL'}")
    print("\nUpscaling seconds (all sequences): " +
          ", ".join(f"{r['method']} {r['seconds']:.1f}" for r in rows))
    print(f"Total runtime: {elapsed:.0f} s")
    print(f"Command: {command}")

    if args.json:
        blob = {"command": command, "scale": args.scale, "degradation": op.to_json(), "quick": args.quick,
                "seed": args.seed, "sequences": [s.describe() for s in seqs], "rows": rows,
                "bar": checks, "missing_models": missing, "seconds": elapsed}
        Path(args.json).write_text(json.dumps(_jsonable(blob), indent=2) + "\n")
    return 1 if any(not c["passed"] for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
