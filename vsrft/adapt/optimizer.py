"""The fine-tuner's update rules: Adam and SGD with momentum, step for step as torch.optim's.

Why not torch.optim: its first optimizer in a process imports torch._dynamo, 1.0-1.6 s on this
2-core machine, paid inside the first keyframe's adaptation (a third of one vsrft-gan keyframe's
budget). These are the same updates (torch.optim's single-tensor CPU path, no weight decay), checked
against torch.optim in tests/test_adapt.py.
"""
from __future__ import annotations

import torch


class _UpdateRule:
    params: list[torch.nn.Parameter]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


class Adam(_UpdateRule):
    """torch.optim.Adam(params, lr, betas=(0.9, 0.999), eps=1e-8): the moments are its state.
    One step count for all parameters (torch.optim counts per parameter that had a gradient:
    the same when every trainable parameter gets one each step, as in the fine-tuner)."""

    def __init__(self, params: list[torch.nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params, self.lr, self.betas, self.eps = list(params), lr, betas, eps
        self.first = [torch.zeros_like(p) for p in self.params]
        self.second = [torch.zeros_like(p) for p in self.params]
        self.steps = 0

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        self.steps += 1
        step_size = self.lr / (1 - beta1 ** self.steps)
        correction2_sqrt = (1 - beta2 ** self.steps) ** 0.5
        for p, m, v in zip(self.params, self.first, self.second):
            if p.grad is None:
                continue
            m.lerp_(p.grad, 1 - beta1)
            v.mul_(beta2).addcmul_(p.grad, p.grad.conj(), value=1 - beta2)
            p.addcdiv_(m, (v.sqrt() / correction2_sqrt).add_(self.eps), value=-step_size)


class SGD(_UpdateRule):
    """torch.optim.SGD(params, lr, momentum): the paper's optimiser (0.01, 0.9 on a summed loss)."""

    def __init__(self, params: list[torch.nn.Parameter], lr: float, momentum: float = 0.9) -> None:
        self.params, self.lr, self.momentum = list(params), lr, momentum
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            buf = self.buffers[i]
            if buf is None:
                buf = self.buffers[i] = p.grad.detach().clone()
            else:
                buf.mul_(self.momentum).add_(p.grad)
            p.add_(buf, alpha=-self.lr)
