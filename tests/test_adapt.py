"""Test-time adaptation: the operator, the fine-tuner's loss and safety, hot swap, the report."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import SAMPLE, decoded_rgb, vsrft
from vsrft.adapt import AdaptConfig, TrainingWindow, finetune
from vsrft.adapt.motion import global_motion, motion_view
from vsrft.adapt.finetune import consistency_loss, sample_crops
from vsrft.adapt.optimizer import SGD, Adam
from vsrft.degradation import (Degradation, degrade, degrade_torch, gaussian_matrix, lr_deblur_taps, project,
                               resize)
from vsrft.cli import build_parser, make_enhancer
from vsrft.engine import Enhancer


@pytest.fixture(scope="module")
def sample_frames() -> list[np.ndarray]:
    return decoded_rgb(SAMPLE)[30:42]          # inside the sample's second shot


def test_bicubic_matrices_match_torch_antialias() -> None:
    x = torch.rand(1, 3, 64, 48)
    ours = degrade_torch(x, Degradation(scale=4))
    ref = F.interpolate(x, size=(16, 12), mode="bicubic", antialias=True, align_corners=False)
    assert (ours - ref).abs().max().item() < 1e-5
    up = resize(x[0].permute(1, 2, 0).numpy(), 100, 70)
    ref_up = F.interpolate(x, size=(100, 70), mode="bicubic", antialias=True, align_corners=False)
    assert np.abs(up - ref_up[0].permute(1, 2, 0).numpy()).max() < 1e-5


def test_degradation_is_a_value_object() -> None:
    op = Degradation(scale=3, blur_sigma=1.6)
    assert Degradation.from_json(op.to_json()) == op
    assert "x3" in str(op) and "1.6" in str(op)
    m = gaussian_matrix(64, 1.6)
    assert np.count_nonzero(m[32]) == 11        # odd size >= 6 sigma = 9.6 -> 11 taps
    with pytest.raises(ValueError):
        Degradation(scale=4, blur_sigma=-1)


def test_kernel_file_blur_equals_gaussian(tmp_path) -> None:
    sigma = 1.2
    g = np.exp(-0.5 * (np.arange(-4, 5) / sigma) ** 2)
    k = np.outer(g, g)
    np.save(tmp_path / "k.npy", k)
    img = np.random.default_rng(0).random((48, 40, 3)).astype(np.float32)
    # away from the borders (where edge handling differs) a separable kernel file equals the Gaussian
    a = degrade(img, Degradation.from_kernel_file(tmp_path / "k.npy", 2))
    b = degrade(img, Degradation(scale=2, blur_sigma=sigma))
    assert np.abs(a - b)[4:-4, 4:-4].max() < 2e-3


def test_projection_makes_the_output_consistent() -> None:
    rng = np.random.default_rng(1)
    op = Degradation(scale=4, blur_sigma=1.0)
    hr = rng.random((3, 64, 96)).astype(np.float32)
    y = rng.random((3, 16, 24)).astype(np.float32)
    x = project(hr, y, op)
    ax = degrade(x.transpose(1, 2, 0), op).transpose(2, 0, 1)
    assert np.abs(ax - y).max() < 1e-3


def _windows(adaptation_window, frames: list[np.ndarray]) -> list[np.ndarray]:
    pad = [frames[0]] * 2 + frames + [frames[-1]] * 2
    return [adaptation_window(pad[i:i + 5]) for i in range(len(frames))]


def test_loss_falls_on_a_real_clip(tiny_model, sample_frames) -> None:
    enh = Enhancer(model=str(tiny_model), adapt=False)
    data = _windows(enh.network.adaptation_window, sample_frames)
    cfg = AdaptConfig(steps=25, seconds=120, lr=1e-3, batch=4, patch=32, loss="lr", min_gain_db=0.0)
    state, res = finetune(enh.network.module, data, Degradation(4), 4, cfg)
    assert res.steps == 25 and len(res.losses) == 25
    assert np.mean(res.losses[-5:]) < np.mean(res.losses[:5])
    assert res.lr_psnr_after > res.lr_psnr_before
    assert res.accepted and state is not None


def test_multi_frame_loss_falls_and_sees_the_neighbours(tiny_model, sample_frames) -> None:
    enh = Enhancer(model=str(tiny_model), adapt=False)
    pad = [sample_frames[0]] * 2 + sample_frames + [sample_frames[-1]] * 2
    frames = [pad[i:i + 5] for i in range(len(sample_frames))]
    data = [TrainingWindow.from_frames(enh.network.adaptation_window(f), f, neighbours=True) for f in frames]
    assert all(w.neighbours is not None and len(w.neighbours) >= 2 for w in data[2:-2])   # the camera pans
    cfg = AdaptConfig(steps=25, seconds=120, lr=1e-3, batch=4, patch=32, min_gain_db=0.0, neighbours=True)
    state, res = finetune(enh.network.module, data, Degradation(4), 4, cfg)
    assert res.steps == 25 and np.mean(res.losses[-5:]) < np.mean(res.losses[:5])
    assert res.accepted and state is not None and res.aligned_neighbours >= 2 * (len(data) - 4)
    # the neighbours' terms are in the loss: it differs from the centre-only loss on the same crops
    batch = sample_crops(data, 4, 32, np.random.default_rng(0), 4)
    with torch.no_grad():
        both = consistency_loss(enh.network.module, batch, Degradation(4), 4, cfg).item()
        centre = consistency_loss(enh.network.module, batch, Degradation(4), 4, replace(cfg, neighbours=False)).item()
    assert both != pytest.approx(centre, rel=1e-3)
    # the cross-frame check: a gain on the centre frames alone is not enough
    assert res.heldout_neighbour_psnr_after > res.heldout_neighbour_psnr_before
    state, res = finetune(enh.network.module, data, Degradation(4), 4, replace(cfg, min_neighbour_gain_db=100.0))
    assert state is None and not res.accepted and "neighbour frames" in res.reason


def test_diverging_learning_rate_is_caught_and_reverted(tiny_model, sample_frames) -> None:
    enh = Enhancer(model=str(tiny_model), adapt=True,
                   adapt_config=AdaptConfig(steps=15, seconds=120, lr=50.0, optimizer="sgd", batch=4, patch=32))
    before = {k: v.clone() for k, v in enh.weights.items()}
    out = list(enh.process(sample_frames[:6]))
    assert len(out) == 6
    (report,) = enh.reports
    assert not report.accepted
    assert "diverged" in report.reason or "gain" in report.reason or "non-finite" in report.reason
    assert all(torch.equal(before[k], v) for k, v in enh.weights.items())


def test_window_motions_upscale_each_distinct_frame_once_and_chain(tiny_model, sample_frames) -> None:
    enh = Enhancer(model=str(tiny_model), adapt=False)
    frames = sample_frames[:6]
    pad = [frames[0]] * 2 + frames + [frames[-1]] * 2      # a shot's first and last windows repeat frames
    windows = [pad[i:i + 5] for i in range(len(frames))]
    infer, calls = enh.network.infer, []
    enh.network.infer = lambda window, *rest: calls.append(window) or infer(window, *rest)
    motions = enh._window_motions(windows)
    assert len(calls) == len(frames)
    assert [m.shape for m in motions] == [(5, 2, 3)] * len(frames)
    assert np.isnan(motions[0][:3]).all() and np.isnan(motions[-1][2:]).all()   # the centre and its repeats
    assert np.isfinite(motions[2]).sum() == 4 * 6                                # the camera pans
    # frame 3 -> frame 2 is estimated on the network's output for each frame's own window
    h, w = frames[0].shape[:2]
    views = [motion_view(infer(windows[i]), (h, w)) for i in (2, 3)]
    direct = global_motion(views[0], views[1], resolution=2)
    np.testing.assert_allclose(motions[2][3], direct, atol=1e-3)


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_update_rules_equal_torch_optim(kind: str) -> None:
    """The fine-tuner's own Adam and SGD (no torch._dynamo import) take torch.optim's steps exactly."""
    def train(make) -> list[torch.Tensor]:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 3))
        net[0].bias.requires_grad_(False)                     # a frozen parameter gets no step
        params = [p for p in net.parameters() if p.requires_grad]
        opt, x = make(params), torch.randn(2, 3, 12, 12)
        for _ in range(6):
            opt.zero_grad()
            (net(x) ** 2).mean().backward()
            opt.step()
        return [p.detach() for p in net.parameters()]

    ours, theirs = {"adam": (lambda p: Adam(p, lr=1e-2), lambda p: torch.optim.Adam(p, lr=1e-2)),
                    "sgd": (lambda p: SGD(p, lr=1e-2), lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9))}[kind]
    a, b = train(ours), train(theirs)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    torch.manual_seed(0)
    assert not torch.equal(a[0], torch.nn.Conv2d(3, 8, 3).weight)        # the weights did move


def test_fine_tuning_does_not_import_torch_dynamo(tiny_model) -> None:
    """torch.optim's first optimizer imports torch._dynamo (1-1.6 s inside the first keyframe)."""
    code = (f"import sys, numpy as np\n"
            f"from vsrft.adapt import AdaptConfig, finetune\n"
            f"from vsrft.degradation import Degradation\n"
            f"from vsrft.engine import Enhancer\n"
            f"enh = Enhancer(model={str(tiny_model)!r}, adapt=False)\n"
            f"frames = [np.random.default_rng(i).integers(0, 256, (24, 32, 3), np.uint8) for i in range(5)]\n"
            f"data = [enh.network.adaptation_window(frames)] * 3\n"
            f"_, res = finetune(enh.network.module, data, Degradation(4), 4, AdaptConfig(steps=2, patch=16, batch=2))\n"
            f"assert res.steps == 2, res.reason\n"
            f"print('torch._dynamo' in sys.modules)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"


def test_hot_swapped_session_equals_pytorch(tiny_model, sample_frames) -> None:
    enh = Enhancer(model=str(tiny_model), adapt=True,
                   adapt_config=AdaptConfig(steps=10, seconds=120, lr=1e-3, batch=4, patch=32, min_gain_db=-100))
    list(enh.process(sample_frames[:6]))
    assert enh.reports[0].accepted and enh.reports[0].swap_seconds < 1.0
    window = sample_frames[:5]
    module = enh.network.module
    module.load_state_dict(enh.weights)
    x = torch.from_numpy(enh.network.stack(window)).float()[None] / 255
    with torch.no_grad():
        ref = module(x)[0].numpy()
    got = enh.network.runtime.run(x[0].numpy())
    assert np.abs(got - ref).max() < 1e-4
    changed = any(not torch.equal(v, enh._pretrained[k]) for k, v in enh.weights.items())
    assert changed


def test_cli_report_and_saved_weights(tiny_model, tmp_path) -> None:
    out, report, saved = tmp_path / "o.mkv", tmp_path / "run.json", tmp_path / "adapted"
    run = vsrft("enhance", SAMPLE, out, "--model", tiny_model, "--adapt-steps", "3", "--adapt-sync",
                "--codec", "ffv1", "--report", report, "--save-adapted", saved, "-q")
    assert run.returncode == 0, run.stderr
    r = json.loads(report.read_text())
    assert r["frames"] == 144 and r["adapt"] is True
    assert len(r["keyframes"]) == r["cuts"] + 1 >= 3          # one adaptation per shot
    for k in r["keyframes"]:
        for key in ("frame_index", "steps", "seconds", "lr_psnr_before", "lr_psnr_after", "accepted", "reason",
                    "aligned_neighbours"):
            assert key in k
        assert k["steps"] <= 3 and not math.isnan(k["heldout_psnr_before"])
    assert r["adapt_config"]["neighbours"] is True and any(k["aligned_neighbours"] > 0 for k in r["keyframes"])
    manifest = json.loads((saved / "manifest.json").read_text())
    assert [s["first_frame"] for s in manifest["shots"]] == [k["frame_index"] for k in r["keyframes"]]
    assert all(s["decision"].startswith("shot at ") for s in manifest["shots"])
    model = saved / manifest["shots"][-1]["file"]
    again = vsrft("enhance", SAMPLE, tmp_path / "o2.mkv", "--model", model, "--adapt-steps", "2", "--codec", "ffv1", "-q")
    assert again.returncode == 0, again.stderr           # a saved file can be adapted again
    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(b"not an onnx file")
    bad = vsrft("enhance", SAMPLE, tmp_path / "o3.mkv", "--model", foreign)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [bad.stderr.strip()]
    assert bad.stderr.startswith("vsrft: error: cannot read ONNX model")


def _run_recording(enh: Enhancer, frames: list[np.ndarray]) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """Output frames, and (frames read, frames returned) each time an adaptation starts."""
    pulled, out, events = [0], [], []

    def source():
        for f in frames:
            pulled[0] += 1
            yield f

    enh.on_stage = lambda stage: events.append((pulled[0], len(out))) if stage == "adapting" else None
    for hr in enh.process(source()):
        out.append(hr)
    return out, events


def test_background_adaptation_reads_ahead_and_equals_in_line(tiny_model) -> None:
    frames = decoded_rgb(SAMPLE)[:70]                       # the sample's first two shots
    cfg = AdaptConfig(steps=4, seconds=120, batch=4, patch=32, min_gain_db=-100)
    sync = Enhancer(model=str(tiny_model), adapt_config=cfg, adapt_sync=True)
    ref, sync_events = _run_recording(sync, frames)
    background = Enhancer(model=str(tiny_model), adapt_config=cfg, adapt_thread=True, lookahead=16)
    got, events = _run_recording(background, frames)
    background.close()
    assert len(got) == len(ref) == 70
    assert all(np.array_equal(a, b) for a, b in zip(got, ref))
    assert [r.steps for r in background.reports] == [r.steps for r in sync.reports] == [4, 4]
    cut = background.reports[1].frame_index
    # in line: the first shot is all returned before the second shot's adaptation starts;
    # in the background: it starts while the end of the first shot is still being inferred
    assert sync_events[1][1] >= cut
    assert events[1][1] < cut <= events[1][0]


def test_adaptation_runs_in_line_when_inference_is_on_the_cpu(tiny_model) -> None:
    # on the CPU the fine-tuning and inference compete for the same cores: no read-ahead thread
    auto = Enhancer(model=str(tiny_model))
    assert auto.network.runtime.provider == "CPUExecutionProvider"
    assert auto.adapt_thread is False and auto.lookahead == 0
    assert auto.report()["adapt_mode"] == "in line"
    forced = Enhancer(model=str(tiny_model), adapt_thread=True, lookahead=16)
    assert forced.adapt_thread is True and forced.lookahead == 16
    assert forced.report()["adapt_mode"] == "background thread"
    sync = Enhancer(model=str(tiny_model), adapt_sync=True, adapt_thread=True)
    assert sync.adapt_thread is False and sync.report()["adapt_mode"] == "in line, step budget only"


def test_background_adaptation_error_reaches_the_caller(tiny_model) -> None:
    enh = Enhancer(model=str(tiny_model), adapt_config=AdaptConfig(steps=2, patch=0), adapt_thread=True)
    with pytest.raises(Exception):
        list(enh.process(decoded_rgb(SAMPLE)[:12]))
    enh.close()


def test_already_consistent_shot_is_not_adapted(tiny_model, sample_frames) -> None:
    enh = Enhancer(model=str(tiny_model), adapt=False)
    data = _windows(enh.network.adaptation_window, sample_frames)
    cfg = AdaptConfig(steps=5, seconds=120, batch=4, patch=32, min_gain_db=-100)
    state, res = finetune(enh.network.module, data, Degradation(4), 4, replace(cfg, floor_db=-1000.0))
    assert state is None and res.steps == 0 and res.reason.startswith("already consistent")
    state, res = finetune(enh.network.module, data, Degradation(4), 4, cfg)      # below the default floor
    assert state is not None and res.steps == 5


def test_input_deblur_restores_the_bicubic_only_input(sample_frames) -> None:
    # Real frames as ground truth: blurred-then-downsampled footage, filtered in LR by the taps,
    # comes much closer to the bicubic-only LR the network was trained on.
    taps = lr_deblur_taps(Degradation(4, blur_sigma=1.6))
    assert taps is not None and abs(float(taps.sum()) - 1) < 1e-6 and np.allclose(taps, taps[::-1])
    assert lr_deblur_taps(Degradation(4)) is None
    assert lr_deblur_taps(Degradation(4, kernel=((0.0, 0.1, 0.0), (0.1, 0.6, 0.1), (0.0, 0.1, 0.0)))) is None
    for hr in sample_frames[:3]:
        x = hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4].astype(np.float32)
        sharp = degrade(x, Degradation(4))
        blurred = degrade(x, Degradation(4, blur_sigma=1.6))
        restored = cv2.sepFilter2D(blurred, -1, taps, taps, borderType=cv2.BORDER_REFLECT)

        def rms(a: np.ndarray) -> float:
            return float(np.sqrt(np.mean((a - sharp)[3:-3, 3:-3] ** 2)))
        assert rms(restored) < 0.4 * rms(blurred)


def test_input_deblur_filters_the_network_input_but_not_the_loss_target(tiny_model, sample_frames) -> None:
    enh = Enhancer(model=str(tiny_model), blur=1.6, adapt=False)
    assert enh.network.input_filter is not None
    assert enh.report()["input_filter"] == pytest.approx(lr_deblur_taps(Degradation(4, blur_sigma=1.6)).tolist())
    window = sample_frames[:5]
    data = enh.network.adaptation_window(window)
    stacked = enh.network.stack(window)
    assert data.shape == (18, *window[0].shape[:2]) and stacked.dtype == np.float32
    assert np.array_equal(data[:15], stacked)
    assert np.array_equal(data[15:], window[2].transpose(2, 0, 1).astype(np.float32))
    assert not np.allclose(stacked[6:9], data[15:], atol=1.0)          # the input really is filtered
    hr = enh.network.infer(window)
    assert np.allclose(hr, enh.network.runtime.run(stacked / 255), atol=1e-6)
    assert Enhancer(model=str(tiny_model), blur=1.6, adapt=False, input_deblur=False).network.input_filter is None
    assert Enhancer(model=str(tiny_model), adapt=False).network.input_filter is None


def test_models_bring_their_adaptation_defaults_and_the_caller_overrides_them() -> None:
    gan = Enhancer(model="vsrft-gan", adapt=True)
    assert (gan.adapt_config.layers, gan.adapt_config.lr, gan.adapt_config.steps) == ("body", 3e-4, 30)
    mse = Enhancer(model="vsrft-mse", adapt=True)
    assert (mse.adapt_config.layers, mse.adapt_config.lr, mse.adapt_config.steps) == ("upsample", 5e-4, 40)
    told = Enhancer(model="vsrft-gan", adapt=True, adapt_config={"lr": 1e-4, "steps": 7})
    assert (told.adapt_config.layers, told.adapt_config.lr, told.adapt_config.steps) == ("body", 1e-4, 7)
    explicit = Enhancer(model="vsrft-gan", adapt=True, adapt_config=AdaptConfig(steps=3))
    assert explicit.adapt_config.layers == "upsample"          # a full config is taken as given
    assert gan.report()["adapt_config"]["layers"] == "body"
    args = build_parser().parse_args(["enhance", "in.mp4", "out.mp4", "--model", "vsrft-gan", "--single-frame-loss"])
    single = make_enhancer(args)
    assert (single.adapt_config.neighbours, single.adapt_config.layers) == (False, "body")


def _hogging_the_cpu(fn, hogs: int = 2, switch_s: float = 0.05):
    """fn() while `hogs` busy Python threads compete for the interpreter and the cores: each handover
    of the GIL takes up to `switch_s`, so every step of the fine-tuning runs many times slower (an
    8 s budget stopped it after 2 of 5 steps here), as on a loaded machine."""
    import threading

    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    old = sys.getswitchinterval()
    threads = [threading.Thread(target=spin, daemon=True) for _ in range(hogs)]
    sys.setswitchinterval(switch_s)
    for t in threads:
        t.start()
    try:
        return fn()
    finally:
        stop.set()
        for t in threads:
            t.join()
        sys.setswitchinterval(old)


def test_default_budget_gives_the_same_adaptation_on_a_busy_machine(tiny_model, sample_frames) -> None:
    enh = Enhancer(model=str(tiny_model), adapt=False)
    data = _windows(enh.network.adaptation_window, sample_frames[:8])
    cfg = AdaptConfig(steps=5, batch=4, patch=32, neighbours=False, min_gain_db=-100)   # default time budget
    assert cfg.seconds is None

    def adapt():
        return finetune(enh.network.module, data, Degradation(4), 4, cfg)

    idle_state, idle = adapt()
    busy_state, busy = _hogging_the_cpu(adapt)
    assert busy.seconds > 2 * idle.seconds                  # the hog did slow it down
    assert idle.steps == busy.steps == 5 and not idle.cut_short and not busy.cut_short
    assert idle.accepted == busy.accepted and idle.losses == busy.losses
    assert idle_state is not None and all(torch.equal(idle_state[k], busy_state[k]) for k in idle_state)


def test_an_explicit_time_budget_that_cuts_a_shot_short_is_reported(tiny_model, sample_frames) -> None:
    from vsrft.engine import describe_adaptation

    enh = Enhancer(model=str(tiny_model), adapt_config=AdaptConfig(steps=5, seconds=0.0, batch=4, patch=32))
    list(enh.process(sample_frames[:6]))
    (r,) = enh.reports
    assert r.cut_short and r.steps == 0 and r.steps_planned == 5 and not r.accepted
    line = describe_adaptation(r)
    assert line.startswith("shot at frame 0: kept the base network") and "time limit" in line and "0 of 5 steps" in line
    assert enh.report()["keyframes"][0]["cut_short"] is True
