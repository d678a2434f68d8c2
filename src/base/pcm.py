"""16-bit PCM, the format the audio cache stores: the scale between float audio and int16 samples."""
from __future__ import annotations

import numpy as np

INT16_SCALE = 32768  # libsndfile's float <-> PCM_16 factor, so 16-bit sources are stored bit-exact


def to_int16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] as int16, rounded and clipped as libsndfile writes them."""
    return np.clip(np.round(samples * INT16_SCALE), -32768, 32767).astype(np.int16)
