"""Model presets, and the command-line flags made from their fields.

One `Config` per preset, overridable from the command line (every field becomes a `--flag`) and saved
as JSON beside every output it produced.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from .networks import NETWORKS, network


@dataclass
class Config:
    """Everything that defines one model preset: its inputs, network and training schedule."""

    preset: str = "1d"
    """Preset name; also the folder under predictions/."""
    network: str = "conv1d"
    """Network (src/networks.py; it decides the input): conv1d, envnet (raw wave), logmel_cnn (wave, mel
    spectrogram in the model) or mfcc2d (cached MFCCs)."""
    sample_rate: int = 16000
    """Rate the audio cache is resampled to, Hz."""
    crop_seconds: float = 2.0
    """Length of each training / prediction crop, seconds."""
    n_mfcc: int = 40
    """MFCC coefficients (networks that read MFCCs)."""
    n_mels: int = 128
    """Mel bands (of the MFCCs, or of logmel_cnn's spectrogram)."""
    n_fft: int = 2048
    """STFT window, samples (MFCCs and mel spectrograms)."""
    hop_length: int = 512
    """STFT hop, samples (MFCCs and mel spectrograms)."""
    learning_rate: float = 1e-3
    """Adam learning rate (the start of the schedule)."""
    optimizer: str = "adam"
    """adam, or amsgrad (Adam with the AMSGrad correction)."""
    schedule: str = "constant"
    """Learning rate over training: constant, or cosine (decays to 0 over all epochs)."""
    epochs: int = 50
    """Maximum epochs; early stopping usually ends sooner."""
    batch_size: int = 64
    """Clips per batch."""
    patience: int = 5
    """Epochs without a better validation loss before stopping."""
    n_folds: int = 10
    """StratifiedKFold splits; fixed once data/folds.csv is written."""
    seed: int = 42
    """Seed for folds, crops, shuffling and weights (each fold adds its index)."""
    unverified_weight: float = 1.0
    """Loss weight of training clips with manually_verified=0 (1 = as is, 0 = left out of the loss)."""
    drop_unverified: float = 0.0
    """Share of each batch's unverified clips with the highest loss left out of it; 0 = none."""
    min_crop_seconds: float = 0.0
    """Random crop lengths: training crops last between this and crop_seconds, padded; 0 = off."""
    gain_db: float = 0.0
    """Wave training crops: random gain within +-this many dB; 0 = off."""
    time_shift: float = 0.0
    """Wave training crops: rolled in time by up to this share of the crop; 0 = off."""
    stretch: float = 0.0
    """Wave training crops: sped up or slowed by a factor within 1 +- this (resampled; pitch moves too)."""
    time_masks: int = 0
    """SpecAugment in training (mfcc2d, logmel_cnn): time masks per crop, each up to mask_fraction of the frames."""
    freq_masks: int = 0
    """SpecAugment in training (mfcc2d, logmel_cnn): masks of MFCCs / mel bands, each up to mask_fraction of them."""
    mask_fraction: float = 0.1
    """Largest share of frames (or coefficients) one mask covers."""
    noise_snr: float = 0.0
    """White noise on wave training crops at a random SNR between this and 40 dB; 0 = off."""
    mixup: float = 0.0
    """Mixup alpha: training clips mixed in pairs with Beta(alpha, alpha) weights, labels alike; 0 = off."""
    prediction: str = "crop"
    """Validation and test prediction: crop (one centred/first crop) or windows (covering the clip)."""
    combine: str = "mean"
    """How windows' probabilities combine into a clip's: mean or geometric."""
    workers: int = 1
    """PyDataset workers feeding the model."""
    use_multiprocessing: bool = False
    """Feed from processes rather than threads."""
    max_queue_size: int = 10
    """Batches prepared ahead of the model."""
    feed: str = "auto"
    """Where training crops are cut: host (src.generator), device (the audio cache on the accelerator,
    src.device_feed) or auto (device on a GPU when the preset allows it)."""
    steps_per_execution: int = 0
    """Training steps per call into the compiled step (fewer host round trips); 0 = auto: 8 on a GPU, 1 on the CPU."""
    precision: str = "float32"
    """float32, or bfloat16: mixed precision (weights, mel front end, softmax and loss stay float32)."""

    def __post_init__(self):
        for name, allowed in (("network", tuple(NETWORKS)), ("prediction", ("crop", "windows")),
                              ("combine", ("mean", "geometric")), ("optimizer", ("adam", "amsgrad")),
                              ("schedule", ("constant", "cosine")), ("feed", ("auto", "host", "device")),
                              ("precision", ("float32", "bfloat16"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {getattr(self, name)!r}")
        if not 0 <= self.min_crop_seconds <= self.crop_seconds:
            raise ValueError(f"min_crop_seconds must be within [0, crop_seconds={self.crop_seconds}], "
                             f"not {self.min_crop_seconds}")
        if not 0 <= self.drop_unverified < 1 or not 0 <= self.stretch < 1 or not 0 <= self.time_shift <= 1:
            raise ValueError("drop_unverified and stretch must be in [0, 1), time_shift in [0, 1]")
        # An option the preset's input cannot take is an error, not a silent no-op.
        wave_options = [n for n in ("gain_db", "time_shift", "stretch", "noise_snr") if getattr(self, n)]
        if wave_options and self.features != "wave":
            raise ValueError(f"{', '.join(wave_options)} augment raw waves; preset {self.preset} reads "
                             f"{self.features} features")
        if (self.time_masks or self.freq_masks) and not network(self.network).masks:
            spectrograms = ", ".join(name for name, net in NETWORKS.items() if net.masks)
            raise ValueError(f"SpecAugment masks need a spectrogram ({spectrograms}); preset {self.preset} "
                             f"uses {self.network}")

    @property
    def crop_samples(self) -> int:
        return int(round(self.crop_seconds * self.sample_rate))

    @property
    def crop_frames(self) -> int:
        # librosa's centred framing gives 1 + n // hop frames for n samples.
        return 1 + self.crop_samples // self.hop_length

    @property
    def features(self) -> str:
        """The input kind its network reads (src.features.INPUT_KINDS)."""
        return network(self.network).input

    def to_json(self, path: Path) -> None:
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: Path) -> Config:
        saved = json.loads(Path(path).read_text())
        features = saved.pop("features", None)  # written by earlier versions; the network decides it now
        config = cls(**saved)
        if features not in (None, config.features):
            raise ValueError(f"{path}: network {config.network} reads {config.features} input, not {features}")
        return config


PRESETS = {
    # The raw-wave Conv1D net of the "Beginner's Guide to Audio Data" kernel.
    "1d": Config(preset="1d", network="conv1d", sample_rate=16000, crop_seconds=2.0),
    # The kernel's MFCC Conv2D net.
    "2d": Config(preset="2d", network="mfcc2d", sample_rate=44100, crop_seconds=2.0),
    # A VGG-style log-mel CNN with the 2018 winners' training: mixup, random crops of random length,
    # SpecAugment masks, AMSGrad with a cosine schedule, whole-clip prediction. (No gain: its log-mel
    # is relative to each clip's loudest bin.) Batches of 32 for 80 epochs, the cosine schedule running
    # its course (patience = epochs): on fsd-dev, batch 64 for 40 epochs was still improving at the end.
    "logmel": Config(preset="logmel", network="logmel_cnn", sample_rate=22050,
                     crop_seconds=2.0, n_mels=64, n_fft=1024, hop_length=512, optimizer="amsgrad",
                     schedule="cosine", epochs=80, batch_size=32, patience=80, mixup=0.2,
                     min_crop_seconds=1.0, time_masks=1, freq_masks=1, prediction="windows",
                     combine="mean"),
    # EnvNet: 1.5 s raw-wave crops, probability voting over sliding windows at test time.
    "envnet": Config(preset="envnet", network="envnet", sample_rate=16000,
                     crop_seconds=1.5, optimizer="amsgrad", schedule="cosine", epochs=40, patience=10,
                     gain_db=6.0, time_shift=0.1, prediction="windows", combine="mean"),
}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--model` plus one override flag per Config field (default: the preset's value)."""
    parser.add_argument("--model", required=True, choices=sorted(PRESETS), help="model preset")
    parser.add_argument("--name", help="folder under predictions/ for a variant of the preset made with the "
                                       "flags below (default: the preset's name)")
    group = parser.add_argument_group("preset overrides (default: the preset's value)")
    for f in dataclasses.fields(Config):
        if f.name in ("preset",):
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            group.add_argument(flag, type=_parse_bool, metavar="BOOL", help=_doc(f.name))
        else:
            kind = {"int": int, "float": float, "str": str}[str(f.type)]
            group.add_argument(flag, type=kind, help=_doc(f.name))


def config_from_args(args: argparse.Namespace) -> Config:
    """The chosen preset with every flag that was given applied."""
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
                 if f.name != "preset" and getattr(args, f.name, None) is not None}
    if getattr(args, "name", None):
        overrides["preset"] = args.name
    return dataclasses.replace(PRESETS[args.model], **overrides)


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _doc(name: str) -> str:
    return _FIELD_DOCS.get(name, "")


def _field_docs() -> dict:
    """Read the one-line docstrings under each field, so --help says what a flag does."""
    import ast
    import inspect
    tree = ast.parse(inspect.getsource(Config))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) \
                and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = nxt.value.value
    return docs


_FIELD_DOCS = _field_docs()
