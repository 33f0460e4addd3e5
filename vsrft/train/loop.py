"""Training: pixel loss (Charbonnier) for vsrft-mse, plus a patch discriminator for vsrft-gan.

Resumable: the checkpoint holds model, optimiser, discriminator and step; re-running the same
command with --resume continues where it stopped.  Progress goes to a callback, not stdout.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from vsrft.degradation import Degradation
from vsrft.models import checkpoint
from vsrft.models.vsrnet import VSRNet
from vsrft.train.data import WindowSampler, find_media, is_held_out, load_clip_frames, load_photo

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    data: list[str]
    out: str
    channels: int = 32
    blocks: int = 6
    scale: int = 4
    steps: int = 20000
    minutes: float = 0.0              # wall-clock budget; 0 = steps only
    batch: int = 16
    lr_patch: int = 48
    lr: float = 1e-3
    gan_weight: float = 0.0           # > 0 trains the adversarial (GAN) model
    init: str | None = None           # start from these weights (e.g. vsrft-mse for the GAN)
    holdout: float = 0.12
    seed: int = 0
    threads: int = 0
    resume: bool = False
    log_every: int = 100
    meta: dict = field(default_factory=dict)


def charbonnier(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    return torch.sqrt((a - b) ** 2 + eps * eps).mean()


class PatchDiscriminator(nn.Module):
    """Strided conv stack with spectral norm; one logit per ~16x16 HR patch."""

    def __init__(self, ch: int = 32) -> None:
        super().__init__()
        sn = nn.utils.spectral_norm
        layers: list[nn.Module] = [sn(nn.Conv2d(3, ch, 3, 1, 1)), nn.LeakyReLU(0.2, True)]
        c = ch
        for _ in range(4):
            layers += [sn(nn.Conv2d(c, min(c * 2, 128), 4, 2, 1)), nn.LeakyReLU(0.2, True)]
            c = min(c * 2, 128)
        layers += [sn(nn.Conv2d(c, 1, 3, 1, 1))]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1)


def y_psnr(a: torch.Tensor, b: torch.Tensor, border: int) -> float:
    w = torch.tensor([65.481, 128.553, 24.966], dtype=a.dtype).view(1, 3, 1, 1) / 255
    ya, yb = (a.clamp(0, 1) * w).sum(1), (b * w).sum(1)
    if border:
        ya, yb = ya[..., border:-border, border:-border], yb[..., border:-border, border:-border]
    mse = ((ya - yb) ** 2).mean().item()
    return 10 * math.log10(1 / max(mse, 1e-12))


def gather(cfg: TrainConfig) -> tuple[list[np.ndarray], list[list[np.ndarray]], list[np.ndarray]]:
    images, videos = find_media(cfg.data)
    train, val = [], []
    for p in images:
        img = load_photo(p)
        if img is not None:
            (val if is_held_out(p, cfg.holdout) else train).append(img)
    clips = [c for c in (load_clip_frames(v) for v in videos) if len(c) >= 5]
    return train, clips, val


def train(cfg: TrainConfig, progress: Callable[[dict], None] | None = None) -> Path:
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    op = Degradation(scale=cfg.scale)
    photos, clips, val_photos = gather(cfg)
    log.info("training on %d photos and %d clips, %d photos held out", len(photos), len(clips), len(val_photos))
    sampler = WindowSampler(photos, clips, op, lr_patch=cfg.lr_patch, seed=cfg.seed)
    val_lr, val_hr = WindowSampler(val_photos or photos, clips if not (val_photos or photos) else [], op,
                                   lr_patch=cfg.lr_patch, seed=12345).batch(16)

    model = VSRNet(cfg.channels, cfg.blocks, cfg.scale)
    if cfg.init:
        init_model, _ = checkpoint.load(cfg.init)
        model.load_state_dict(init_model.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    disc = opt_d = None
    if cfg.gan_weight > 0:
        disc = PatchDiscriminator()
        opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.99))
    state_path = Path(cfg.out).with_suffix(".state.pt")
    step = 0
    if cfg.resume and state_path.exists():
        st = torch.load(str(state_path), map_location="cpu", weights_only=False)
        model.load_state_dict(st["model"]); opt.load_state_dict(st["opt"]); step = st["step"]
        if disc is not None and st.get("disc"):
            disc.load_state_dict(st["disc"]); opt_d.load_state_dict(st["opt_d"])
        sampler.rng = np.random.default_rng([cfg.seed, step])
        log.info("resumed at step %d", step)

    def save_state() -> None:
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "disc": disc.state_dict() if disc else None, "opt_d": opt_d.state_dict() if opt_d else None},
                   str(state_path))
        meta = {"degradation": str(op), "degradation_json": op.to_json(), "steps": step,
                "train_config": {k: v for k, v in asdict(cfg).items() if k != "meta"}, **cfg.meta}
        checkpoint.save(cfg.out, model, model.config, meta)

    with torch.no_grad():
        base_psnr = y_psnr(F.interpolate(val_lr[:, 6:9], scale_factor=cfg.scale, mode="bicubic"), val_hr, cfg.scale)
    t0 = time.monotonic()
    total = cfg.steps
    losses: list[float] = []
    while step < total:
        if cfg.minutes and time.monotonic() - t0 > cfg.minutes * 60:
            break
        frac = step / total
        if cfg.minutes:
            frac = max(frac, (time.monotonic() - t0) / (cfg.minutes * 60))
        for g in opt.param_groups:
            g["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * frac))
        lr_b, hr_b = sampler.batch(cfg.batch)
        model.train()
        sr = model(lr_b)
        loss = charbonnier(sr, hr_b)
        if disc is not None:
            for p in disc.parameters():
                p.requires_grad_(False)
            loss = loss + cfg.gan_weight * (-disc(sr).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if disc is not None:
            for p in disc.parameters():
                p.requires_grad_(True)
            d_loss = F.relu(1 - disc(hr_b)).mean() + F.relu(1 + disc(sr.detach())).mean()
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        losses.append(loss.item())
        step += 1
        if step % cfg.log_every == 0 or step == total:
            model.eval()
            with torch.no_grad():
                val = y_psnr(model(val_lr), val_hr, cfg.scale)
            info = {"step": step, "loss": float(np.mean(losses)), "val_y_psnr": val, "bicubic_y_psnr": base_psnr,
                    "elapsed_s": time.monotonic() - t0}
            losses.clear()
            log.info("step %(step)d loss %(loss).4f val Y-PSNR %(val_y_psnr).2f (bicubic %(bicubic_y_psnr).2f)", info)
            if progress:
                progress(info)
            save_state()
    save_state()
    return Path(cfg.out)
