"""Every network a preset can name: its builder (a function of src/models/, imported only when a model
is built), the input kind it reads (src.features.INPUT_KINDS), whether it takes SpecAugment masks and the
pretrained weights it starts from.
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
    weights: str | None = None
    """the pretrained weights it starts from (src.core.pretrained.WEIGHTS), if any"""

    def build_function(self):
        module, function = self.builder.split(":")
        return getattr(importlib.import_module(f"src.models.{module}"), function)

    def check_weights(self) -> None:
        """Raise a DataError saying how to install them if its pretrained weights are absent."""
        if self.weights is not None:
            from .pretrained import WEIGHTS

            WEIGHTS[self.weights].path()


NETWORKS = {
    "conv1d": Network("conv1d:conv1d", "wave"),
    "mfcc2d": Network("mfcc2d:mfcc2d", "mfcc", masks=True),
    "logmel_cnn": Network("logmel_cnn:logmel_cnn", "wave", masks=True),
    "envnet": Network("envnet:envnet", "wave"),
    "aisfx_cnn": Network("aisfx_cnn:aisfx_cnn", "wave", masks=True, weights="aisfx"),
}


def network(name: str) -> Network:
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; known: {', '.join(sorted(NETWORKS))}")
    return NETWORKS[name]
