"""Make tests/reference/aisfx_reference.npz: what the aisfx package's own code computes on fixed inputs,
for tests/test_pretrained.py to hold the keras rebuild (src/models/aisfx_cnn.py) to.

Needs torch and the package (pip install torch; pip install --no-deps aisfx==0.1.2); run once:

    python tests/reference/make_aisfx_reference.py

Saves a fixed 1.5 s test signal (int16), the spectrogram of it from the package's librosa front end
(normalised as the package does; transposed to (frames, bands), the layout its network reads), a
batch of three network inputs (that spectrogram, uniform noise, the spectrogram reversed in time) and
the package's torch model's 512-d embeddings of them.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from aisfx import inference, preprocessing
from aisfx.spectrogram import spectrogram_librosa

RATE = 44100
OUT = Path(__file__).with_name("aisfx_reference.npz")


def test_signal() -> np.ndarray:
    """A chirp, a decaying noise burst and a click train: energy across the spectrum, in int16."""
    rng = np.random.default_rng(0)
    t = np.arange(int(1.5 * RATE)) / RATE
    wave = 0.4 * np.sin(2 * np.pi * (200 * t + 3000 * t ** 2))
    wave += 0.2 * rng.standard_normal(len(t)) * np.exp(-4 * t)
    wave[:: RATE // 15] += 0.3
    return np.round(np.clip(wave, -1, 1) * 32767).astype(np.int16)


def main() -> None:
    wave = test_signal()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "signal.wav"
        sf.write(path, wave, RATE, subtype="PCM_16")
        spec = spectrogram_librosa.compute_spectrogram(
            str(path), sr=inference.SAMPLE_RATE, block_size=inference.SPEC_BLOCK_LENGTH,
            hop_size=inference.SPEC_HOP_LENGTH, n_mels=inference.MEL_BINS, f_min=inference.F_MIN,
            f_max=inference.F_MAX)
    spec = preprocessing.spectrogram_normalize(spec.T).astype(np.float32)   # (frames, bands)
    rng = np.random.default_rng(1)
    batch = np.stack([spec, rng.uniform(0, 1, spec.shape), spec[::-1]]).astype(np.float32)
    # The package's load_weights calls torch.load with today's weights_only default, which refuses the
    # numpy scalars in its checkpoint; the same load, allowing them (the package's own file).
    weights, datasets = torch.load(inference.get_path_modelWeights(), map_location="cpu", weights_only=False)
    model = inference.load_bestModel(weights, datasets, "cpu")
    with torch.no_grad():
        embeddings = model.get_embedding(torch.from_numpy(batch)).numpy()
    np.savez_compressed(OUT, wave=wave, spectrogram=spec, inputs=batch, embeddings=embeddings)
    print(f"wrote {OUT}: spectrogram {spec.shape}, embeddings {embeddings.shape}")


if __name__ == "__main__":
    main()
