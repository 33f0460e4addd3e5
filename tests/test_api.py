"""The Python API (issue 16): `Enhancer` as a context manager, the colour order of plain arrays
(OpenCV's BGR), and the frame rate that `adapt_every` needs for arrays. Real clips decoded by PyAV,
the tiny random model."""
from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from vsrft import Enhancer

QUICK = {"steps": 2, "batch": 2, "patch": 32}       # adaptation that only has to happen, not to be good


def _decoded(path, fmt: str, count: int | None = None) -> list:
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))[:count]
    return frames if fmt == "frame" else [f.to_ndarray(format=fmt) for f in frames]


def test_context_manager_closes_the_adaptation_thread(tiny_model, clip) -> None:
    frames = _decoded(clip("mp4"), "rgb24", 10)
    with Enhancer(model=str(tiny_model), adapt_thread=True, adapt_config=QUICK) as enh:
        outs = list(enh.process(frames))
        assert enh._pool is not None                   # the background adaptation ran in its thread
    assert enh._pool is None and len(outs) == 10 and enh.reports
    with pytest.raises(RuntimeError, match="inside"):  # also on the way out of an error
        with Enhancer(model=str(tiny_model), adapt_thread=True, adapt_config=QUICK) as enh:
            list(enh.process(frames))
            raise RuntimeError("inside")
    assert enh._pool is None


def test_bgr_arrays_in_and_out(tiny_model, clip) -> None:
    """OpenCV-ordered frames (PyAV's bgr24 of the same pictures) give the same pictures, in BGR."""
    rgb = _decoded(clip("cut"), "rgb24")
    bgr = _decoded(clip("cut"), "bgr24")
    assert not np.array_equal(rgb[0], bgr[0])
    want = list(Enhancer(model=str(tiny_model), adapt=False).process(rgb))
    got = list(Enhancer(model=str(tiny_model), adapt=False).process(bgr, colour_order="bgr"))
    assert len(got) == len(want) == 24
    assert all(np.array_equal(g, w[..., ::-1]) for g, w in zip(got, want))
    on_the_constructor = list(Enhancer(model=str(tiny_model), adapt=False, colour_order="BGR").process(bgr))
    assert all(np.array_equal(g, h) for g, h in zip(got, on_the_constructor))
    taken_as_rgb = list(Enhancer(model=str(tiny_model), adapt=False).process(bgr))     # the old silent mistake
    assert not all(np.array_equal(g, h) for g, h in zip(got, taken_as_rgb))
    with pytest.raises(ValueError, match="colour_order"):
        Enhancer(model=str(tiny_model), colour_order="yuv")


def test_adapt_every_with_arrays_needs_the_frame_rate(tiny_model, clip) -> None:
    """adapt_every counts seconds: arrays with a frame rate adapt where the timed frames of the same
    clip do; arrays without one are an error, not a guess."""
    frames = _decoded(clip("pan"), "frame")            # one shot, 24 fps
    assert len(frames) == 30 and frames[0].time_base is not None
    arrays = [f.to_ndarray(format="rgb24") for f in frames]

    def keyframes(items, **kwargs) -> list[int]:
        enh = Enhancer(model=str(tiny_model), adapt_every=0.25, adapt_sync=True, adapt_config=QUICK,
                       **kwargs.pop("init", {}))
        assert len(list(enh.process(items, **kwargs))) == len(items)
        return [r.frame_index for r in enh.reports]

    timed = keyframes(frames)
    assert timed == [0, 6, 12, 18, 24]
    assert keyframes(arrays, frame_rate=24) == timed
    assert keyframes(arrays, init={"frame_rate": Fraction(24)}) == timed
    with pytest.raises(ValueError, match="frame_rate"):
        keyframes(arrays)
    with pytest.raises(ValueError, match="frame_rate"):
        Enhancer(model=str(tiny_model), frame_rate=0)
    # without adapt_every the rate is not needed
    assert len(list(Enhancer(model=str(tiny_model), adapt=False).process(arrays[:4]))) == 4


def test_process_is_documented() -> None:
    doc = Enhancer.process.__doc__ or ""
    for word in ("colour_order", "bgr", "frame_rate", "adapt_every", "av.VideoFrame"):
        assert word in doc


@pytest.mark.parametrize("name, adapt", [("mp4", False), ("bt709", False), ("mov", False), ("10bit", False),
                                         ("bt709", True)])
def test_video_frames_give_the_output_of_vsrft_enhance(tiny_model, clip, tmp_path, name: str, adapt: bool) -> None:
    """`av.VideoFrame`s that PyAV decodes from a file, fed to `Enhancer.process`, give what `vsrft enhance`
    makes of that file (RGB, losslessly encoded) within 1 code value: they are converted as the file
    decoder converts (matrix and range from the tags, not swscale's defaults, which differed by up to 25
    code values), on untagged BT.601-sized, BT.709-tagged, full-range (yuvj) and 10-bit footage."""
    from helpers import decoded_rgb, ffmpeg

    from vsrft import enhance

    if name == "10bit":
        src = tmp_path / "10bit.mkv"
        ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48:r=24,trim=end_frame=8", "-c:v", "ffv1", "-pix_fmt", "yuv420p10le",
               "-colorspace", "bt709", "-color_range", "tv", src)
    else:
        src = clip(name)
    options = {"model": str(tiny_model), "adapt": adapt, "adapt_sync": True, "adapt_config": QUICK}
    out = tmp_path / "out.mkv"
    enhance(src, out, codec="ffv1", pix_fmt="bgr0", **options)
    want = decoded_rgb(out)
    frames = _decoded(src, "frame")
    got = [vf.to_ndarray(format="rgb24") for vf in Enhancer(**options).process(frames)]
    assert len(got) == len(want) == len(frames) and got[0].shape == want[0].shape
    assert max(int(np.abs(a.astype(int) - b).max()) for a, b in zip(got, want)) <= 1
