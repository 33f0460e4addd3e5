"""One options schema (vsrft/options.py) for the three front ends: every option reaches the engine the same
way from `vsrft`'s arguments, the GStreamer element's properties and the VapourSynth plugin's keywords, and a
bad combination is the same one-line error from each.

GStreamer and VapourSynth are not needed: the element's file is loaded with a stand-in for gi (its properties
are made at class creation, its Enhancer from them), the plugin's with a stand-in for vapoursynth (its tables
and the worker's command line are plain Python). Their real runs are in test_gstreamer.py / test_vapoursynth.py.
"""
from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
import types
from pathlib import Path
from unittest import mock

import pytest

from helpers import ROOT, SAMPLE
from vsrft import options
from vsrft.cli import build_parser, make_enhancer
from vsrft.errors import VsrftError

GST_PLUGIN = ROOT / "plugins" / "gstreamer" / "python" / "gstvsrft.py"
VS_PLUGIN = ROOT / "plugins" / "vapoursynth" / "vsrft_vs.py"


def _example(o: options.Option):
    """A value other than the option's default, for each option."""
    if o.type is bool:
        return not o.default if o.default is not None else True
    if o.repeat:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if getattr(o, "choices", ()):
        return o.choices[-1]
    if o.type is str:
        return f"some-{o.name}"
    return o.type((o.default or 0) + 3)


EXAMPLES = [(o.name, _example(o)) for o in options.OPTIONS] + [("project", False)]   # both states of --project


def _cli_values(*argv: str) -> dict:
    return options.from_namespace(build_parser().parse_args(["pipe", *argv]))


def _cli_argv(name: str, value) -> list[str]:
    o = options.BY_NAME[name]
    if o.type is bool:
        return [o.flag if value else o.off_flag]
    return [a for v in (value if o.repeat else [value]) for a in (o.flag, str(v))]


def _gst_property(name: str, value):
    """How a user sets the option's property (a list comma separated)."""
    return ",".join(value) if options.BY_NAME[name].repeat else value


@pytest.fixture(scope="module")
def vs_plugin():
    """plugins/vapoursynth/vsrft_vs.py imported with a stand-in for vapoursynth."""
    fake = types.ModuleType("vapoursynth")
    fake.Error = type("Error", (Exception,), {})
    saved = sys.modules.get("vapoursynth")
    sys.modules["vapoursynth"] = fake
    try:
        spec = importlib.util.spec_from_file_location("vsrft_vs_under_test", VS_PLUGIN)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module          # its dataclasses look their module up
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop("vsrft_vs_under_test", None)
        if saved is None:
            sys.modules.pop("vapoursynth", None)
        else:
            sys.modules["vapoursynth"] = saved
    return module


@pytest.fixture()
def gst_plugin(monkeypatch):
    """plugins/gstreamer/python/gstvsrft.py imported with a stand-in for gi (GStreamer's bindings)."""
    gst = mock.MagicMock()
    gst.SECOND = 1_000_000_000

    class Element:                       # Gst.Element: whatever the element calls on itself is a mock
        def __init__(self) -> None:
            pass

        def __getattr__(self, name: str):
            return mock.MagicMock()

    gst.Element = Element
    repository = mock.MagicMock(Gst=gst)
    monkeypatch.setitem(sys.modules, "gi", mock.MagicMock(repository=repository))
    monkeypatch.setitem(sys.modules, "gi.repository", repository)
    spec = importlib.util.spec_from_file_location("gstvsrft_under_test", GST_PLUGIN)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop("_gstvsrft_options", None)
    import vsrft.engine

    monkeypatch.setattr(module, "_import_vsrft", lambda: vsrft.engine)     # sys.path and logging left alone
    monkeypatch.setattr(module, "_route_logging", lambda: None)
    return module


def test_the_schema_is_importable_without_numpy_or_torch() -> None:
    """The GStreamer plugin reads it in the system Python at registration, `vsrft --help` before torch."""
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('o', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); sys.modules['o'] = m; spec.loader.exec_module(m); "
            "m.gstreamer_properties(0); m.vapoursynth_table(); "
            "assert not {'numpy', 'torch', 'vsrft'} & set(sys.modules), sorted(sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT / "vsrft" / "options.py")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_defaults_are_the_same_everywhere(vs_plugin) -> None:
    assert _cli_values() == options.defaults()
    table = options.gstreamer_properties(0)
    assert options.gstreamer_values({name: spec[-2] for name, spec in table.items()}) == options.defaults()
    argv = vs_plugin._pipe_argv(["vsrft"], {"scale": 4, "model": "vsrft-mse", "adapt": True, "blur": None})
    assert argv[:3] == ["vsrft", "pipe", "-q"] and _cli_values(*argv[3:]) == options.defaults()


@pytest.mark.parametrize("name, value", EXAMPLES, ids=[f"{n}={v}" for n, v in EXAMPLES])
def test_every_option_reaches_the_engine_from_each_front_end(name, value, vs_plugin) -> None:
    want = {**options.defaults(), name: value}
    assert _cli_values(*_cli_argv(name, value)) == want, "vsrft"

    table = options.gstreamer_properties(0)
    props = {prop: spec[-2] for prop, spec in table.items()}
    props[name.replace("_", "-")] = _gst_property(name, value)
    if name == "project" and value is False:
        # a boolean property has two states: false is the default (auto), so --no-project has no
        # GStreamer spelling (the element's project=false has always meant the default)
        assert options.gstreamer_values(props) == options.defaults(), "GStreamer"
    else:
        assert options.gstreamer_values(props) == want, "GStreamer"

    argv = vs_plugin._pipe_argv(["vsrft"], {name: value})
    assert argv[:3] == ["vsrft", "pipe", "-q"]
    assert _cli_values(*argv[3:]) == want, f"VapourSynth: {argv}"


def test_the_plugins_tables_are_the_schemas(gst_plugin, vs_plugin) -> None:
    """The VapourSynth plugin keeps literal copies (its Python has no vsrft): they must equal the schema's,
    read from the file as written. The GStreamer element's properties are made from the schema."""
    literals = {}
    for node in ast.parse(VS_PLUGIN.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("_OPTIONS", "_MATRICES"):
                literals[node.targets[0].id] = ast.literal_eval(node.value)
    assert literals["_OPTIONS"] == vs_plugin._OPTIONS == options.vapoursynth_table()
    assert literals["_MATRICES"] == vs_plugin._MATRICES == options.MATRICES
    assert gst_plugin.Vsrft._PROPERTIES == options.gstreamer_properties(gst_plugin._RW)
    assert Path(gst_plugin._options.__file__).resolve() == (ROOT / "vsrft" / "options.py").resolve()
    for o in options.OPTIONS:
        assert o.gst_name in gst_plugin.Vsrft._PROPERTIES
    from vsrft.cli import _matrix_arg

    assert all(_matrix_arg(name) == number for name, number in options.MATRICES.items())


BAD = {"adapt-sync with adapt-background": {"adapt_sync": True, "adapt_background": True},
       "project with kernel": {"project": True, "kernel": "k.npy"},
       "negative blur": {"blur": -1.0},
       "negative memory limit": {"memory_limit": -5},
       "no kernel file": {"kernel": "/nonexistent/k.npy"}}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_combination_is_the_same_error_everywhere(case, gst_plugin, vs_plugin, tmp_path, monkeypatch) -> None:
    """The error comes from `options.validate` before any model is loaded: `vsrft` prints it, the GStreamer
    element posts it, the VapourSynth plugin's worker (`vsrft pipe`) prints it and the plugin raises it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "k.npy").write_bytes(b"")
    values = BAD[case]
    with pytest.raises(VsrftError) as cli:
        make_enhancer(build_parser().parse_args(["pipe", *[a for k, v in values.items() for a in _cli_argv(k, v)]]))
    text = str(cli.value)
    with pytest.raises(VsrftError, match="^" + re.escape(text) + "$"):
        options.validate(values)

    element = gst_plugin.Vsrft()
    element._props.update({k.replace("_", "-"): _gst_property(k, v) for k, v in values.items()})
    with pytest.raises(VsrftError) as gst:
        element._make_enhancer()
    assert str(gst.value) == text

    argv = vs_plugin._pipe_argv(["vsrft"], values)
    with pytest.raises(VsrftError) as vs:
        make_enhancer(build_parser().parse_args(argv[1:]))
    assert str(vs.value) == text


def test_the_command_reports_a_conflict_in_one_line(tmp_path, capsys) -> None:
    from vsrft.cli import main

    rc = main(["enhance", str(SAMPLE), str(tmp_path / "out.mp4"), "--adapt-sync", "--adapt-background"])
    assert rc == 2
    assert capsys.readouterr().err.strip() == f"vsrft: error: {options.CONFLICTS[0][2]}"
