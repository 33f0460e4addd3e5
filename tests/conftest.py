"""Shared fixtures: a tiny random vsrft checkpoint and real test clips made with the ffmpeg binary.

Everything here is session-scoped and made lazily, so a test only pays for the clips it uses.
The ONNX export cache (VSRFT_CACHE) points at a per-session folder: the tiny model is exported
once and every `vsrft` subprocess of the session reuses it.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import pytest


def _ffmpeg_on_path() -> None:
    """The tests make their clips with a real ffmpeg binary: the system's, else imageio-ffmpeg's static one.

    The static binary is put on PATH under the name `ffmpeg`, so the tests and the processes
    they start (pipes, plugin hosts) find it the same way as a system ffmpeg.
    """
    if shutil.which("ffmpeg") is not None:
        return
    try:
        import imageio_ffmpeg
        exe = Path(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError) as exc:
        raise pytest.UsageError(f"no ffmpeg binary for the test clips ({exc}): pip install -e '.[test]' "
                                "brings imageio-ffmpeg, or apt-get install ffmpeg") from None
    bin_dir = Path(tempfile.mkdtemp(prefix="vsrft-ffmpeg-"))
    (bin_dir / "ffmpeg").symlink_to(exe)
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


_ffmpeg_on_path()

from helpers import _clip_recipes, ffmpeg, random_vsrnet  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """ONNX exports go to a session folder (inherited by `vsrft` subprocesses), not ~/.cache."""
    old = os.environ.get("VSRFT_CACHE")
    os.environ["VSRFT_CACHE"] = str(tmp_path_factory.mktemp("vsrft-cache"))
    yield
    if old is None:
        os.environ.pop("VSRFT_CACHE", None)
    else:
        os.environ["VSRFT_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a vsrft checkpoint of VSRNet(channels=8, blocks=1) with random weights (x4, 5 frames)."""
    from vsrft.models import checkpoint

    model = random_vsrnet()
    path = tmp_path_factory.mktemp("models") / "tiny.pt"
    checkpoint.save(path, model, model.config, {"description": "random test model"})
    return path


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """clip(name) -> path of a real encoded test clip, made on first use (see `_clip_recipes`)."""
    d = tmp_path_factory.mktemp("clips")
    recipes = _clip_recipes(d)
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            ext, args = recipes[name]
            path = d / f"{name}.{ext}"
            ffmpeg(*args, path)
            made[name] = path
        return made[name]

    return get
