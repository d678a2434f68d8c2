"""Every network a preset can name, as facts: the input kind it reads, whether it takes SpecAugment
masks and the pretrained weights it starts from. Its builder lives in src.models (BUILDERS); a new
network is one file in src/models/, one line here and one in src.models.BUILDERS."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Input:
    """An input kind as the presets see it (src.dataset.inputs builds it)."""

    name: str
    takes_waves: bool
    """crops of raw audio: wave augmentations and the device feed apply"""


INPUTS = {
    "wave": Input("wave", takes_waves=True),    # int16 samples
    "mfcc": Input("mfcc", takes_waves=False),   # cached MFCC frames
}


@dataclass(frozen=True)
class Network:
    input: str
    """the input kind it reads (INPUTS)"""
    masks: bool = False
    """takes SpecAugment time / frequency masks (it sees a spectrogram)"""
    weights: str | None = None
    """the pretrained weights it starts from (src.models.pretrained.WEIGHTS), if any"""


NETWORKS = {
    "conv1d": Network("wave"),
    "mfcc2d": Network("mfcc", masks=True),
    "logmel_cnn": Network("wave", masks=True),
    "envnet": Network("wave"),
    "aisfx_cnn": Network("wave", masks=True, weights="aisfx"),
}


def network(name: str) -> Network:
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; known: {', '.join(sorted(NETWORKS))}")
    return NETWORKS[name]
