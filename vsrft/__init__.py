"""vsrft: video super-resolution that fine-tunes itself on the video it is given."""
from vsrft.errors import VsrftError
from vsrft.frame import Colour, Frame

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: importing vsrft must not pull in torch or onnxruntime
    if name in ("Enhancer", "enhance", "Stats", "Progress"):
        from vsrft import engine
        return getattr(engine, name)
    raise AttributeError(name)


__all__ = ["Enhancer", "enhance", "Frame", "Colour", "VsrftError", "Stats", "Progress"]
