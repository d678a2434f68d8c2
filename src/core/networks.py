"""Every network a preset can name: its builder (a function of src/models/, imported only when a model
is built), the input kind it reads (src.features.INPUT_KINDS) and whether it takes SpecAugment masks.
A new network is one file in src/models/ and one line here."""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Network:
    builder: str
    """module:function under src.models"""
    input: str
    """the input kind it reads: wave (int16 samples) or mfcc (cached MFCC frames)"""
    masks: bool = False
    """takes SpecAugment time / frequency masks (it sees a spectrogram)"""

    def build_function(self):
        module, function = self.builder.split(":")
        return getattr(importlib.import_module(f"src.models.{module}"), function)


NETWORKS = {
    "conv1d": Network("conv1d:conv1d", "wave"),
    "mfcc2d": Network("mfcc2d:mfcc2d", "mfcc", masks=True),
    "logmel_cnn": Network("logmel_cnn:logmel_cnn", "wave", masks=True),
    "envnet": Network("envnet:envnet", "wave"),
}


def network(name: str) -> Network:
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; known: {', '.join(sorted(NETWORKS))}")
    return NETWORKS[name]
