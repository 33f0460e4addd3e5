"""GStreamer element `vsrft`: video super-resolution with test-time adaptation, as a video filter.

    GST_PLUGIN_PATH=plugins/gstreamer VSRFT_VENV=.venv gst-launch-1.0 filesrc location=in.mp4 ! decodebin \
        ! videoconvert ! vsrft scale=4 ! videoconvert ! video/x-raw,format=I420 ! x264enc ! mp4mux \
        ! filesink location=out.mp4

The frames go through `vsrft.engine.Enhancer.process` (the engine of `vsrft enhance` and
`vsrft pipe`: same windows, cut detection, adaptation and ONNX Runtime session). The engine
holds frames back (two frames, more while a shot adapts), so this is a `Gst.Element` with its
own pads rather than a 1-in-1-out BaseTransform:

* the sink pad's chain function copies each RGB buffer into a bounded input queue;
* a worker thread feeds the queue to `Enhancer.process()` and pushes every upscaled frame
  downstream as it comes out, with the pts/dts/duration/offsets/flags of the input buffer
  it was made from (one for one, in order);
* serialized events (stream-start, segment, tags, ...) travel through the same queue and are
  pushed after the outputs of the frames that came before them; EOS first flushes the engine
  (the last frames), then is forwarded; a caps event that changes the frame size flushes the
  engine before the new caps go downstream (a new size starts a new stream for the engine);
* FLUSH_START drops what is queued and aborts the engine's run; FLUSH_STOP starts afresh (a
  new `Enhancer`, as on a new shot), so flushing seeks work;
* errors (model that does not load, vsrft not importable, a failure inside the engine) are
  posted as element errors: gst-launch prints one line and exits non-zero.

This file is loaded by GStreamer's Python plugin loader (gst-python) into the system Python.
At load time it imports only gi and vsrft's options schema, vsrft/options.py (standard library
only, read as a file: the element's properties are made from it, as `vsrft`'s arguments are),
so `gst-inspect-1.0 vsrft` needs neither numpy nor torch; vsrft, numpy and torch are imported
when the element starts, from the virtual environment named by VSRFT_VENV (or VIRTUAL_ENV, or
PYTHONPATH; see plugins/gstreamer/README.md).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections import deque
from fractions import Fraction
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import GLib, GObject, Gst, GstVideo  # after require_version

Gst.init_check(None)

_MAX_DIM = 32768
_CAPS = Gst.Caps.from_string(f"video/x-raw,format=RGB,width=[1,{_MAX_DIM}],height=[1,{_MAX_DIM}],"
                             "framerate=[0/1,2147483647/1]")
_QUEUE = 4                     # input buffers waiting for the engine (it holds its own window on top)
_RW = GObject.ParamFlags.READWRITE | Gst.PARAM_MUTABLE_READY


# ------------------------------------------------------------------ finding vsrft

def _venv_site_packages(venv: Path) -> Path:
    """The site-packages folder of a virtual environment made with this Python's minor version."""
    want = f"{sys.version_info.major}.{sys.version_info.minor}"
    cfg = venv / "pyvenv.cfg"
    if not cfg.is_file():
        raise ImportError(f"{venv} is not a virtual environment (no pyvenv.cfg)")
    version = ""
    for line in cfg.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version", "version_info"):
            version = value.strip()
    if version and ".".join(version.split(".")[:2]) != want:
        raise ImportError(f"the virtual environment {venv} is Python {version}, but GStreamer's Python is {want}: "
                          f"make it with python{want}")
    site = venv / "lib" / f"python{want}" / "site-packages"
    if not site.is_dir():
        raise ImportError(f"{site} does not exist")
    return site


def _add_venv() -> None:
    """Put the site-packages of VSRFT_VENV / VIRTUAL_ENV (if set) at the front of sys.path."""
    import site

    for var in ("VSRFT_VENV", "VIRTUAL_ENV"):
        venv = os.environ.get(var)
        if venv:
            path = str(_venv_site_packages(Path(venv).expanduser().resolve()))
            if path not in sys.path:
                before = list(sys.path)
                site.addsitedir(path)           # processes .pth files: editable installs work
                added = [p for p in sys.path if p not in before]
                # ahead of the system's dist-packages, so the venv's numpy is the one imported
                sys.path[:] = added + before
            break


def _import_vsrft():
    """Import vsrft.engine: from VSRFT_VENV / VIRTUAL_ENV, else from sys.path (PYTHONPATH), else from the
    checkout this file lives in (plugins/gstreamer/python/ of a vsrft repository)."""
    _add_venv()
    if not getattr(sys, "argv", None):
        sys.argv = ["gst-vsrft"]
    try:
        import vsrft.engine
    except ModuleNotFoundError as exc:
        repo = Path(__file__).resolve().parents[3]
        if exc.name != "vsrft" or not (repo / "vsrft" / "engine.py").is_file():
            raise
        sys.path.append(str(repo))
        import vsrft.engine
    return vsrft.engine


def _load_options():
    """vsrft/options.py, the schema the properties are made from, loaded as a file (not as part of the
    vsrft package, which imports numpy): that of the vsrft `_import_vsrft` will import, else that of the
    checkout this file lives in. sys.path is left as it was: a bad VSRFT_VENV is reported when the
    element starts."""
    import importlib.util

    candidates = []
    path, meta_path = list(sys.path), list(sys.meta_path)
    try:
        _add_venv()
        spec = importlib.util.find_spec("vsrft")
        if spec is not None and spec.submodule_search_locations:
            candidates += [Path(d) / "options.py" for d in spec.submodule_search_locations]
    except (ImportError, ValueError):
        pass
    finally:
        sys.path[:], sys.meta_path[:] = path, meta_path
    candidates.append(Path(__file__).resolve().parents[3] / "vsrft" / "options.py")
    for file in candidates:
        if file.is_file():
            spec = importlib.util.spec_from_file_location("_gstvsrft_options", file)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module           # dataclasses looks its module up
            spec.loader.exec_module(module)
            return module
    raise ImportError("vsrft/options.py not found: set VSRFT_VENV to the virtual environment vsrft is installed in "
                      "(plugins/gstreamer/README.md)")


_options = _load_options()


class _GstLogHandler(logging.Handler):
    """vsrft's log records go to the GStreamer debug log (GST_DEBUG=python:5), never to stdout/stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"vsrft: {record.getMessage()}"
            if record.levelno >= logging.ERROR:
                Gst.error(text)
            elif record.levelno >= logging.WARNING:
                Gst.warning(text)
            elif record.levelno >= logging.INFO:
                Gst.info(text)
            else:
                Gst.debug(text)
        except Exception:  # noqa: BLE001 - logging must never break the stream
            pass


def _route_logging() -> None:
    logger = logging.getLogger("vsrft")
    if not any(isinstance(h, _GstLogHandler) for h in logger.handlers):
        logger.addHandler(_GstLogHandler())
        logger.setLevel(logging.INFO)
        logger.propagate = False


# ------------------------------------------------------------------ the element

def _guarded(failure):
    """A pad function that never lets a Python exception escape into GStreamer: it becomes an element
    error and `failure` is returned (Gst.FlowReturn.ERROR for chain, False for events and queries)."""
    def wrap(fn):
        def pad_function(self, pad, parent, obj):
            try:
                return fn(self, pad, parent, obj)
            except Exception as exc:  # noqa: BLE001 - becomes an element error
                self._error(_describe(exc), _debug(exc))
                return failure
        pad_function.__name__ = fn.__name__
        return pad_function
    return wrap


class _Abort(Exception):
    """The engine's run is abandoned (flush, shutdown or an error downstream)."""


class _End:
    """Queue marker: the engine's run ends here (EOS or a new frame size). `event` is pushed after the
    run's last output; `done` is set once everything before the marker went downstream."""

    def __init__(self, event: Gst.Event | None = None) -> None:
        self.event = event
        self.done = False


class _Meta:
    """What an output buffer copies from the input buffer it was computed from."""

    __slots__ = ("dts", "duration", "flags", "key", "offset", "offset_end", "pts")

    def __init__(self, buf: Gst.Buffer) -> None:
        self.pts, self.dts, self.duration = buf.pts, buf.dts, buf.duration
        self.offset, self.offset_end = buf.offset, buf.offset_end
        self.key = not buf.has_flags(Gst.BufferFlags.DELTA_UNIT)
        self.flags = buf.get_flags() & (Gst.BufferFlags.DISCONT | Gst.BufferFlags.RESYNC | Gst.BufferFlags.GAP
                                        | Gst.BufferFlags.DROPPABLE | Gst.BufferFlags.MARKER)


class Vsrft(Gst.Element):
    __gtype_name__ = "GstVsrft"

    __gstmetadata__ = ("vsrft video super-resolution", "Filter/Effect/Video/Scaler",
                       "Upscales video with a 5-frame VSR network that fine-tunes itself on the stream "
                       "(vsrft engine, ONNX Runtime); output = input size x scale, timestamps kept",
                       "vsrft")

    __gsttemplates__ = (
        Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, _CAPS),
        Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, _CAPS),
    )

    # vsrft's options (vsrft/options.py), as `vsrft enhance` has them; numbers take any value and are
    # checked when the pipeline starts (outside a GObject range, gst-launch would only print a warning
    # and run at the default); 0 or an empty string is "not set"
    __gproperties__ = _PROPERTIES = _options.gstreamer_properties(_RW)

    def __init__(self) -> None:
        super().__init__()
        self._props = {name: spec[-2] for name, spec in _PROPERTY_SPECS.items()}
        self.sinkpad = Gst.Pad.new_from_template(self.get_pad_template("sink"), "sink")
        self.sinkpad.set_chain_function_full(self._chain)
        self.sinkpad.set_event_function_full(self._sink_event)
        self.sinkpad.set_query_function_full(self._sink_query)
        self.add_pad(self.sinkpad)
        self.srcpad = Gst.Pad.new_from_template(self.get_pad_template("src"), "src")
        self.srcpad.set_query_function_full(self._src_query)
        self.srcpad.use_fixed_caps()
        self.add_pad(self.srcpad)

        self._engine = None                 # the vsrft.engine module, once imported
        self._enhancer = None
        self._stale = False                 # the enhancer's run was abandoned: make a new one
        self._cond = threading.Condition()
        self._queue: deque = deque()        # ("buffer", frame, meta) / ("event", event) / ("end", _End)
        self._fifo: deque = deque()         # _Meta of frames in the engine, and events queued behind them
        self._flushing = False
        self._flow = Gst.FlowReturn.OK
        self._worker: threading.Thread | None = None
        self._stop = False
        self._in_info: GstVideo.VideoInfo | None = None
        self._out_info: GstVideo.VideoInfo | None = None
        self._out_caps: Gst.Caps | None = None
        self._index = 0

    # ---------------------------------------------------------------- properties

    def do_get_property(self, prop: GObject.ParamSpec):
        return self._props[prop.name]

    def do_set_property(self, prop: GObject.ParamSpec, value) -> None:
        self._props[prop.name] = value

    # ---------------------------------------------------------------- errors

    def _error(self, text: str, debug: str = "") -> None:
        """GST_ELEMENT_ERROR: gst-launch prints `text` and exits non-zero."""
        err = GLib.Error.new_literal(Gst.StreamError.quark(), text, Gst.StreamError.FAILED)
        self.post_message(Gst.Message.new_error(self, err, debug or text))

    # ---------------------------------------------------------------- the engine

    def _make_enhancer(self):
        """A new `vsrft.engine.Enhancer` from the properties."""
        if self._engine is None:
            self._engine = _import_vsrft()
            _route_logging()
        from vsrft import options    # the same schema as `_options`, with the engine importable

        return options.make_enhancer(options.gstreamer_values(self._props))

    def _close_enhancer(self, wait: bool) -> None:
        enh, self._enhancer = self._enhancer, None
        close = getattr(enh, "close", None)     # stops the engine's adaptation thread, if it has one
        if close is None:
            return
        if wait:
            close()
        else:                                   # an abandoned adaptation may still be running: don't block
            threading.Thread(target=close, name="vsrft-close", daemon=True).start()

    # ---------------------------------------------------------------- state

    def do_change_state(self, transition: Gst.StateChange) -> Gst.StateChangeReturn:
        if transition == Gst.StateChange.READY_TO_PAUSED:
            try:
                self._enhancer = self._make_enhancer()
            except Exception as exc:  # noqa: BLE001 - becomes an element error
                self._error(_describe(exc), _debug(exc))
                return Gst.StateChangeReturn.FAILURE
            self._stale = False
            with self._cond:
                self._flushing, self._stop, self._flow = False, False, Gst.FlowReturn.OK
                self._queue.clear()
                self._fifo.clear()
            self._in_info = self._out_info = self._out_caps = None
        elif transition == Gst.StateChange.PAUSED_TO_READY:
            with self._cond:          # unblock the chain function before the pads are deactivated
                self._flushing = True
                self._cond.notify_all()
        ret = Gst.Element.do_change_state(self, transition)
        if transition == Gst.StateChange.PAUSED_TO_READY:
            self._stop_worker()
            self._close_enhancer(wait=True)
        return ret

    # ---------------------------------------------------------------- data flow: streaming thread

    @_guarded(Gst.FlowReturn.ERROR)
    def _chain(self, pad: Gst.Pad, parent: Gst.Object, buf: Gst.Buffer) -> Gst.FlowReturn:
        info = self._in_info
        if info is None:
            self._error("vsrft received a buffer before its caps")
            return Gst.FlowReturn.NOT_NEGOTIATED
        frame = _to_rgb(buf, info)
        if frame is None:
            self._error(f"buffer of {buf.get_size()} bytes is too small for a {info.width}x{info.height} RGB frame")
            return Gst.FlowReturn.ERROR
        return self._enqueue(("buffer", frame, _Meta(buf)))

    def _enqueue(self, item: tuple) -> Gst.FlowReturn:
        with self._cond:
            while True:
                if self._flushing:
                    return Gst.FlowReturn.FLUSHING
                if self._flow != Gst.FlowReturn.OK:
                    return self._flow
                if item[0] != "buffer" or len(self._queue) < _QUEUE:
                    break
                self._cond.wait()
            self._queue.append(item)
            self._ensure_worker()
            self._cond.notify_all()
        return Gst.FlowReturn.OK

    @_guarded(False)
    def _sink_event(self, pad: Gst.Pad, parent: Gst.Object, event: Gst.Event) -> bool:
        t = event.type
        if t == Gst.EventType.FLUSH_START:
            with self._cond:
                self._flushing = True
                self._queue.clear()
                self._cond.notify_all()
            return self.srcpad.push_event(event)
        if t == Gst.EventType.FLUSH_STOP:
            aborted = self._stop_worker()
            with self._cond:
                self._queue.clear()
                self._fifo.clear()
                self._flushing, self._flow = False, Gst.FlowReturn.OK
            if aborted:
                self._stale = True
            return self.srcpad.push_event(event)
        if t == Gst.EventType.CAPS:
            return self._set_caps(event.parse_caps())
        if t == Gst.EventType.EOS:
            return self._enqueue(("end", _End(event))) == Gst.FlowReturn.OK
        if Gst.EventType.get_flags(t) & Gst.EventTypeFlags.SERIALIZED:
            return self._enqueue(("event", event)) == Gst.FlowReturn.OK
        return pad.event_default(parent, event)

    def _set_caps(self, caps: Gst.Caps) -> bool:
        info = GstVideo.VideoInfo.new_from_caps(caps)
        if info is None or info.finfo.format != GstVideo.VideoFormat.RGB:
            self._error(f"vsrft takes video/x-raw,format=RGB, got {caps.to_string()}")
            return False
        scale = self._props["scale"]
        s = caps.get_structure(0).copy()
        s.set_value("width", info.width * scale)
        s.set_value("height", info.height * scale)
        out = Gst.Caps.new_empty()
        out.append_structure(s)
        out_info = GstVideo.VideoInfo.new_from_caps(out)
        same_size = self._in_info is not None and (self._in_info.width, self._in_info.height) == (info.width, info.height)
        if same_size:
            # a new rate, aspect or colour tag only: no need to end the engine's run; the caps go
            # downstream in order, behind the outputs of the frames before them
            if not self.srcpad.peer_query_accept_caps(out):
                return False
            self._in_info, self._out_info, self._out_caps = info, out_info, out
            return self._enqueue(("event", Gst.Event.new_caps(out))) == Gst.FlowReturn.OK
        # a new size is a new stream for the engine: its run ends (the last frames are flushed out), and
        # what was queued before the caps (stream-start) goes first
        if not self._drain():
            return False
        self._in_info, self._out_info, self._out_caps = info, out_info, out
        return self.srcpad.push_event(Gst.Event.new_caps(out))

    def _drain(self) -> bool:
        """End the engine's run and wait until everything queued went downstream."""
        end = _End()
        if self._enqueue(("end", end)) != Gst.FlowReturn.OK:
            return False
        with self._cond:
            while not end.done and not self._flushing and self._flow == Gst.FlowReturn.OK:
                self._cond.wait()
            return end.done

    @_guarded(False)
    def _sink_query(self, pad: Gst.Pad, parent: Gst.Object, query: Gst.Query) -> bool:
        if query.type == Gst.QueryType.CAPS:
            # any RGB frame size, provided downstream takes RGB at all
            down = self.srcpad.peer_query_caps(_CAPS)
            caps = _CAPS if down is None or not down.is_empty() else Gst.Caps.new_empty()
            filt = query.parse_caps()
            if filt is not None:
                caps = filt.intersect_full(caps, Gst.CapsIntersectMode.FIRST)
            query.set_caps_result(caps)
            return True
        return pad.query_default(parent, query)

    @_guarded(False)
    def _src_query(self, pad: Gst.Pad, parent: Gst.Object, query: Gst.Query) -> bool:
        if query.type == Gst.QueryType.CAPS:
            caps = self._out_caps if self._out_caps is not None else _CAPS
            filt = query.parse_caps()
            if filt is not None:
                caps = filt.intersect_full(caps, Gst.CapsIntersectMode.FIRST)
            query.set_caps_result(caps)
            return True
        if query.type == Gst.QueryType.LATENCY:
            if not self.sinkpad.peer_query(query):
                return False
            live, lo, hi = query.parse_latency()
            info = self._in_info
            if info is not None and info.fps_n > 0:
                # the engine holds two frames back (the window's future half), more while a shot adapts
                held = 2 + (8 if self._props["adapt"] else 0)
                ours = Gst.util_uint64_scale_int(held * Gst.SECOND, info.fps_d, info.fps_n)
                lo += ours
                if hi != Gst.CLOCK_TIME_NONE:
                    hi += ours
            query.set_latency(live, lo, hi)
            return True
        return pad.query_default(parent, query)

    # ---------------------------------------------------------------- data flow: the worker thread

    def _ensure_worker(self) -> None:
        """Called with the lock held."""
        if self._worker is None or not self._worker.is_alive():
            self._stop = False
            self._worker = threading.Thread(target=self._work, name="vsrft-worker", daemon=True)
            self._worker.start()

    def _stop_worker(self) -> bool:
        """Stop the worker thread; True if it abandoned frames inside the engine."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
            worker = self._worker
        if worker is not None:
            worker.join()
        with self._cond:
            self._worker = None
            self._stop = False
            aborted = any(isinstance(x, _Meta) for x in self._fifo)
        return aborted

    def _take(self) -> tuple:
        """Next queue item for the worker; raises _Abort on flush or shutdown."""
        with self._cond:
            while not self._queue:
                if self._stop or self._flushing or self._flow != Gst.FlowReturn.OK:
                    raise _Abort()
                self._cond.wait()
            if self._stop or self._flushing or self._flow != Gst.FlowReturn.OK:
                raise _Abort()
            item = self._queue.popleft()
            self._cond.notify_all()       # room in the queue for the chain function
            return item

    def _work(self) -> None:
        try:
            while True:
                item = self._take()
                if item[0] == "buffer":
                    self._run(item)
                elif item[0] == "event":
                    self._push_event(item[1])
                else:
                    self._finish(item[1])
        except _Abort:
            pass
        except Exception as exc:  # noqa: BLE001 - any failure stops the stream with an element error
            self._error(_describe(exc), _debug(exc))
            with self._cond:
                self._flow = Gst.FlowReturn.ERROR
                self._cond.notify_all()

    def _run(self, first: tuple) -> None:
        """One run of the engine: frames until an end marker (EOS, new size); outputs pushed as they come."""
        if self._enhancer is None or self._stale:
            self._close_enhancer(wait=False)
            self._enhancer = self._make_enhancer()
            self._stale = False
        end: list[_End] = []
        frames = self._frames(first, end)
        outputs = self._enhancer.process(frames)
        try:
            for out in outputs:
                self._push_frame(out)
        except BaseException:
            self._stale = True           # abandoned mid-stream: its windows and adaptation state are stale
            outputs.close()
            raise
        if end:
            self._finish(end[0])

    def _frames(self, first: tuple, end: list):
        """The engine's input: frames from the queue; events are pushed in order; an end marker ends the run."""
        from vsrft.frame import Frame

        item = first
        while True:
            kind = item[0]
            if kind == "buffer":
                _, rgb, meta = item
                self._fifo.append(meta)
                pts = None if meta.pts == Gst.CLOCK_TIME_NONE else meta.pts
                yield Frame(rgb=rgb, index=self._index, pts=pts, time_base=_NS if pts is not None else None,
                            key=meta.key)
                self._index += 1
            elif kind == "event":
                if self._fifo:
                    self._fifo.append(item[1])       # behind the frames still inside the engine
                else:
                    self._push_event(item[1])
            else:
                end.append(item[1])
                return
            item = self._take()

    def _push_frame(self, out) -> None:
        meta = self._fifo.popleft()
        buf = _to_buffer(out.rgb, self._out_info)
        buf.pts, buf.dts, buf.duration = meta.pts, meta.dts, meta.duration
        buf.offset, buf.offset_end = meta.offset, meta.offset_end
        if meta.flags:
            buf.set_flags(meta.flags)
        self._check(self.srcpad.push(buf))
        while self._fifo and not isinstance(self._fifo[0], _Meta):
            self._push_event(self._fifo.popleft())

    def _push_event(self, event: Gst.Event) -> None:
        if not self.srcpad.push_event(event) and event.type == Gst.EventType.CAPS:
            self._check(Gst.FlowReturn.NOT_NEGOTIATED)

    def _check(self, ret: Gst.FlowReturn) -> None:
        if ret == Gst.FlowReturn.OK:
            return
        with self._cond:                 # the chain function returns it upstream
            if self._flow == Gst.FlowReturn.OK:
                self._flow = ret
            self._cond.notify_all()
        if ret == Gst.FlowReturn.NOT_NEGOTIATED:
            self._error("downstream refused the upscaled caps "
                        f"({self._out_caps.to_string() if self._out_caps else 'none'})")
        raise _Abort()

    def _finish(self, end: _End) -> None:
        """The run's outputs are all downstream: push the marker's event (EOS) and tell the waiter."""
        if end.event is not None:
            self._write_report()
            self._push_event(end.event)
        with self._cond:
            end.done = True
            self._cond.notify_all()

    def _write_report(self) -> None:
        """At EOS, as `vsrft` at the end of its run: the report and the adapted models, if asked for."""
        if self._enhancer is None:
            return
        path = self._props["report"]
        if path:
            Path(path).write_text(json.dumps(self._enhancer.report(), indent=2, default=str))
        if self._props["save-adapted"]:
            self._enhancer.save_adapted(self._props["save-adapted"])


_NS = Fraction(1, Gst.SECOND)


def _to_rgb(buf: Gst.Buffer, info: GstVideo.VideoInfo):
    """The buffer's pixels as an (H, W, 3) uint8 array (a copy; row padding removed)."""
    import numpy as np

    w, h = info.width, info.height
    stride, offset = info.stride[0], info.offset[0]
    need = offset + stride * (h - 1) + w * 3
    if buf.get_size() < need:
        return None
    data = np.frombuffer(buf.extract_dup(offset, stride * h), np.uint8)
    if data.size < stride * h:
        data = np.concatenate([data, np.zeros(stride * h - data.size, np.uint8)])
    rows = data.reshape(h, stride)[:, : w * 3]
    return np.ascontiguousarray(rows).reshape(h, w, 3)


def _to_buffer(rgb, info: GstVideo.VideoInfo) -> Gst.Buffer:
    """An (H, W, 3) uint8 array as a buffer laid out as `info` says (rows padded to the stride)."""
    import numpy as np

    h, w = rgb.shape[:2]
    if (w, h) != (info.width, info.height):
        raise RuntimeError(f"the engine returned {w}x{h} frames, the caps say {info.width}x{info.height}")
    stride = info.stride[0]
    if stride == w * 3 and info.offset[0] == 0:
        return Gst.Buffer.new_wrapped(np.ascontiguousarray(rgb).tobytes())
    out = np.zeros(info.size, np.uint8)
    plane = out[info.offset[0]: info.offset[0] + stride * h].reshape(h, stride)
    plane[:, : w * 3] = rgb.reshape(h, w * 3)
    return Gst.Buffer.new_wrapped(out.tobytes())


def _describe(exc: BaseException) -> str:
    """One clear line for the error message."""
    if isinstance(exc, ImportError):
        return (f"cannot import vsrft ({exc}): set VSRFT_VENV to the Python {sys.version_info.major}."
                f"{sys.version_info.minor} virtual environment vsrft is installed in (plugins/gstreamer/README.md)")
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    known = type(exc).__name__ == "VsrftError" or isinstance(exc, (ValueError, FileNotFoundError))
    return text if known else f"{type(exc).__name__}: {text}"


def _debug(exc: BaseException) -> str:
    """The error message's debug line: where it was raised. The traceback goes to the debug log only
    (GST_DEBUG=python:4)."""
    import traceback

    Gst.warning("".join(traceback.format_exception(exc)).rstrip())
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    return f"{type(exc).__module__}.{type(exc).__qualname__}{where}"


_PROPERTY_SPECS = Vsrft._PROPERTIES
GObject.type_register(Vsrft)
__gstelementfactory__ = ("vsrft", Gst.Rank.NONE, Vsrft)
