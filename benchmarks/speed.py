"""Speed benchmark: model time (PyTorch vs ONNX Runtime), share of the machine's GEMM rate,
end-to-end `enhance` fps with the time per stage, adaptation cost and weight-swap time.

    python benchmarks/speed.py [--model vsrft-mse] [--seconds 10] [--size 320x180]

Prints markdown tables; one run, so compare the ratios inside it (these machines are noisy).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vsrft.engine import Enhancer, enhance  # noqa: E402
from vsrft.models import checkpoint  # noqa: E402
from vsrft.runtime.export import export_onnx  # noqa: E402
from vsrft.runtime import backends  # noqa: E402
from vsrft.runtime.session import Runtime  # noqa: E402


def conv_gflops(model: nn.Module, x: torch.Tensor) -> float:
    total = [0]

    def hook(mod: nn.Conv2d, inp, out) -> None:
        k = mod.weight.shape[1] * mod.weight.shape[2] * mod.weight.shape[3]
        total[0] += 2 * k * out.numel()

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    return total[0] / 1e9


def gemm_gflops(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.rand(n, n), torch.rand(n, n)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9


def timeit(fn, reps: int) -> float:
    fn()
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def make_clip(path: Path, w: int, h: int, seconds: float, two_shots: bool) -> None:
    """A real-content clip: the sample concert scaled to w x h (two shots), else testsrc2."""
    sample = Path(__file__).resolve().parents[1] / "samples" / "concert.mp4"
    if two_shots:
        half = seconds / 2
        src = (f"-stream_loop -1 -i {sample} -f lavfi -i testsrc2=size={w}x{h}:rate=25 "
               f"-filter_complex [0:v]scale={w}:{h},setsar=1,fps=25,trim=duration={half},setpts=PTS-STARTPTS[a];"
               f"[1:v]setsar=1,trim=duration={half},setpts=PTS-STARTPTS[b];[a][b]concat=n=2:v=1[v] -map [v]")
    else:
        src = f"-stream_loop -1 -i {sample} -vf scale={w}:{h},fps=25 -t {seconds}"
    cmd = f"ffmpeg -v error -y {src} -c:v libx264 -crf 16 -pix_fmt yuv420p {path}"
    subprocess.run(cmd.split(), check=True)


MODES = {   # label: Enhancer options
    "none": dict(adapt=False),
    "default (in line on the CPU)": dict(),
    "background (--adapt-background)": dict(adapt_thread=True),
    "in line, step budget only (--adapt-sync)": dict(adapt_sync=True),
}


def end_to_end(clip: Path, out: Path, model: str, mode: str) -> dict:
    """One `enhance` run; called in a fresh process per mode, so that each pays the same one-time
    costs (PyTorch's first fine-tuning) and its peak RSS is its own."""
    enh = Enhancer(scale=4, model=model, **MODES[mode])
    t0 = time.perf_counter()
    stats = enhance(clip, out, enhancer=enh)
    wall = time.perf_counter() - t0
    enh.close()
    return {"wall": wall, "frames": stats.frames, "seconds": dict(stats.seconds), "runtime": enh.network.runtime.label,
            "keyframe_seconds": [r.seconds for r in enh.reports],
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def end_to_end_in_child(clip: Path, out: Path, model: str, mode: str) -> dict:
    run = subprocess.run([sys.executable, __file__, "--child", json.dumps([str(clip), str(out), model, mode])],
                         capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"end-to-end run {model} / {mode} failed:\n{run.stderr}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=None)
    ap.add_argument("--size", default="320x180")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--skip-adapt", action="store_true")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        clip, out, model, mode = json.loads(args.child)
        print(json.dumps(end_to_end(Path(clip), Path(out), model, mode)))
        return
    models = args.model or ["vsrft-mse"]
    w, h = map(int, args.size.split("x"))
    torch.set_num_threads(os.cpu_count() or 1)
    sample = Path(__file__).resolve().parents[1] / "samples" / "concert.mp4"
    digest = hashlib.sha256(sample.read_bytes()).hexdigest() if sample.is_file() else "missing"
    # the only data this benchmark reads is in the repository, not the data folder of benchmarks/data.py
    print(f"data: {sample.relative_to(sample.parents[1])} (in the repository), sha256 {digest}")
    cpu = backends.cpu_info()
    print(f"# vsrft speed, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}\n")
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores, flags: {' '.join(cpu['flags'])}\n")
    gemm = gemm_gflops()
    print(f"Large GEMM (torch.mm 2048^2): {gemm:.0f} GFLOP/s\n")
    print(f"## Model time at {w}x{h} -> x4\n")
    print("| model | GFLOP/frame | PyTorch NCHW s | PyTorch channels_last s | ORT s | ORT fps | ORT GFLOP/s | share of GEMM rate |")
    print("|---|---|---|---|---|---|---|---|")
    for name in models:
        module, info = checkpoint.load(name)
        x = torch.rand(1, 3 * info.frames, h, w)
        gf = conv_gflops(module, x)
        with torch.no_grad():
            t_nchw = timeit(lambda: module(x), 5)
            mcl = module.to(memory_format=torch.channels_last)
            xcl = x.contiguous(memory_format=torch.channels_last)
            t_cl = timeit(lambda: mcl(xcl), 5)
        rt = Runtime(export_onnx(module, 3 * info.frames), info.scale, module.receptive_radius, tile=4096)
        xn = x[0].numpy()
        t_ort = timeit(lambda: rt.run(xn), 10)
        print(f"| {name} | {gf:.1f} | {t_nchw:.3f} | {t_cl:.3f} | {t_ort:.3f} | {1 / t_ort:.1f} | {gf / t_ort:.0f} | {gf / t_ort / gemm:.0%} |")
        state = {k: v.numpy() + 0 for k, v in module.state_dict().items() if k in rt.weight_names}
        swaps = [rt.swap_weights(state) for _ in range(5)]
        t0 = time.perf_counter()
        export_onnx(module, 3 * info.frames)
        t_export = time.perf_counter() - t0
        print(f"\nweight swap (edit initializers + new session): {np.median(swaps) * 1000:.0f} ms median of 5; "
              f"re-export instead: {t_export * 1000:.0f} ms\n")
        # --runtime auto (what `vsrft enhance` uses by default) against ONNX Runtime, interleaved
        auto = Runtime(export_onnx(module, 3 * info.frames), info.scale, module.receptive_radius, tile=4096,
                       runtime="auto", module=module, bf16_default=backends.bf16_default(info.name, module))
        pair = {"ort": rt, "auto": auto}
        for r in pair.values():
            r.run(xn)
        med = {k: [] for k in pair}
        for _ in range(10):
            for k, r in pair.items():
                t0 = time.perf_counter()
                r.run(xn)
                med[k].append(time.perf_counter() - t0)
        t_ort, t_auto = np.median(med["ort"]), np.median(med["auto"])
        swap_first = []
        for _ in range(5):
            t0 = time.perf_counter()
            auto.swap_weights(state)
            auto.run(xn)
            swap_first.append(time.perf_counter() - t0 - t_auto)
        print(f"--runtime auto: {auto.label}, {t_auto:.3f} s/frame ({1 / t_auto:.1f} fps) against ONNX Runtime's "
              f"{t_ort:.3f} s: {t_ort / t_auto:.2f}x (medians of 10 interleaved); {gf / t_auto:.0f} GFLOP/s; "
              f"weight swap with the first inference's extra time: {np.median(swap_first) * 1000:.0f} ms median of 5\n")

    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        make_clip(clip, w, h, args.seconds, two_shots=True)
        print(f"## End to end: `vsrft enhance` on a {args.seconds:g} s {w}x{h} clip with two shots, x4, libx264 veryfast\n")
        print("| model | adaptation | frames | wall s | fps | decode s | windows s | inference s | adaptation s "
              "| waiting for adaptation s | encode s | peak RSS MB |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        walls = {}
        modes = ["none"] if args.skip_adapt else list(MODES)
        for name in models:
            for mode in modes:
                r = end_to_end_in_child(clip, Path(tmp) / "out.mp4", name, mode)
                walls[mode] = r["wall"]
                s = r["seconds"]
                print(f"| {name} ({r['runtime']}) | {mode} | {r['frames']} | {r['wall']:.1f} | {r['frames'] / r['wall']:.1f} | "
                      f"{s['decode']:.1f} | {s['windows']:.1f} | {s['inference']:.1f} | {s['adaptation']:.1f} | "
                      f"{s['adaptation_wait']:.1f} | {s['encode']:.1f} | {r['rss_mb']:.0f} |")
                if r["keyframe_seconds"]:
                    keyframes = r["keyframe_seconds"]
            print()
            for mode in modes[1:]:
                print(f"{name}, adaptation {mode}: wall time with adaptation / without: "
                      f"{walls[mode] / walls['none']:.2f}")
            if len(modes) > 1:
                print(f"\n{name}: {len(keyframes)} keyframes, {np.mean(keyframes):.1f} s per keyframe "
                      "(--adapt-sync, the first one includes PyTorch's one-time setup)\n")
        print("\nStage seconds overlap (three threads), so they add up to more than the wall time.")


if __name__ == "__main__":
    main()
