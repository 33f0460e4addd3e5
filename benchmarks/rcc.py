"""Read the files inside Qt resource archives (.rcc), e.g. the photos in Debian's gcompris-qt-data.

The project's own copy of the unpacker in the shared tools, so `benchmarks/data.py` needs nothing
outside the repository (Qt's `rcc` tool only packs). Format: "qres" magic, a header with the
offsets of the tree, data and name tables; tree nodes of 14 bytes (format 1) or 22 (format 2+,
with a modification time); file payloads are raw, zlib (flag 1, after a 4-byte size) or zstd
(flag 4, needs the `zstandard` package).

    python benchmarks/rcc.py OUTDIR FILE.rcc [FILE.rcc ...]     # writes OUTDIR/FILE.rcc/<paths>
"""
from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path, PurePosixPath
from typing import Iterator

COMPRESSED_ZLIB = 1
DIRECTORY = 2
COMPRESSED_ZSTD = 4


class RccError(ValueError):
    """Not a Qt resource archive, or a damaged one."""


def members(data: bytes) -> Iterator[tuple[str, bytes]]:
    """(path inside the archive, payload) for every file of an .rcc archive, in tree order."""
    if data[:4] != b"qres":
        raise RccError("not a Qt resource archive (no 'qres' magic)")
    version, tree, payloads, names = struct.unpack(">IIII", data[4:20])
    node_size = 22 if version >= 2 else 14

    def name(offset: int) -> str:
        length = struct.unpack(">H", data[names + offset:names + offset + 2])[0]
        start = names + offset + 6                     # length (2), hash (4), UTF-16 name
        return data[start:start + 2 * length].decode("utf-16-be")

    def walk(index: int, prefix: str, depth: int) -> Iterator[tuple[str, bytes]]:
        if depth > 64:
            raise RccError("directory tree too deep (a loop?)")
        o = tree + index * node_size
        name_offset, flags = struct.unpack(">IH", data[o:o + 6])
        here = name(name_offset) if index else ""
        path = f"{prefix}/{here}" if here else prefix
        if flags & DIRECTORY:
            count, first = struct.unpack(">II", data[o + 6:o + 14])
            for child in range(first, first + count):
                yield from walk(child, path, depth + 1)
            return
        offset = struct.unpack(">I", data[o + 10:o + 14])[0]
        size = struct.unpack(">I", data[payloads + offset:payloads + offset + 4])[0]
        payload = data[payloads + offset + 4:payloads + offset + 4 + size]
        if flags & COMPRESSED_ZLIB:
            payload = zlib.decompress(payload[4:])     # qCompress: 4-byte big-endian size, then zlib
        elif flags & COMPRESSED_ZSTD:
            import zstandard
            payload = zstandard.ZstdDecompressor().decompress(payload, max_output_size=1 << 28)
        yield path.lstrip("/"), payload

    try:
        yield from walk(0, "", 0)
    except (struct.error, zlib.error, UnicodeDecodeError) as exc:
        raise RccError(f"damaged archive: {exc}") from exc


def extract(archive: Path, outdir: Path) -> list[Path]:
    """Write every file of `archive` under `outdir`, keeping its path; refuses paths that escape it."""
    out = []
    root = outdir.resolve()
    for inner, payload in members(archive.read_bytes()):
        rel = PurePosixPath(inner)
        if rel.is_absolute() or ".." in rel.parts:
            raise RccError(f"{archive}: unsafe path {inner!r}")
        target = root.joinpath(*rel.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(payload)
        out.append(target)
    return out


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    outdir, status = Path(argv[0]), 0
    for f in map(Path, argv[1:]):
        try:
            n = len(extract(f, outdir / f.name))
            print(f"{f}: {n} files")
        except (OSError, RccError) as exc:
            print(f"{f}: {exc}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
