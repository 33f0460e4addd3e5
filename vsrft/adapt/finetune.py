"""The fine-tuner: Algorithm 1 of Lucas et al. made cheap and safe enough for video.

Loss: || A R f(w) - y ||^2 on LR crops, where w is a 5-frame window, y its centre LR frame,
R resamples the network's native scale to the requested one (identity at x4) and A is the
degradation operator. Measured on luma plus down-weighted chroma: the decoded RGB's chroma
was subsampled by the codec and cannot be fitted exactly.

Speed: batches of small crops from several frames of the shot, a fixed step and time budget.
Safety: the result is kept only if LR consistency on held-out crops (other frames) improves
by `min_gain_db`; NaN, divergence or no gain keep the previous weights.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from vsrft.degradation import Degradation, degrade_torch, pinv_matrices, resize_torch

log = logging.getLogger(__name__)

_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


@dataclass
class AdaptConfig:
    steps: int = 40                 # step budget per keyframe
    seconds: float = 8.0            # time budget per keyframe
    lr: float = 1e-3
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
    null_weight: float = 0.0        # > 0: penalise changes of the output in A's null space (what y cannot see)
    floor_db: float = 55.0          # skip when held-out LR-PSNR is already this high (8-bit rounding noise: 58.9 dB)
    plateau_db: float = 0.0         # > 0: stop when LR-PSNR gains less than this per check (paper: 0.04)
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def for_model(cls, name: str, **overrides: Any) -> "AdaptConfig":
        """The defaults for a built-in model (`MODEL_DEFAULTS`), then the caller's overrides."""
        return cls(**{**MODEL_DEFAULTS.get(name, {}), **overrides})


# Per-model defaults, measured in docs/adaptation.md. vsrft-gan's artefacts are texture its
# residual body synthesises, so its adaptation moves the body (the upsampler alone left more
# flicker: tOF 0.446 against 0.403 on the benchmark, 0.642 against 0.608 on 8 other held-out
# sequences); for vsrft-mse moving the body cost up to 0.13 dB on matched footage.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {"vsrft-gan": {"layers": "body", "lr": 3e-4}}


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
    swap_seconds: float = 0.0
    losses: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def consistency_loss(module: nn.Module, windows: torch.Tensor, op: Degradation, model_scale: int,
                     cfg: AdaptConfig, reference: torch.Tensor | None = None) -> torch.Tensor:
    """Mean weighted squared LR error of A R f(x) vs y. windows: (N, C + 3, p, p), the network's
    input x (C channels, e.g. 5 stacked frames) then the LR centre frame y as decoded
    (`Network.adaptation_window`).

    reference: (N, 3, s*p, s*p) output of the starting weights; with `cfg.null_weight` the change
    of the output in A's null space, (I - A^+ A)(f - reference), is penalised: the data cannot
    tell those components, so the fit must not invent them."""
    y = windows[:, -3:]
    hr = module(windows[:, :-3])
    p = windows.shape[-1]
    if op.scale != model_scale:
        hr = resize_torch(hr, op.scale * windows.shape[-2], op.scale * p)
    null = 0.0
    if reference is not None and cfg.null_weight:
        c = hr - reference
        c = c - _pinv_apply(degrade_torch(c, op), op)
        m = cfg.margin * op.scale
        if m and 2 * m < min(c.shape[-2:]):
            c = c[..., m:-m, m:-m]
        null = cfg.null_weight * (c ** 2).mean()
    d = degrade_torch(hr, op) - y
    m = cfg.margin
    if m and 2 * m < min(d.shape[-2:]):
        d = d[..., m:-m, m:-m]
    d_luma = (d * _LUMA.to(d.dtype)).sum(1, keepdim=True)
    d_chroma = d - d_luma
    if cfg.loss == "precond":
        d_luma, d_chroma = _pinv_apply(d_luma, op), _pinv_apply(d_chroma, op)
    return (d_luma ** 2).mean() + cfg.chroma_weight * (d_chroma ** 2).mean() + null


def _pinv_apply(r: torch.Tensor, op: Degradation) -> torch.Tensor:
    """A^+ r for a separable A: the HR correction the exact projection would make."""
    h, w = r.shape[-2:]
    ph, pw = pinv_matrices(op, h * op.scale, w * op.scale)
    return torch.from_numpy(ph) @ r @ torch.from_numpy(pw).T


def _psnr(mse: float) -> float:
    return 10 * math.log10(1.0 / mse) if mse > 0 else math.inf


def sample_crops(windows: list[np.ndarray], count: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    """count random (C, size, size) float crops in [0, 1] from (C, h, w) windows on the 0..255 scale
    (size clipped)."""
    c, h, w = windows[0].shape
    sh, sw = min(size, h), min(size, w)
    out = np.empty((count, c, sh, sw), np.float32)
    for i in range(count):
        win = windows[int(rng.integers(len(windows)))]
        y, x = int(rng.integers(0, h - sh + 1)), int(rng.integers(0, w - sw + 1))
        out[i] = win[:, y:y + sh, x:x + sw]
    return torch.from_numpy(out).mul_(1 / 255)


def _trainable(module: nn.Module, layers: str) -> list[nn.Parameter]:
    if layers == "all":
        return list(module.parameters())
    names = {"body": ("body",), "upsample": ("upsample", "body_tail"), "head": ("head",),
             "ends": ("head", "upsample", "body_tail")}.get(layers)
    if names is None:
        raise ValueError(f"unknown layer subset {layers!r}")
    params = [p for n, p in module.named_parameters() if n.startswith(names)]
    return params or list(module.parameters())


def finetune(module: nn.Module, windows: list[np.ndarray], op: Degradation, model_scale: int,
             cfg: AdaptConfig, frame_index: int = 0, time_s: float | None = None
             ) -> tuple[dict[str, torch.Tensor] | None, AdaptResult]:
    """Fine-tune a copy of `module` on LR windows (each (C + 3, h, w) on the 0..255 scale: the
    network's input, then the centre frame the loss compares with; `Network.adaptation_window`).

    Returns (new state dict or None when rejected, report). `module` itself is not changed.
    """
    t0 = time.perf_counter()
    res = AdaptResult(frame_index=frame_index, time_s=time_s)
    rng = np.random.default_rng(cfg.seed + frame_index)
    if len(windows) >= 3:
        held = windows[1::3]
        train = [w for i, w in enumerate(windows) if i % 3 != 1]
    else:
        held = train = windows
    train_eval = sample_crops(train, cfg.batch, cfg.patch, rng)
    held_eval = sample_crops(held, cfg.batch, cfg.patch, rng)

    net = copy.deepcopy(module).train()
    reference_net = copy.deepcopy(module).eval() if cfg.null_weight else None
    start = {k: v.detach().clone() for k, v in net.state_dict().items()}
    params = _trainable(net, cfg.layers)
    for p in net.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    anchors = [p.detach().clone() for p in params]
    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9)
    else:
        opt = torch.optim.Adam(params, lr=cfg.lr)

    def evaluate(batch: torch.Tensor) -> float:
        with torch.no_grad():
            return _psnr(consistency_loss(net, batch, op, model_scale, cfg).item())

    res.lr_psnr_before = evaluate(train_eval)
    res.heldout_psnr_before = evaluate(held_eval)
    last_check = res.lr_psnr_before
    if res.heldout_psnr_before >= cfg.floor_db:
        # The LR residual is at the level of 8-bit rounding: all that is left to fit is noise.
        res.reason = f"already consistent: held-out LR-PSNR {res.heldout_psnr_before:.1f} dB >= {cfg.floor_db} dB"
        res.seconds = time.perf_counter() - t0
        return None, res
    for step in range(cfg.steps):
        if time.perf_counter() - t0 > cfg.seconds:
            break
        batch = sample_crops(train, cfg.batch, cfg.patch, rng)
        reference = None
        if cfg.null_weight:
            with torch.no_grad():
                reference = reference_net(batch[:, :-3])
                if op.scale != model_scale:
                    reference = resize_torch(reference, op.scale * batch.shape[-2], op.scale * batch.shape[-1])
        loss = consistency_loss(net, batch, op, model_scale, cfg, reference)
        objective = loss * (batch[:, :3].numel() if cfg.optimizer == "sgd" else 1.0)  # paper: summed error
        if cfg.anchor:
            objective = objective + cfg.anchor * sum(((p - a) ** 2).sum() for p, a in zip(params, anchors))
        opt.zero_grad(set_to_none=True)
        objective.backward()
        opt.step()
        value = loss.item()
        res.losses.append(value)
        res.steps = step + 1
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
    finite = all(torch.isfinite(v).all() for v in net.state_dict().values())
    gain = res.heldout_psnr_after - res.heldout_psnr_before
    if res.reason or not finite:
        res.reason = res.reason or "non-finite weights"
    elif not gain >= cfg.min_gain_db:
        res.reason = f"held-out LR-PSNR gain {gain:+.3f} dB < {cfg.min_gain_db} dB"
    else:
        res.accepted = True
        res.reason = f"held-out LR-PSNR {gain:+.3f} dB"
    res.seconds = time.perf_counter() - t0
    if not res.accepted:
        net.load_state_dict(start)
        return None, res
    return {k: v.detach().clone() for k, v in net.state_dict().items()}, res
