"""Resumable output (`vsrft enhance --resume`).

The video is encoded in segments, each by a fresh encoder starting at a safe restart point
(the first frame of a shot, or every few seconds inside a long shot where no blend is
running). Each finished segment's packets and every adaptation decision are kept in a job
folder beside the temporary output. An interrupted job (even by kill -9) is continued from
its last finished segment: the frames before it are replayed from the stored packets instead
of being upscaled again, the stored weights stand in for adaptations already done, and the
segments after it are encoded exactly as an uninterrupted run would encode them.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import heapq
import json
import logging
import os
import shutil
import struct
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import av
import torch

from vsrft.adapt import AdaptResult
from vsrft.errors import VsrftError
from vsrft.frame import Frame
from vsrft.io.encode import VideoSink

log = logging.getLogger(__name__)

VERSION = 1
# Decode timestamps of a resumable output are rewritten as dts[n] = (n - REORDER)-th smallest pts, so that
# they rise across segment boundaries: see `SegmentWriter._retime`. 4 is above the reordering depth of the
# B-frame encoders here (x264/x265 b-pyramid: 2, mpeg4/mpeg2: 1, AV1/VP9: 0).
REORDER = 4
_RECORD = struct.Struct("<qqBI")          # pts, dts, keyframe, size
_NONE = -(2 ** 63)


def job_folder(dst: str | Path) -> Path:
    dst = Path(dst)
    return dst.parent / f".{dst.name}.vsrft-job"


class Job:
    """The job folder: manifest.json (what the job is, finished segments, adaptation decisions),
    one packet file per finished segment, one weights file per accepted adaptation."""

    def __init__(self, folder: Path, fingerprint: dict[str, Any]) -> None:
        self.folder = folder
        self.fingerprint = fingerprint
        self.segments: list[dict[str, Any]] = []
        self.adaptations: dict[int, dict[str, Any]] = {}
        self.partial: str | None = None          # the temporary output being written
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._lock = open(folder / "lock", "a+b")          # noqa: SIM115 - held until remove()
        except OSError as exc:
            raise VsrftError(f"cannot create the resume folder {folder}: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise VsrftError(f"another vsrft run is working on this output (its resume folder {folder} is locked): "
                             "wait for it to end") from None
        manifest = folder / "manifest.json"
        if manifest.is_file():
            try:
                data = json.loads(manifest.read_text())
            except (OSError, ValueError):
                data = {}
            if data.get("version") == VERSION and data.get("fingerprint") == fingerprint:
                self.segments = data["segments"]
                self.adaptations = {int(k): v for k, v in data["adaptations"].items()}
                self.partial = data.get("partial")
                log.info("resuming %s: %d frames in %d finished segments", folder, self.resume_from,
                         len(self.segments))
            else:
                log.warning("%s belongs to another input or other settings: starting over", folder)
                if data.get("partial"):
                    Path(data["partial"]).unlink(missing_ok=True)
                for entry in folder.iterdir():           # all but the lock, which this run holds
                    if entry.name != "lock":
                        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        self._save()

    @property
    def resume_from(self) -> int:
        """Frames already encoded (the first frame of the next segment)."""
        return sum(s["frames"] for s in self.segments)

    def known_adaptations(self) -> dict[int, tuple[dict[str, torch.Tensor] | None, AdaptResult]]:
        out = {}
        for index, a in self.adaptations.items():
            weights = torch.load(self.folder / a["weights"], weights_only=True) if a["weights"] else None
            out[index] = (weights, AdaptResult(**a["result"]))
        return out

    def add_adaptation(self, result: AdaptResult, weights: dict[str, torch.Tensor] | None) -> None:
        index = result.frame_index
        if index in self.adaptations:
            return
        name = None
        if weights is not None:
            name = f"weights{index:08d}.pt"
            tmp = self.folder / (name + ".tmp")
            with self.writing():
                try:
                    torch.save(weights, tmp)
                except RuntimeError as exc:          # torch reports a failed write as RuntimeError
                    raise OSError(errno.EIO, str(exc).splitlines()[0]) from None
                _sync(tmp)
                os.replace(tmp, self.folder / name)
        self.adaptations[index] = {"weights": name, "result": result.to_dict()}
        self._save()

    def add_segment(self, first: int, frames: int, packets: int, file: str) -> None:
        self.segments.append({"first": first, "frames": frames, "packets": packets, "file": file})
        self._save()

    def stored_packets(self, time_base: Fraction):
        """The finished segments' packets, in order."""
        for seg in self.segments:
            with open(self.folder / seg["file"], "rb") as f:
                for _ in range(seg["packets"]):
                    yield _read_packet(f, time_base, seg["file"])

    def claim(self, partial: Path) -> None:
        """`partial` is this run's temporary output; an interrupted run's one is deleted."""
        if self.partial and Path(self.partial) != partial:
            Path(self.partial).unlink(missing_ok=True)
        self.partial = str(partial)
        self._save()

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.unlock()

    def unlock(self) -> None:
        if not self._lock.closed:
            self._lock.close()

    def _save(self) -> None:
        data = {"version": VERSION, "fingerprint": self.fingerprint, "segments": self.segments,
                "adaptations": {str(k): v for k, v in self.adaptations.items()}, "partial": self.partial}
        tmp = self.folder / "manifest.json.tmp"
        with self.writing():
            tmp.write_text(json.dumps(data, indent=1, default=str))
            _sync(tmp)
            os.replace(tmp, self.folder / "manifest.json")

    @contextlib.contextmanager
    def writing(self):
        """Disk full (or any I/O error) while keeping the resume data: one VsrftError, not a traceback."""
        try:
            yield
        except OSError as exc:
            raise VsrftError(f"writing the resume data in {self.folder} failed: {exc.strerror or exc} "
                             "(--resume keeps a copy of the video stream there: see docs/production.md)") from None


def fingerprint(src: str | Path, settings: dict[str, Any]) -> dict[str, Any]:
    """What must not change between an interrupted job and its resumption."""
    st = Path(src).stat()
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"source": str(Path(src).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "settings": digest}


class SegmentWriter:
    """Feeds a `VideoSink` segment by segment; frames the job already has come from stored packets."""

    def __init__(self, sink: VideoSink, job: Job) -> None:
        self.sink = sink
        self.job = job
        self._stored = job.stored_packets(sink.video.codec_context.time_base)
        self._encoder: av.CodecContext | None = None
        self._file: BinaryIO | None = None
        self._first = self._frames = self._packets = 0
        self._next = job.resume_from
        self._pending: list[int] = []        # pts muxed whose rank has not been used as a dts yet
        self._muxed = 0
        self._last_dts: int | None = None
        rate = sink.source.rate or Fraction(25)
        self._tick = max(1, round(1 / (rate * sink.video.codec_context.time_base)))   # a frame, in ticks

    def skip(self, frame: Frame) -> None:
        """A frame the job already has: mux its stored packet (one packet per frame) instead."""
        packet = next(self._stored, None)
        if packet is not None:
            self._mux(packet)
        self.sink.frames_written += 1

    def write(self, frame: Frame, restart: bool) -> None:
        if self._encoder is not None and restart:
            self._finish()
        if self._encoder is None:
            for packet in self._stored:          # anything left of the stored part goes first
                self._mux(packet)
            self._start(frame.index)
        self._store(self.sink.encode(frame, self._encoder))
        self._frames += 1
        self.sink.frames_written += 1

    def close(self) -> None:
        for packet in self._stored:
            self._mux(packet)
        if self._encoder is not None:
            self._finish()
        self.sink.close()

    def _start(self, first: int) -> None:
        self._encoder = self.sink.new_encoder()
        if self._encoder.extradata != self.sink.video.codec_context.extradata:
            raise VsrftError(f"internal error: a segment encoder's headers differ from {self.sink.path.name}'s")
        self._first, self._frames, self._packets = first, 0, 0
        self._name = f"segment{first:08d}.pkt"
        with self.job.writing():
            self._file = open(self.job.folder / self._name, "wb")      # noqa: SIM115 - closed in _finish

    def _store(self, packets: list[av.Packet]) -> None:
        for p in packets:
            data = bytes(p)
            with self.job.writing():
                self._file.write(_RECORD.pack(_NONE if p.pts is None else p.pts, _NONE if p.dts is None else p.dts,
                                              int(p.is_keyframe), len(data)) + data)
            self._packets += 1
            self._mux(p)

    def _mux(self, packet: av.Packet) -> None:
        self._retime(packet)
        self.sink.mux_video(packet)

    def _retime(self, packet: av.Packet) -> None:
        """Decode timestamps that rise across segments, whatever each segment's encoder said.

        Each segment's encoder starts its own dts line REORDER-less-or-more frames before its
        first pts, and a short segment (a 1-frame flash shot) gets dts = pts: the next segment's
        first dts then lies before it and the muxer refuses the file (issue 18). Segments are
        closed GOPs in pts order, so over the whole file the n-th packet in decode order may take
        the (n - REORDER)-th smallest pts as its dts (before that: REORDER frames before the first
        pts), as one encoder with that reordering delay would: rising, never after its pts.
        Computed from the packets alone, so a resumed job (stored packets replayed) gets the same."""
        if packet.pts is None:
            return
        heapq.heappush(self._pending, packet.pts)
        n, self._muxed = self._muxed, self._muxed + 1
        if n < REORDER:
            dts = self._pending[0] - (REORDER - n) * self._tick
        else:
            dts = heapq.heappop(self._pending)
        if dts > packet.pts or (self._last_dts is not None and dts <= self._last_dts):
            raise VsrftError(f"encoder {self.sink.codec} reorders frames more deeply than --resume allows "
                             f"({REORDER}) or gave repeated timestamps: run without --resume")
        packet.dts = self._last_dts = dts

    def _finish(self) -> None:
        self._store(self.sink.encode(None, self._encoder))
        with self.job.writing():
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        self.job.add_segment(self._first, self._frames, self._packets, self._name)
        self._encoder = self._file = None


def _read_packet(f: BinaryIO, time_base: Fraction, name: str) -> av.Packet:
    head = f.read(_RECORD.size)
    if len(head) != _RECORD.size:
        raise VsrftError(f"resume data {name} is truncated: delete the job folder and start again")
    pts, dts, key, size = _RECORD.unpack(head)
    data = f.read(size)
    if len(data) != size:
        raise VsrftError(f"resume data {name} is truncated: delete the job folder and start again")
    p = av.Packet(data)
    p.pts = None if pts == _NONE else pts
    p.dts = None if dts == _NONE else dts
    p.time_base = time_base
    p.is_keyframe = bool(key)
    return p


def _sync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())
