"""The engine's options, once: one table from which the `vsrft` command's arguments, the GStreamer
element's properties and the VapourSynth plugin's keyword -> `vsrft pipe` flag table are made, and
one validation (ranges, conflicts) that every front end runs, so an option means the same and a
mistake reads the same everywhere.

Standard library only, and nothing else of vsrft is imported at module level: the GStreamer plugin
loads this file when GStreamer registers it, in the system Python, before vsrft (numpy, torch) can
be imported, and `vsrft --help` builds its parser from it. The VapourSynth plugin runs in a Python
without vsrft, so it keeps a literal copy of `vapoursynth_table()` and `MATRICES`, which
tests/test_options.py holds equal to these.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

MODEL, ADAPT, ADVANCED = "model and footage", "adaptation", "advanced"     # --help groups, in this order


@dataclass(frozen=True)
class Option:
    """One engine option. `name` is its keyword everywhere in Python (argparse dest, VapourSynth keyword);
    the GStreamer property is `name` with hyphens. A value of None means "not set": the engine's default."""

    name: str
    type: type                      # int, float, str or bool
    default: Any
    help: str
    group: str
    flag: str | None = None         # the CLI flag of a value, or the switch that turns a boolean on
    off_flag: str | None = None     # booleans: the switch that turns it off (on by default, or three-state)
    off_help: str | None = None     # three-state booleans: the off switch's help
    metavar: str | None = None
    minimum: float | None = None    # numbers: the smallest value accepted ...
    above: bool = False             # ... or the value it must exceed
    repeat: bool = False            # a list of values: the flag repeats; GStreamer: comma separated
    unset: str = ""                 # GStreamer: what 0 (or an empty string, false) means: not set
    choices: tuple[str, ...] = ()   # names: the values accepted

    @property
    def gst_name(self) -> str:
        return self.name.replace("_", "-")

    @property
    def switch(self) -> str:
        """How an error names the option: its CLI flag (GStreamer's property is the flag without dashes)."""
        return self.flag or self.off_flag or f"--{self.gst_name}"

    @property
    def three_state(self) -> bool:
        return self.type is bool and self.flag is not None and self.off_flag is not None


OPTIONS: tuple[Option, ...] = (
    Option("scale", int, 4, "upscaling factor (2, 3, 4, ...; built-in models are x4)", MODEL, "--scale", minimum=1),
    Option("model", str, "vsrft-mse", "built-in model name (see `vsrft models`) or checkpoint path", MODEL, "--model"),
    Option("blur", float, None, "the video is blurred by a Gaussian of this sigma (HR pixels) before downsampling",
           MODEL, "--blur", metavar="SIGMA", minimum=0, unset="0: no blur"),
    Option("kernel", str, None, "blur kernel of the video, a 2-D .npy array", MODEL, "--kernel", metavar="K.npy"),
    Option("input_deblur", bool, True, "with --blur, do not undo the blur on the LR input before the network "
           "(by default it is undone, so the network sees the input it was trained on)", MODEL,
           off_flag="--no-input-deblur"),
    Option("adapt", bool, True, "do not fine-tune the network on the video (adaptation is on by default)", ADAPT,
           off_flag="--no-adapt"),
    Option("adapt_every", float, None, "adapt again every SECONDS inside long shots (default: once per shot)", ADAPT,
           "--adapt-every", metavar="SECONDS", minimum=0, above=True, unset="0: once per shot"),
    Option("adapt_steps", int, None, "step budget per keyframe (default: the model's; --report records the settings "
           "used)", ADAPT, "--adapt-steps", minimum=0, unset="0: the model's default"),
    Option("adapt_seconds", float, None, "also stop each shot's fine-tuning after S seconds (default: no time limit, "
           "only the step budget, so a busy machine gives the same result as an idle one)", ADAPT, "--adapt-seconds",
           metavar="S", minimum=0, above=True, unset="0: no time limit"),
    Option("adapt_lr", float, None, "fine-tuning learning rate (default: the model's; --report records the settings "
           "used)", ADAPT, "--adapt-lr", minimum=0, above=True, unset="0: the model's default"),
    Option("multi_frame_loss", bool, True, "fit each output to its own LR frame only (by default it must also "
           "explain the neighbouring frames where they align under a global motion)", ADAPT,
           off_flag="--single-frame-loss"),
    Option("adapt_sync", bool, False, "adapt in line, with the step budget only: reproducible output", ADAPT,
           "--adapt-sync"),
    Option("adapt_background", bool, False, "adapt in a background thread while the previous shot is inferred "
           "(default only when inference runs on a GPU: on the CPU the two compete for the same cores)", ADAPT,
           "--adapt-background"),
    Option("warm_start", bool, False, "start each shot's adaptation from the previous shot's weights", ADAPT,
           "--warm-start"),
    Option("report", str, None, "write every adaptation decision and stage time here", ADAPT, "--report",
           metavar="RUN.json"),
    Option("save_adapted", str, None, "save each shot's weights as an ONNX file (loadable with --model, ONNX Runtime, "
           "vs-mlrt) and manifest.json listing the shots' frames and decisions (docs/onnx.md)", ADAPT,
           "--save-adapted", metavar="DIR"),
    Option("project", bool, None, "finish each frame with the exact data-consistency projection x + A+(y - Ax) "
           "(default: on when adapting footage without --blur or --kernel)", ADVANCED, "--project", "--no-project",
           off_help="adapt, but do not project the output onto the input", unset="false: the default"),
    Option("tile", int, 512, "largest LR tile side before frames are tiled (default 512)", ADVANCED, "--tile",
           minimum=1),
    Option("memory_limit", int, None, "cap the inference memory arena; a frame that does not fit is retried with "
           "smaller tiles", ADVANCED, "--memory-limit", metavar="MB", minimum=0, above=True, unset="0: no cap"),
    Option("provider", str, None, "ONNX Runtime execution provider to prefer (repeatable); default TensorRT, CUDA, "
           "CPU", ADVANCED, "--provider", metavar="NAME", repeat=True),
    Option("threads", int, 0, "ONNX Runtime intra-op threads (default 0: its own choice)", ADVANCED, "--threads",
           metavar="N", minimum=0),
    Option("runtime", str, None, "what runs the network: auto (the fastest on this machine, timed once per model "
           "and cached; GPU providers first), onnxruntime, openvino (pip install 'vsrft[openvino]') or torch",
           ADVANCED, "--runtime", metavar="NAME", choices=("auto", "onnxruntime", "openvino", "torch"),
           unset="empty: auto"),
    Option("precision", str, None, "auto (bf16 where the CPU has it, the model loses <= 0.02 dB with it and it is "
           "faster; fp16 on CUDA), fp32 or bf16", ADVANCED, "--precision", metavar="P",
           choices=("auto", "fp32", "bf16"), unset="empty: auto"),
)
BY_NAME = {o.name: o for o in OPTIONS}

# Options that cannot be set together: (option, option, the error).
CONFLICTS: tuple[tuple[str, str, str], ...] = (
    ("adapt_sync", "adapt_background", "--adapt-sync adapts in line: it cannot be combined with --adapt-background"),
    ("project", "kernel", "--project needs a Gaussian or no blur; it does not support --kernel"),
)

# H.273 matrix numbers (FFmpeg's AVColorSpace, VapourSynth's _Matrix) the YUV <-> RGB conversion supports,
# by name (`vsrft pipe --matrix`; the VapourSynth plugin's copy is held equal by tests/test_options.py).
MATRICES = {"bt709": 1, "fcc": 4, "bt470bg": 5, "bt601": 6, "smpte170m": 6, "smpte240m": 7, "bt2020": 9,
            "bt2020nc": 9, "bt2020c": 10}


def defaults() -> dict[str, Any]:
    return {o.name: o.default for o in OPTIONS}


# ------------------------------------------------------------------ validation and the engine

def _is_set(option: Option, value: Any) -> bool:
    return value is True if option.type is bool else value is not None


def validate(values: Mapping[str, Any]) -> None:
    """Raise VsrftError (one line) for a value out of range, a kernel file that does not exist, or two
    options that cannot be combined. `values`: option name -> value; missing names have their default."""
    from vsrft.errors import VsrftError

    unknown = sorted(set(values) - set(BY_NAME))
    if unknown:
        raise VsrftError(f"unknown option {unknown[0]!r} (known: {', '.join(BY_NAME)})")
    for o in OPTIONS:
        value = values.get(o.name, o.default)
        if o.minimum is None or value is None:
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v < o.minimum or (o.above and v == o.minimum):
                raise VsrftError(f"{o.switch} must be {'>' if o.above else '>='} {o.minimum:g}, got {v}")
    for a, b, message in CONFLICTS:
        if _is_set(BY_NAME[a], values.get(a, BY_NAME[a].default)) and _is_set(BY_NAME[b], values.get(b, BY_NAME[b].default)):
            raise VsrftError(message)
    for o in OPTIONS:
        value = values.get(o.name, o.default)
        if o.choices and value is not None and value not in o.choices:
            raise VsrftError(f"{o.switch} must be one of {', '.join(o.choices)}, got {value!r}")
    kernel = values.get("kernel")
    if kernel is not None and not Path(kernel).is_file():
        raise VsrftError(f"kernel file not found: {kernel}")


def enhancer_kwargs(values: Mapping[str, Any]) -> dict[str, Any]:
    """`vsrft.engine.Enhancer`'s keyword arguments for validated option values."""
    v = {**defaults(), **values}
    cfg = {key: v[name] for key, name in (("steps", "adapt_steps"), ("seconds", "adapt_seconds"), ("lr", "adapt_lr"))
           if v[name] is not None}            # overrides of the model's adaptation defaults (`AdaptConfig.for_model`)
    if not v["multi_frame_loss"]:
        cfg["neighbours"] = False
    providers = v["provider"]
    return {"scale": v["scale"], "model": v["model"], "adapt": v["adapt"], "blur": v["blur"], "kernel": v["kernel"],
            "input_deblur": v["input_deblur"], "project": v["project"], "adapt_config": cfg,
            "adapt_every": v["adapt_every"], "warm_start": v["warm_start"], "tile": v["tile"],
            "providers": list(providers) if providers else None, "threads": v["threads"],
            "adapt_sync": v["adapt_sync"], "adapt_thread": True if v["adapt_background"] else None}


def make_enhancer(values: Mapping[str, Any]):
    """Validate the options, cap the inference memory if asked, and build the `Enhancer` (which keeps every
    shot's weights when they are to be saved)."""
    validate(values)
    from vsrft.engine import Enhancer

    if values.get("memory_limit") is not None:
        from vsrft.runtime.session import limit_memory
        limit_memory(values["memory_limit"])
    from vsrft.runtime.backends import set_defaults
    set_defaults(values.get("runtime"), values.get("precision"))     # the Network's runtime (or a one-line error)
    enhancer = Enhancer(**enhancer_kwargs(values))
    enhancer.keep_decisions = bool(values.get("save_adapted"))
    return enhancer


# ------------------------------------------------------------------ the command line

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option as `vsrft` arguments, in --help groups (the dest of each is the option's name)."""
    groups = {name: parser.add_argument_group(name) for name in (MODEL, ADAPT, ADVANCED)}
    for o in OPTIONS:
        group = groups[o.group]
        if o.three_state:
            pair = group.add_mutually_exclusive_group()
            pair.add_argument(o.flag, dest=o.name, action="store_const", const=True, default=None, help=o.help)
            pair.add_argument(o.off_flag, dest=o.name, action="store_const", const=False, help=o.off_help)
        elif o.type is bool:
            group.add_argument(o.flag or o.off_flag, dest=o.name, default=o.default, help=o.help,
                               action="store_true" if o.flag else "store_false")
        else:
            group.add_argument(o.flag, dest=o.name, type=o.type, default=o.default, help=o.help, metavar=o.metavar,
                               action="append" if o.repeat else "store")


def from_namespace(args: argparse.Namespace) -> dict[str, Any]:
    """The option values of parsed `vsrft` arguments."""
    return {o.name: getattr(args, o.name, o.default) for o in OPTIONS}


# ------------------------------------------------------------------ GStreamer

_INT = (-2 ** 31, 2 ** 31 - 1)
_FLOAT = (-sys.float_info.max, sys.float_info.max)


def gstreamer_properties(flags: Any) -> dict[str, tuple]:
    """The element's `__gproperties__`. Numbers take any value of their type: the ranges are checked by
    `validate` when the element starts, so a bad value stops the pipeline with one clear error (outside a
    GObject range, gst-launch would only warn and run at the default). Optional numbers and names
    are 0 / empty when not set, a list is comma separated, and `project`=false is its default (auto)."""
    table: dict[str, tuple] = {}
    for o in OPTIONS:
        nick = o.name.replace("_", " ").capitalize()
        blurb = o.help[0].upper() + o.help[1:]
        if o.repeat:
            blurb += ", comma separated"
        if o.unset:
            blurb += f" ({o.unset})"
        if o.type is bool:
            table[o.gst_name] = (bool, nick, blurb, bool(o.default), flags)
        elif o.type is str:
            table[o.gst_name] = (str, nick, blurb, o.default, flags)
        else:
            low, high = _INT if o.type is int else _FLOAT
            table[o.gst_name] = (o.type, nick, blurb, low, high, o.type(o.default or 0), flags)
    return table


def gstreamer_values(properties: Mapping[str, Any]) -> dict[str, Any]:
    """The option values of the element's properties (property name -> value)."""
    values = {}
    for o in OPTIONS:
        value = properties.get(o.gst_name, o.default)
        if o.repeat:
            value = [s.strip() for s in (value or "").split(",") if s.strip()] or None
        elif o.type is str:
            value = value or None
        elif o.three_state:
            value = value or None
        elif o.type is not bool and o.default is None and value == 0:
            value = None
        values[o.name] = value
    return values


# ------------------------------------------------------------------ VapourSynth

def vapoursynth_table() -> dict[str, tuple[str, str | None, str | None]]:
    """keyword -> ("value", flag, None) or ("switch", flag when true, flag when false): how the VapourSynth
    plugin passes its keyword arguments to its `vsrft pipe` worker (a switch given None adds nothing)."""
    return {o.name: ("switch", o.flag, o.off_flag) if o.type is bool else ("value", o.flag, None) for o in OPTIONS}
