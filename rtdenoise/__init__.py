"""rtdenoise: real-time streaming speech denoiser.

Data path (one module per step):
    ring.py -> resample.py -> stft.py -> processor.py (+ backends.py, model.py, vq.py)
    -> stft.py (overlap-add) -> streamer.py -> file_mode.py / live.py
"""

__version__ = "0.1.0"
