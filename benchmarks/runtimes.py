"""Inference runtimes on this CPU: ONNX Runtime (today's and tuned session options), OpenVINO fp32/bf16,
PyTorch channels_last fp32/bf16 autocast, on the exported graph of vsrft-mse (and vsrft-gan) and of
a third-party model (Real-ESRGAN animevideov3); the weight-swap cost per runtime; what `--runtime
auto` picks; and (--quality) what bf16 costs in code values and Y-PSNR against ground truth.

    python benchmarks/runtimes.py [--size 320x180] [--reps 15] [--models vsrft-mse,vsrft-gan,animevideov3]
                                  [--quality] [--quality-frames 8]

Every timing row of one table is measured interleaved in one process (A, B, C, A, B, C, ...; medians),
so compare ratios inside a table: the machine is shared and noisy.
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vsrft.network import Network, to_uint8  # noqa: E402
from vsrft.runtime import backends  # noqa: E402

THIRD_PARTY = {"animevideov3": "REALESRGAN_ANIMAVIDEOV3_UP4X"}


def model_path(name: str) -> str:
    if name in THIRD_PARTY:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from realesrgan_models import ensure_realesrgan_models
        return str(ensure_realesrgan_models()[THIRD_PARTY[name]])
    return name


def machine_lines() -> list[str]:
    info = backends.cpu_info()
    versions = [f"onnxruntime {ort.__version__}", f"torch {torch.__version__}"]
    if backends.available("openvino"):
        import openvino
        versions.append(f"openvino {openvino.__version__.split('-')[0]}")
    return [f"CPU: {info['model']}, {info['cores']} cores ({platform.machine()}), flags: {' '.join(info['flags'])}",
            f"bf16 in hardware: {'yes' if backends.cpu_has_bf16() else 'no'}; "
            f"{', '.join(versions)}; {time.strftime('%Y-%m-%d')}"]


# ------------------------------------------------------------------------------ the variants

def ort_variant(data: bytes, *, threads: int = 0, spin: bool = False, denormal_zero: bool = False,
                level: str = "all", arena: bool = True):
    so = ort.SessionOptions()          # as `session_options`, with the changes asked for
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    so.log_severity_level = 4
    if denormal_zero:
        so.add_session_config_entry("session.set_denormal_as_zero", "1")
    if level != "all":
        so.graph_optimization_level = {"extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                       "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}[level]
    so.enable_cpu_mem_arena = arena
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"window": x})[0]


def ov_variant(data: bytes, precision: str, tuned: bool):
    import openvino as ov
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
    if tuned:
        return backends.OpenVinoSession(data, precision)
    compiled = core.compile_model(core.read_model(data), "CPU", config)
    req = compiled.create_infer_request()
    return lambda x: req.infer({0: x})[0]


def torch_variant(module: torch.nn.Module, precision: str):
    return backends.TorchSession(copy.deepcopy(module), precision)


def variants(net: Network) -> dict[str, object]:
    data = net.runtime._fp32_bytes
    cores = backends.physical_cores()
    out = {
        "ONNX Runtime, today's options (no spinning)": ort_variant(data),
        f"ONNX Runtime, {cores} threads + spinning": ort_variant(data, threads=cores, spin=True),
        "ONNX Runtime, + denormals as zero": ort_variant(data, threads=cores, denormal_zero=True),
        "ONNX Runtime, graph level extended": ort_variant(data, level="extended"),
        "ONNX Runtime, no memory arena": ort_variant(data, arena=False),
    }
    if backends.available("openvino"):
        out["OpenVINO fp32, default config"] = ov_variant(data, "fp32", tuned=False)
        out["OpenVINO fp32 (vsrft's config: latency, 1 stream, cores threads)"] = ov_variant(data, "fp32", tuned=True)
        if backends.supports_bf16("openvino"):
            out["OpenVINO bf16 (vsrft's config)"] = ov_variant(data, "bf16", tuned=True)
    out["PyTorch channels_last fp32"] = torch_variant(net.module, "fp32")
    if backends.supports_bf16("torch"):
        out["PyTorch channels_last bf16 autocast"] = torch_variant(net.module, "bf16")
    return out


def interleaved(fns: dict[str, object], x: np.ndarray, reps: int) -> dict[str, float]:
    for fn in fns.values():     # warm-up: the first calls at a shape prepare kernels and buffers
        fn(x)
        fn(x)
    return backends.interleaved_medians(fns, x, reps)


def speed_table(name: str, size: tuple[int, int], reps: int) -> None:
    net = Network.load(model_path(name), 4, runtime="onnxruntime")
    w, h = size
    x = np.random.default_rng(0).random((1, 3 * net.frames, h, w), dtype=np.float32)
    fns = variants(net)
    med = interleaved(fns, x, reps)
    base = med[next(iter(fns))]
    print(f"\n### {name}: {w}x{h} -> x4, median of {reps} interleaved\n")
    print("| runtime | ms/frame | vs ORT today |")
    print("|---|---|---|")
    for k, v in med.items():
        print(f"| {k} | {1e3 * v:.1f} | {base / v:.2f}x |")


# ------------------------------------------------------------------------------ swap and probe

def swap_table(name: str, size: tuple[int, int], reps: int = 5) -> None:
    """Per runtime: the swap (initializer edit + new session / recompile / module copy) and the
    extra time of the first inference after it (kernels and buffers made for the new session)."""
    path = model_path(name)
    pairs = [("onnxruntime", "fp32")] + [(r, p) for r in ("openvino", "torch") if backends.available(r)
                                         for p in ("fp32", "bf16") if p == "fp32" or backends.supports_bf16(r)]
    nets = {f"{r}/{p}": Network.load(path, 4, runtime=r, precision=p) for r, p in pairs}
    w, h = size
    rng = np.random.default_rng(1)
    frames = [(rng.random((h, w, 3)) * 255).astype(np.uint8) for _ in range(5)]
    states = [{k: v * (1 + 0.01 * i) for k, v in next(iter(nets.values())).module.state_dict().items()}
              for i in range(2)]
    swap, first, steady = ({k: [] for k in nets} for _ in range(3))
    for n in nets.values():
        n.infer(frames)
        n.infer(frames)
    for i in range(reps):
        for k, n in nets.items():
            swap[k].append(n.swap(states[i % 2]))
            t = time.perf_counter()
            n.infer(frames)
            first[k].append(time.perf_counter() - t)
            t = time.perf_counter()
            n.infer(frames)
            steady[k].append(time.perf_counter() - t)
    print(f"\n### weight swap, {name} at {w}x{h}, median of {reps} interleaved\n")
    print("| runtime | swap ms | first inference after it, extra ms | total ms |")
    print("|---|---|---|---|")
    for k in nets:
        s, extra = 1e3 * statistics.median(swap[k]), 1e3 * (statistics.median(first[k]) - statistics.median(steady[k]))
        print(f"| {k} | {s:.0f} | {extra:.0f} | {s + extra:.0f} |")


def probe_line(name: str) -> None:
    """What --runtime auto picks for this model (a fresh probe, not the cache)."""
    with tempfile.TemporaryDirectory() as tmp:
        import os
        old = os.environ.get("VSRFT_CACHE")
        os.environ["VSRFT_CACHE"] = tmp
        try:
            t = time.perf_counter()
            Network.load(model_path(name), 4, runtime="onnxruntime")     # the export, outside the timing
            t = time.perf_counter()
            net = Network.load(model_path(name), 4, runtime="auto", precision="auto")
            dt = time.perf_counter() - t
        finally:
            os.environ.pop("VSRFT_CACHE") if old is None else os.environ.__setitem__("VSRFT_CACHE", old)
    c = net.runtime.choice
    print(f"\n{name}: --runtime auto --precision auto picks **{c.label}** (bf16 allowed: "
          f"{'yes' if backends.bf16_default(net.info.name, net.module) else 'no'}); probe at "
          f"{backends.PROBE_SIZE[1]}x{backends.PROBE_SIZE[0]}, ms: "
          + ", ".join(f"{k} {v:.1f}" for k, v in c.ms.items()) + f"; load with the probe {dt:.1f} s")


# ------------------------------------------------------------------------------ quality of bf16

def quality_sequences(frames: int) -> list[tuple[str, list[np.ndarray]]]:
    from vsrft.evaluation import clip_sequences
    from vsrft.train.data import load_clip_frames

    sample = Path(__file__).resolve().parents[1] / "samples" / "concert.mp4"
    raw = load_clip_frames(sample, max_frames=60)
    seqs = []
    for start in (0, 30):     # two stretches of the sample, full frame (176x144)
        seqs.append((f"concert {start}-{start + frames - 1}", [f[:f.shape[0] // 4 * 4, :f.shape[1] // 4 * 4]
                                                            for f in raw[start:start + frames]]))
    for seq in clip_sequences(frames=frames):
        seqs.append((seq.name, list(seq.frames)))
    return seqs


def upscale(net: Network, lr: list[np.ndarray]) -> list[np.ndarray]:
    r = net.frames // 2
    return [net.upscale([lr[min(max(i + d, 0), len(lr) - 1)] for d in range(-r, r + 1)]) for i in range(len(lr))]


def quality_table(names: list[str], frames: int) -> None:
    from vsrft.degradation import Degradation
    from vsrft.evaluation import degrade_sequence
    from vsrft.metrics.fidelity import psnr_y

    seqs = quality_sequences(frames)
    op = Degradation(4)
    lrs = [(n, gt, degrade_sequence(gt, op)) for n, gt in seqs]
    print(f"\n### bf16 against fp32: code values (0..255) and Y-PSNR against ground truth, x4, "
          f"{frames} frames per sequence\n")
    print("Sequences: " + "; ".join(f"{n} ({gt[0].shape[1]}x{gt[0].shape[0]})" for n, gt, _ in lrs) + "\n")
    print("| model | bf16 runtime | mean abs diff | max abs diff | pixels > 1 | Y-PSNR fp32 dB | Y-PSNR bf16 dB | "
          "loss dB (mean) | worst sequence loss dB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        path = model_path(name)
        ref = Network.load(path, 4, runtime="onnxruntime", precision="fp32")
        outs_ref = [upscale(ref, lr) for _, _, lr in lrs]
        p_ref = [np.mean([psnr_y(o, g, border=4) for o, g in zip(out, gt)]) for out, (_, gt, _) in zip(outs_ref, lrs)]
        for r in ("openvino", "torch"):
            if not backends.supports_bf16(r):
                continue
            net = Network.load(path, 4, runtime=r, precision="bf16")
            outs = [upscale(net, lr) for _, _, lr in lrs]
            diffs = np.concatenate([np.abs(a.astype(np.int16) - b).ravel() for out, o_ref in zip(outs, outs_ref)
                                    for a, b in zip(out, o_ref)])
            p = [np.mean([psnr_y(o, g, border=4) for o, g in zip(out, gt)]) for out, (_, gt, _) in zip(outs, lrs)]
            loss = [a - b for a, b in zip(p_ref, p)]
            print(f"| {name} | {r} | {diffs.mean():.3f} | {diffs.max()} | {100 * (diffs > 1).mean():.2f}% | "
                  f"{np.mean(p_ref):.3f} | {np.mean(p):.3f} | {np.mean(loss):+.4f} | {max(loss):+.4f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="320x180")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--reps-third-party", type=int, default=5, help="reps for the (40x slower) Real-ESRGAN model")
    ap.add_argument("--models", default="vsrft-mse,vsrft-gan,animevideov3")
    ap.add_argument("--quality", action="store_true", help="also the bf16 quality table (minutes)")
    ap.add_argument("--quality-only", action="store_true")
    ap.add_argument("--quality-frames", type=int, default=8)
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    names = args.models.split(",")
    torch.set_grad_enabled(False)
    print(f"# Runtimes, `python benchmarks/runtimes.py {' '.join(sys.argv[1:])}`".rstrip() + "\n")
    print("\n".join(f"- {line}" for line in machine_lines()))
    if not args.quality_only:
        for name in names:
            speed_table(name, size, args.reps_third_party if name in THIRD_PARTY else args.reps)
        swap_table(names[0], size)
        for name in names:
            probe_line(name)
    if args.quality or args.quality_only:
        quality_table(names, args.quality_frames)


if __name__ == "__main__":
    main()
