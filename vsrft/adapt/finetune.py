"""The fine-tuner: Algorithm 1 of Lucas et al. made cheap and safe enough for video.

Loss: || A R f(w) - y ||^2 on LR crops, where w is a 5-frame window, y its centre LR frame,
R resamples the network's native scale to the requested one (identity at x4) and A is the
degradation operator. Measured on luma plus down-weighted chroma: the decoded RGB's chroma
was subsampled by the codec and cannot be fitted exactly. With `neighbours`, the same output
must also explain the window's other frames through their global motion, || A W_k R f(w) - y_k ||^2
(`vsrft.adapt.motion`), where they align: they see the scene at other sub-pixel phases, which
is what the centre frame alone cannot tell.

Speed: batches of small crops from several frames of the shot, a fixed step budget (a wall-clock
budget only when asked for: it makes the result depend on the machine's load).
Safety: the result is kept only if LR consistency on held-out crops (other frames) improves
by `min_gain_db`; NaN, divergence or no gain keep the previous weights.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from vsrft.adapt.evidence import temporal_evidence
from vsrft.adapt.motion import hr_crop_theta, window_motions
from vsrft.adapt.optimizer import SGD, Adam
from vsrft.degradation import Degradation, degrade_torch, pinv_apply_torch, resize_torch

log = logging.getLogger(__name__)

_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


@dataclass
class AdaptConfig:
    steps: int = 40                 # step budget per keyframe: the default budget, the same on any machine
    # Wall-clock budget per keyframe, None for none (the default): an 8 s default stopped a loaded
    # 2-core machine after 5-11 of 40 steps and every shot was then rejected, so a slow machine
    # silently gave the unadapted output. A budget set here makes the result depend on the machine.
    seconds: float | None = None
    lr: float = 5e-4                # 1e-3 overshot early: matched footage lost up to 0.11 dB (docs/adaptation.md)
    optimizer: str = "adam"         # "adam" or "sgd" (the paper's SGD 0.01, momentum 0.9, summed loss)
    batch: int = 8
    patch: int = 48                 # LR crop side
    margin: int = 6                 # LR pixels at crop borders left out of the loss (zero padding)
    frames: int = 8                 # frames of the shot the crops are drawn from
    anchor: float = 0.0             # L2 pull towards the weights adaptation started from
    layers: str = "upsample"        # "all", "body" (head and upsampler frozen) or "upsample" (last two convs)
    chroma_weight: float = 0.25
    # "lr": ||A f - y||^2; "precond": ||A^+(A f - y)||^2 (Gauss-Newton metric). The preconditioner
    # weights the residual by A's inverse singular values, largest at the LR Nyquist frequency
    # (up to ~100x under a 1.6 blur at x4): fitting there painted a checkerboard into flat areas.
    loss: str = "lr"
    min_gain_db: float = 1.0        # held-out LR-PSNR gain needed to accept (smaller gains were HR losses)
    # and, with neighbours, the gain on the held-out neighbours' aligned pixels alone: fitting the
    # centre frames' own residual (aliasing, noise) does not make the output explain other frames
    min_neighbour_gain_db: float = 1.0
    # the adapted output's warping error over the keyframe's frames, along the input's motion, may be
    # at most this multiple of the starting network's (None: no temporal check; vsrft.adapt.evidence)
    max_flicker_ratio: float | None = 1.0
    null_weight: float = 0.0        # > 0: penalise changes of the output in A's null space (what y cannot see)
    floor_db: float = 55.0          # skip when held-out LR-PSNR is already this high (8-bit rounding noise: 58.9 dB)
    plateau_db: float = 0.0         # > 0: stop when LR-PSNR gains less than this per check (paper: 0.04)
    neighbours: bool = True         # the multi-frame loss: the output must also explain the other frames
    neighbours_per_crop: int = 1    # neighbour frames each crop is also compared with, drawn at random
    align_tolerance: float = 0.5    # code values of neighbour residual beyond the centre's: misaligned, left out
    seed: int = 0
    cache_features: bool = True     # run the frozen front once per window when only the last layers move

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def for_model(cls, name: str, **overrides: Any) -> "AdaptConfig":
        """The defaults for a built-in model (`MODEL_DEFAULTS`), then the caller's overrides."""
        return cls(**{**MODEL_DEFAULTS.get(name, {}), **overrides})


# Per-model defaults, measured in docs/adaptation.md. vsrft-gan's artefacts are texture its
# residual body synthesises, so its adaptation moves the body (the upsampler alone left more
# flicker: tOF 0.446 against 0.403 on the benchmark, 0.642 against 0.608 on 8 other held-out
# sequences); for vsrft-mse moving the body cost up to 0.13 dB on matched footage. 30 steps
# left as little flicker as 40 (tOF 0.378 against 0.376; second set 0.573 against 0.573) in
# three quarters of the time, which keeps vsrft-gan's adaptation within 2x the --no-adapt wall time.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {"vsrft-gan": {"layers": "body", "lr": 3e-4, "steps": 30}}


@dataclass
class AdaptResult:
    frame_index: int
    time_s: float | None
    steps: int = 0
    seconds: float = 0.0
    lr_psnr_before: float = math.nan     # training crops
    lr_psnr_after: float = math.nan
    heldout_psnr_before: float = math.nan
    heldout_psnr_after: float = math.nan
    accepted: bool = False
    reason: str = ""
    aligned_neighbours: int = 0          # neighbour frames, over all windows, that the multi-frame loss used
    heldout_neighbour_psnr_before: float = math.nan   # the held-out crops' neighbour terms alone
    heldout_neighbour_psnr_after: float = math.nan
    swap_seconds: float = 0.0
    front_cached: bool = False           # the frozen layers ran once per window (`on_frozen_features`)
    flicker_before: float = math.nan     # warping error of the starting / adapted output (temporal check)
    flicker_after: float = math.nan
    cut_short: bool = False              # the wall-clock budget (`AdaptConfig.seconds`) stopped it before `steps`
    steps_planned: int = 0               # the step budget it had
    losses: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainingWindow:
    """One window of a keyframe's training data, on the 0..255 scale."""
    stack: np.ndarray                       # (C + 3, h, w): the network's input, then the centre frame as decoded
    neighbours: np.ndarray | None = None    # (K, 3, h, w): the window's other frames as decoded
    motions: np.ndarray | None = None       # (K, 2, 3): affine from each neighbour's pixels to the centre's; NaN: none

    @classmethod
    def from_frames(cls, stack: np.ndarray, frames: list[np.ndarray], neighbours: bool,
                    motions: np.ndarray | None = None) -> "TrainingWindow":
        """stack: `Network.adaptation_window(frames)`; frames: the window's (h, w, 3) RGB frames,
        centre in the middle. With `neighbours`, the other frames whose motion is known: from
        `motions` ((frames, 2, 3), NaN where none; the engine's, estimated on the network's
        output), else estimated here on the LR frames."""
        if not neighbours or len(frames) < 2:
            return cls(stack)
        c = len(frames) // 2
        if motions is None:
            motions = window_motions(frames, c)
        keep = [i for i in range(len(frames)) if i != c and np.isfinite(motions[i]).all()]
        if not keep:
            return cls(stack)
        others = np.stack([frames[i].astype(np.float32).transpose(2, 0, 1) for i in keep])
        return cls(stack, others, motions[keep])


@dataclass
class CropBatch:
    """Random crops of training windows, in [0, 1]."""
    stacks: torch.Tensor                     # (N, C + 3, p, p)
    neighbours: torch.Tensor | None = None   # (N, K, 3, p, p)
    grids: torch.Tensor | None = None        # (N, K, s*p, s*p, 2): the centre's HR crop into each neighbour's view
    valid: torch.Tensor | None = None        # (N, K) bool: that neighbour exists for that crop


def consistency_loss(module: nn.Module, batch: CropBatch, op: Degradation, model_scale: int,
                     cfg: AdaptConfig, reference: torch.Tensor | None = None, part: str = "all") -> torch.Tensor:
    """Mean weighted squared LR error of A R f(x) vs y over the centre frame's pixels and, with
    neighbours in the batch, of A W_k R f(x) vs y_k over the neighbours' aligned pixels
    (`part="neighbours"`: over those alone, NaN when none aligns).

    reference: (N, 3, s*p, s*p) output of the starting weights; with `cfg.null_weight` the change
    of the output in A's null space, (I - A^+ A)(f - reference), is penalised: the data cannot
    tell those components, so the fit must not invent them."""
    windows = batch.stacks
    y = windows[:, -3:]
    hr = module(windows[:, :-3].contiguous(memory_format=torch.channels_last))
    p = windows.shape[-1]
    if op.scale != model_scale:
        hr = resize_torch(hr, op.scale * windows.shape[-2], op.scale * p)
    null = 0.0
    if reference is not None and cfg.null_weight:
        c = hr - reference
        c = c - pinv_apply_torch(degrade_torch(c, op), op)
        m = cfg.margin * op.scale
        if m and 2 * m < min(c.shape[-2:]):
            c = c[..., m:-m, m:-m]
        null = cfg.null_weight * (c ** 2).mean()
    d = degrade_torch(hr, op) - y
    error = _weighted_error(d, op, cfg)
    if batch.neighbours is None or not cfg.neighbours:
        return _inner(error, cfg.margin).mean() + null
    n, k = batch.valid.shape
    big = hr.unsqueeze(1).expand(n, k, *hr.shape[1:]).reshape(n * k, *hr.shape[1:])
    grids = batch.grids.reshape(n * k, *batch.grids.shape[2:])
    warped = F.grid_sample(big, grids, mode="bicubic", padding_mode="border", align_corners=False)
    d_k = degrade_torch(warped, op) - batch.neighbours.reshape(n * k, *batch.neighbours.shape[2:])
    with torch.no_grad():
        aligned = aligned_pixels(d.repeat_interleave(k, 0), d_k, grids, op, cfg.align_tolerance)
        mask = (aligned & batch.valid.reshape(n * k, 1, 1, 1)).float()
    error_k = _inner(_weighted_error(d_k, op, cfg) * mask, cfg.margin)
    centre = _inner(error, cfg.margin)
    if part == "neighbours":            # NaN when no neighbour pixel aligns
        return error_k.sum() / _inner(mask, cfg.margin).sum()
    count = centre.numel() + _inner(mask, cfg.margin).sum()
    return (centre.sum() + error_k.sum()) / count + null


def aligned_pixels(d: torch.Tensor, d_k: torch.Tensor, grids: torch.Tensor, op: Degradation,
                   tolerance: float) -> torch.Tensor:
    """(M, 1, h, w) bool: the neighbour's LR pixels the multi-frame loss counts.

    d, d_k: (M, 3, h, w) LR residuals of the centre frame and of the neighbour (through the warp);
    grids: (M, H, W, 2) the warps. A pixel counts where the warp stays inside the centre's HR
    frame, and where the neighbour's residual (3x3 mean) is at most `tolerance` code values above
    the centre's: beyond that, the global motion does not explain it (moving objects)."""
    ones = torch.ones(grids.shape[0], 1, *grids.shape[1:3])
    inside = degrade_torch(F.grid_sample(ones, grids, mode="bilinear", padding_mode="zeros",
                                         align_corners=False), op) > 0.999
    level = F.avg_pool2d(d.abs().mean(1, keepdim=True), 3, 1, 1)
    level_k = F.avg_pool2d(d_k.abs().mean(1, keepdim=True), 3, 1, 1)
    return inside & (level_k < level + tolerance / 255)


def _weighted_error(d: torch.Tensor, op: Degradation, cfg: AdaptConfig) -> torch.Tensor:
    """(N, 3, h, w) LR residual -> (N, 1, h, w) squared error, luma plus `chroma_weight` x chroma."""
    d_luma = (d * _LUMA.to(d.dtype)).sum(1, keepdim=True)
    d_chroma = d - d_luma
    if cfg.loss == "precond":
        d_luma, d_chroma = pinv_apply_torch(d_luma, op), pinv_apply_torch(d_chroma, op)
    return d_luma ** 2 + cfg.chroma_weight * (d_chroma ** 2).mean(1, keepdim=True)


def _inner(x: torch.Tensor, margin: int) -> torch.Tensor:
    """x without `margin` pixels at each border (zero padding makes the crop's edges wrong)."""
    if margin and 2 * margin < min(x.shape[-2:]):
        return x[..., margin:-margin, margin:-margin]
    return x


def _psnr(mse: float) -> float:
    return 10 * math.log10(1.0 / mse) if mse > 0 else math.inf


def sample_crops(windows: list[TrainingWindow], count: int, size: int, rng: np.random.Generator,
                 scale: int = 1, per_crop: int = 1) -> CropBatch:
    """count random crops of side `size` (clipped) of the windows (0..255 scale) in [0, 1], with
    up to `per_crop` random neighbours' crops and their HR sampling grids (`scale`) when the
    windows have neighbours (each costs an HR warp and its backward pass; one by default)."""
    c, h, w = windows[0].stack.shape
    sh, sw = min(size, h), min(size, w)
    k = min(per_crop, max((0 if win.neighbours is None else len(win.neighbours)) for win in windows))
    stacks = np.empty((count, c, sh, sw), np.float32)
    neighbours = np.zeros((count, k, 3, sh, sw), np.float32)
    thetas = np.tile(np.eye(2, 3, dtype=np.float32), (count, k, 1, 1))
    valid = np.zeros((count, k), bool)
    for i in range(count):
        win = windows[int(rng.integers(len(windows)))]
        y, x = int(rng.integers(0, h - sh + 1)), int(rng.integers(0, w - sw + 1))
        stacks[i] = win.stack[:, y:y + sh, x:x + sw]
        available = 0 if win.neighbours is None else len(win.neighbours)
        for j, n in enumerate(rng.permutation(available)[:k]):
            neighbours[i, j] = win.neighbours[n][:, y:y + sh, x:x + sw]
            thetas[i, j] = hr_crop_theta(win.motions[n], scale, (y, x), (scale * sh, scale * sw))
            valid[i, j] = True
    batch = CropBatch(torch.from_numpy(stacks).mul_(1 / 255))
    if k:
        grids = F.affine_grid(torch.from_numpy(thetas).reshape(count * k, 2, 3),
                              [count * k, 1, scale * sh, scale * sw], align_corners=False)
        batch = CropBatch(batch.stacks, torch.from_numpy(neighbours).mul_(1 / 255),
                          grids.reshape(count, k, scale * sh, scale * sw, 2), torch.from_numpy(valid))
    return batch


# parameter-name prefixes of each layer subset, for vsrft's VSRNet; other architectures name theirs
# in a `layer_groups` attribute (same keys)
LAYER_GROUPS: dict[str, tuple[str, ...]] = {"body": ("body.",), "upsample": ("upsample.", "body_tail."),
                                            "head": ("head.",), "ends": ("head.", "upsample.", "body_tail.")}


def _trainable(module: nn.Module, layers: str) -> list[nn.Parameter]:
    if layers == "all":
        return list(module.parameters())
    names = getattr(module, "layer_groups", LAYER_GROUPS).get(layers)
    if names is None:
        raise ValueError(f"unknown layer subset {layers!r}")
    params = [p for n, p in module.named_parameters() if n.startswith(tuple(names))]
    if not params:
        raise ValueError(f"{type(module).__name__} has no parameters in the layer subset {layers!r}")
    return params


class _OnFeatures(nn.Module):
    """A network whose frozen front already ran: its input is (front's features, network input)
    stacked on channels; `tail(features, input)` is the rest of the network's forward."""

    def __init__(self, net: nn.Module, tail: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 channels: int) -> None:
        super().__init__()
        self.net, self.tail, self.channels = net, tail, channels

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.tail(z[:, :self.channels], z[:, self.channels:])


FEATURE_CACHE_BYTES = 1 << 30


def on_frozen_features(net: nn.Module, layers: str, windows: list[TrainingWindow], crop_pixels: int
                       ) -> tuple[list[TrainingWindow], nn.Module, Callable[[nn.Module], nn.Module]] | None:
    """When only the last layers move and the network can say where its frozen front ends
    (`split(layers)` -> (front, tail) with forward(x) == tail(front(x), x), features on the LR grid),
    run the front once on the whole frames instead of on every step's crops.

    Returns (windows with the features in front of their stacks, `net` taking such stacks, a
    wrapper for other networks with the same front), or None when the network cannot split, when
    the frames hold more pixels than the steps' crops (`crop_pixels`: no saving) or when the
    features would take more than `FEATURE_CACHE_BYTES`."""
    split = getattr(net, "split", None)
    parts = split(layers) if split is not None else None
    if parts is None:
        return None
    front, tail = parts
    c, h, w = windows[0].stack.shape
    if len(windows) * h * w > crop_pixels:
        return None
    out = []
    with torch.no_grad():
        for win in windows:
            x = torch.from_numpy(win.stack[None, :-3]).mul(1 / 255).contiguous(memory_format=torch.channels_last)
            feats = front(x)[0].mul_(255).numpy()          # on the stacks' 0..255 scale
            if feats.shape[-2:] != (h, w) or len(windows) * feats.nbytes > FEATURE_CACHE_BYTES:
                return None
            out.append(TrainingWindow(np.concatenate([feats, win.stack]), win.neighbours, win.motions))
    channels = out[0].stack.shape[0] - c

    def wrap(other: nn.Module) -> nn.Module:
        return _OnFeatures(other, other.split(layers)[1], channels)

    return out, _OnFeatures(net, tail, channels), wrap


def _judge_over_time(res: AdaptResult, start: nn.Module, net: nn.Module, windows: list[TrainingWindow],
                     op: Degradation, model_scale: int, cfg: AdaptConfig, project: bool) -> None:
    """Veto an LR-accepted adaptation whose output moves less consistently with the scene than
    the starting network's (`vsrft.adapt.evidence`): LR consistency cannot see what it did in
    A's null space."""
    stacks = torch.from_numpy(np.stack([w.stack for w in windows])).mul_(1 / 255)
    evidence = temporal_evidence(start.eval(), net, stacks, op, model_scale, project)
    if evidence is None:
        return
    res.flicker_before, res.flicker_after = evidence.before, evidence.after
    if not evidence.ratio <= cfg.max_flicker_ratio:
        res.accepted = False
        res.reason = (f"less stable over time: the adapted output's warping error is {evidence.ratio:.2f}x the "
                      f"starting network's on {evidence.frames} frames ({res.reason})")
    else:
        res.reason += f"; warping error {evidence.ratio:.2f}x"


def finetune(module: nn.Module, windows: list[TrainingWindow | np.ndarray], op: Degradation, model_scale: int,
             cfg: AdaptConfig, frame_index: int = 0, time_s: float | None = None,
             on_step: Callable[[int, int], None] | None = None, project: bool = False
             ) -> tuple[dict[str, torch.Tensor] | None, AdaptResult]:
    """Fine-tune a copy of `module` on LR windows: `TrainingWindow`s, or bare (C + 3, h, w)
    stacks on the 0..255 scale (the network's input, then the centre frame the loss compares
    with; `Network.adaptation_window`), consecutive and in stream order. `project`: the output
    will be projected onto the input, so the temporal check judges it so.

    Returns (new state dict or None when rejected, report). `module` itself is not changed.
    `on_step(done, planned)` is called after each step (progress display; it must be quick).
    """
    t0 = time.perf_counter()
    windows = [w if isinstance(w, TrainingWindow) else TrainingWindow(w) for w in windows]
    if not cfg.neighbours:
        windows = [TrainingWindow(w.stack) for w in windows]
    res = AdaptResult(frame_index=frame_index, time_s=time_s,
                      aligned_neighbours=sum(0 if w.neighbours is None else len(w.neighbours) for w in windows),
                      steps_planned=cfg.steps)
    # channels_last: oneDNN picks faster convolution kernels for it on CPUs (docs/adaptation.md, "Models users bring")
    net = copy.deepcopy(module).train().to(memory_format=torch.channels_last)
    reference_net = copy.deepcopy(module).eval() if cfg.null_weight else None
    start = {k: v.detach().clone() for k, v in net.state_dict().items()}
    trained, start_net = net, module
    cached = None if not cfg.cache_features else on_frozen_features(net, cfg.layers, windows,
                                                                     cfg.steps * cfg.batch * cfg.patch ** 2)
    if cached is not None:            # the frozen front ran once; steps run the moving layers only
        windows, trained, start_net = cached[0], cached[1], cached[2](module)
        res.front_cached = True
        if reference_net is not None:
            reference_net = cached[2](reference_net)
    rng = np.random.default_rng(cfg.seed + frame_index)
    if len(windows) >= 3:
        held = windows[1::3]
        train = [w for i, w in enumerate(windows) if i % 3 != 1]
    else:
        held = train = windows
    train_eval = sample_crops(train, cfg.batch, cfg.patch, rng, op.scale, cfg.neighbours_per_crop)
    held_eval = sample_crops(held, cfg.batch, cfg.patch, rng, op.scale, cfg.neighbours_per_crop)
    params = _trainable(net, cfg.layers)
    for p in net.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    anchors = [p.detach().clone() for p in params]
    opt: SGD | Adam = SGD(params, lr=cfg.lr, momentum=0.9) if cfg.optimizer == "sgd" else Adam(params, lr=cfg.lr)

    def evaluate(batch: CropBatch, part: str = "all") -> float:
        if part == "neighbours" and batch.neighbours is None:
            return math.nan
        with torch.no_grad():
            mse = consistency_loss(trained, batch, op, model_scale, cfg, part=part).item()
        return _psnr(mse) if math.isfinite(mse) else math.nan

    res.lr_psnr_before = evaluate(train_eval)
    res.heldout_psnr_before = evaluate(held_eval)
    res.heldout_neighbour_psnr_before = evaluate(held_eval, "neighbours")
    last_check = res.lr_psnr_before
    if res.heldout_psnr_before >= cfg.floor_db:
        # The LR residual is at the level of 8-bit rounding: all that is left to fit is noise.
        res.reason = f"already consistent: held-out LR-PSNR {res.heldout_psnr_before:.1f} dB >= {cfg.floor_db} dB"
        res.seconds = time.perf_counter() - t0
        return None, res
    for step in range(cfg.steps):
        if cfg.seconds is not None and time.perf_counter() - t0 > cfg.seconds:
            res.cut_short = True        # reported: the user must learn that the clock, not the data, decided
            log.debug("adaptation at frame %d: %.1f s budget spent after %d of %d steps",
                      frame_index, cfg.seconds, step, cfg.steps)
            break
        batch = sample_crops(train, cfg.batch, cfg.patch, rng, op.scale, cfg.neighbours_per_crop)
        reference = None
        if cfg.null_weight:
            with torch.no_grad():
                reference = reference_net(batch.stacks[:, :-3])
                if op.scale != model_scale:
                    reference = resize_torch(reference, op.scale * batch.stacks.shape[-2],
                                             op.scale * batch.stacks.shape[-1])
        loss = consistency_loss(trained, batch, op, model_scale, cfg, reference)
        objective = loss * (batch.stacks[:, :3].numel() if cfg.optimizer == "sgd" else 1.0)  # paper: summed error
        if cfg.anchor:
            objective = objective + cfg.anchor * sum(((p - a) ** 2).sum() for p, a in zip(params, anchors))
        opt.zero_grad()
        objective.backward()
        opt.step()
        value = loss.item()
        res.losses.append(value)
        res.steps = step + 1
        if on_step is not None:
            on_step(step + 1, cfg.steps)
        if not math.isfinite(value) or value > 1e3:
            res.reason = f"diverged at step {step + 1} (loss {value:.3g})"
            break
        if cfg.plateau_db and (step + 1) % 10 == 0:
            now = evaluate(train_eval)
            if now - last_check < cfg.plateau_db:
                break
            last_check = now
    net.eval()
    res.lr_psnr_after = evaluate(train_eval) if not res.reason else math.nan
    res.heldout_psnr_after = evaluate(held_eval) if not res.reason else math.nan
    res.heldout_neighbour_psnr_after = evaluate(held_eval, "neighbours") if not res.reason else math.nan
    neighbour_gain = res.heldout_neighbour_psnr_after - res.heldout_neighbour_psnr_before
    finite = all(torch.isfinite(v).all() for v in net.state_dict().values())
    gain = res.heldout_psnr_after - res.heldout_psnr_before
    if res.reason or not finite:
        res.reason = res.reason or "non-finite weights"
    elif not gain >= cfg.min_gain_db:
        res.reason = f"held-out LR-PSNR gain {gain:+.3f} dB < {cfg.min_gain_db} dB"
    elif math.isfinite(res.heldout_neighbour_psnr_before) and not neighbour_gain >= cfg.min_neighbour_gain_db:
        res.reason = (f"held-out LR-PSNR {gain:+.3f} dB, but on the neighbour frames only {neighbour_gain:+.3f} dB "
                      f"< {cfg.min_neighbour_gain_db} dB")
    else:
        res.accepted = True
        res.reason = f"held-out LR-PSNR {gain:+.3f} dB"
        if math.isfinite(neighbour_gain):
            res.reason += f" ({neighbour_gain:+.3f} dB on the neighbour frames)"
        if cfg.max_flicker_ratio is not None:
            _judge_over_time(res, start_net, trained, windows, op, model_scale, cfg, project)
    res.seconds = time.perf_counter() - t0
    if not res.accepted:
        net.load_state_dict(start)
        return None, res
    return {k: v.detach().contiguous().clone() for k, v in net.state_dict().items()}, res
