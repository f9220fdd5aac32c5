"""rtdenoise: real-time streaming speech denoiser.

    import rtdenoise
    clean = rtdenoise.denoise(noisy, sample_rate)     # [n] or [n, channels] -> same shape
    d = rtdenoise.Denoiser(sample_rate, channels)     # chunk by chunk: d.process(chunk)

(``api.py``; imported on first use, so ``import rtdenoise`` stays cheap and never needs torch.)

Data path (one module per step):
    ring.py -> resample.py -> stft.py -> processor.py (+ backends.py, model.py, vq.py)
    -> stft.py (overlap-add) -> streamer.py -> file_mode.py / live.py / api.py
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Denoiser", "__version__", "denoise"]

if TYPE_CHECKING:
    from .api import Denoiser, denoise


def __getattr__(name: str) -> Any:
    if name in ("Denoiser", "denoise"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
