"""Model presets, and the command-line flags made from their fields.

`Config` is everything that decides what a run learns, grouped by concern (input, training,
augmentation, inference); one per preset in PRESETS, overridable from the command line (every field is
a `--flag` of `src.train`, its help in the field's metadata) and saved as JSON beside every fold it
trained. `Feeding` is how fast batches reach the model, never what it learns: flags of the run, not of
the preset, recorded in each fold's result.json.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

from .errors import UsageError
from .networks import INPUTS, NETWORKS, network

GROUPS = {"input": "input and network", "training": "training", "augmentation": "augmentation (training only)",
          "inference": "validation and test prediction"}


def setting(default, group: str, help: str):
    """A Config field with its --help text and its group in the help."""
    return field(default=default, metadata={"group": group, "help": help})


@dataclass
class Config:
    """What one run learns: its name and preset, input, network, training, augmentation and inference."""

    name: str = field(default="1d", metadata={"help": "run name: the folder under predictions/"})
    preset: str = field(default="1d", metadata={"help": "the preset the run starts from"})
    task: str = field(default="single-label", metadata={"help": "the dataset's task, set from its train.csv "
                                                                "(src.dataset.task): single-label or multi-label"})

    network: str = setting("conv1d", "input", "network (src/base/networks.py; it decides the input): conv1d, envnet "
                           "(raw wave), logmel_cnn (wave, mel spectrogram in the model) or mfcc2d (cached MFCCs)")
    sample_rate: int = setting(16000, "input", "rate the audio cache is resampled to, Hz")
    crop_seconds: float = setting(2.0, "input", "length of each training / prediction crop, seconds")
    n_mfcc: int = setting(40, "input", "MFCC coefficients (networks that read MFCCs)")
    n_mels: int = setting(128, "input", "mel bands (of the MFCCs, or of logmel_cnn's spectrogram)")
    n_fft: int = setting(2048, "input", "STFT window, samples (MFCCs and mel spectrograms)")
    hop_length: int = setting(512, "input", "STFT hop, samples (MFCCs and mel spectrograms)")

    learning_rate: float = setting(1e-3, "training", "Adam learning rate (the start of the schedule)")
    optimizer: str = setting("adam", "training", "adam, or amsgrad (Adam with the AMSGrad correction)")
    schedule: str = setting("constant", "training",
                            "learning rate over training: constant, or cosine (decays to 0 over all epochs)")
    warmup_epochs: int = setting(0, "training", "epochs over which the learning rate rises linearly from 0 "
                                 "before the schedule starts (for pretrained weights); 0 = none")
    epochs: int = setting(50, "training", "maximum epochs")
    batch_size: int = setting(64, "training", "clips per batch")
    patience: int | None = setting(5, "training", "epochs without a better validation loss before stopping; "
                                   "none = no early stopping (the best epoch is kept either way)")
    n_folds: int = setting(10, "training", "StratifiedKFold splits; fixed once data/folds.csv is written")
    seed: int = setting(42, "training", "seed for folds, crops, shuffling and weights (each fold adds its index)")
    precision: str = setting("float32", "training", "float32, or bfloat16: mixed precision (weights, mel front "
                             "end, softmax and loss stay float32)")
    unverified_weight: float = setting(1.0, "training", "loss weight of training clips with manually_verified=0 "
                                       "(1 = as is, 0 = left out of the loss)")
    drop_unverified: float = setting(0.0, "training", "share of each batch's unverified clips with the highest "
                                     "loss left out of it; 0 = none")
    clean_labels: str = setting("off", "training", "label cleaning with nested folds: unverified training clips "
                                "whose label a judge (logistic regression on pretrained aisfx embeddings, trained "
                                "on inner folds of the fold's own training rows) confidently disputes are "
                                "relabelled to its class (relabel) or dropped (drop); off = none. Needs the "
                                "aisfx weights")
    clean_confidence: float = setting(0.8, "training", "label cleaning: the judge's probability of another class "
                                      "from which it disputes a label")
    clean_folds: int = setting(5, "training", "label cleaning: inner folds of the judge")

    min_crop_seconds: float = setting(0.0, "augmentation", "random crop lengths: training crops last between "
                                      "this and crop_seconds, padded; 0 = off")
    gain_db: float = setting(0.0, "augmentation", "wave crops: random gain within +-this many dB; 0 = off")
    time_shift: float = setting(0.0, "augmentation", "wave crops: rolled in time by up to this share of the "
                                "crop; 0 = off")
    stretch: float = setting(0.0, "augmentation", "wave crops: sped up or slowed by a factor within 1 +- this "
                             "(resampled; pitch moves too)")
    noise_snr: float = setting(0.0, "augmentation", "wave crops: white noise at a random SNR between this and "
                               "40 dB; 0 = off")
    time_masks: int = setting(0, "augmentation", "SpecAugment (networks that see a spectrogram): time masks "
                              "per crop, each up to mask_fraction of the frames")
    freq_masks: int = setting(0, "augmentation", "SpecAugment: masks of MFCCs / mel bands, each up to "
                              "mask_fraction of them")
    mask_fraction: float = setting(0.1, "augmentation", "largest share of frames (or bands) one mask covers")
    mixup: float = setting(0.0, "augmentation", "mixup alpha: training clips mixed in pairs with "
                           "Beta(alpha, alpha) weights, labels alike; 0 = off")
    mixup_targets: str = setting("mix", "augmentation", "a mixed pair's targets: mix (by the same weights) "
                                 "or union (every label of both at 1; for multi-label tagging)")
    between_class: bool = setting(False, "augmentation", "wave crops: between-class learning (EnvNet-v2's "
                                  "pairing): every training crop mixed with one of another class at a ratio "
                                  "r ~ U(0, 1) of their A-weighted sound pressures, targets r : 1 - r; "
                                  "instead of mixup")

    prediction: str = setting("crop", "inference", "validation and test prediction: crop (one centred / "
                              "first crop) or windows (covering the clip)")
    combine: str = setting("mean", "inference", "how windows' probabilities combine into a clip's: mean or "
                           "geometric")

    def __post_init__(self):
        for name, allowed in (("network", tuple(NETWORKS)), ("prediction", ("crop", "windows")),
                              ("combine", ("mean", "geometric")), ("optimizer", ("adam", "amsgrad")),
                              ("mixup_targets", ("mix", "union")),
                              ("schedule", ("constant", "cosine")), ("precision", ("float32", "bfloat16")),
                              ("clean_labels", ("off", "relabel", "drop"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {getattr(self, name)!r}")
        if not 0 <= self.min_crop_seconds <= self.crop_seconds:
            raise ValueError(f"min_crop_seconds must be within [0, crop_seconds={self.crop_seconds}], "
                             f"not {self.min_crop_seconds}")
        if not 0 < self.clean_confidence <= 1 or self.clean_folds < 2:
            raise ValueError(f"clean_confidence must be in (0, 1] and clean_folds >= 2, not "
                             f"{self.clean_confidence} and {self.clean_folds}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs must be within [0, epochs={self.epochs}), not {self.warmup_epochs}")
        if not 0 <= self.drop_unverified < 1 or not 0 <= self.stretch < 1 or not 0 <= self.time_shift <= 1:
            raise ValueError("drop_unverified and stretch must be in [0, 1), time_shift in [0, 1]")
        # An option the run's input cannot take is an error, not a silent no-op.
        if self.between_class and self.mixup:
            raise ValueError("between_class replaces mixup: set mixup to 0 to use it")
        wave_options = [n for n in ("gain_db", "time_shift", "stretch", "noise_snr", "between_class")
                        if getattr(self, n)]
        if wave_options and not INPUTS[self.features].takes_waves:
            raise ValueError(f"{', '.join(wave_options)} augment raw waves; {self.name} reads "
                             f"{self.features} features")
        if (self.time_masks or self.freq_masks) and not network(self.network).masks:
            spectrograms = ", ".join(name for name, net in NETWORKS.items() if net.masks)
            raise ValueError(f"SpecAugment masks need a spectrogram ({spectrograms}); {self.name} uses "
                             f"{self.network}")

    @property
    def crop_samples(self) -> int:
        return int(round(self.crop_seconds * self.sample_rate))

    @property
    def crop_frames(self) -> int:
        # librosa's centred framing gives 1 + n // hop frames for n samples.
        return 1 + self.crop_samples // self.hop_length

    @property
    def features(self) -> str:
        """The input kind its network reads (src.base.networks.INPUTS)."""
        return network(self.network).input

    @property
    def early_stopping_patience(self) -> int:
        return self.epochs if self.patience is None else self.patience

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved: dict, source: str = "a saved config") -> Config:
        """A saved config; also one written by earlier versions (run name in `preset`, the input kind
        in `features`, feeding settings among the rest)."""
        saved = dict(saved)
        features = saved.pop("features", None)
        if "name" not in saved:
            saved["name"] = saved["preset"]
            saved["preset"] = saved["preset"] if saved["preset"] in PRESETS else ""
        known = {f.name for f in dataclasses.fields(cls)}
        config = cls(**{k: v for k, v in saved.items() if k in known})
        if features not in (None, config.features):
            raise ValueError(f"{source}: network {config.network} reads {config.features} input, not {features}")
        return config


@dataclass
class Feeding:
    """How batches reach the model: never what it learns, so flags of a run rather than of a preset."""

    feed: str = field(default="auto", metadata={"help": "where training crops are cut: host (src.feeds.host), "
                      "device (the audio cache on the accelerator, src.feeds.device) or auto (device on a GPU when "
                      "the preset allows it)"})
    steps_per_execution: int = field(default=0, metadata={"help": "training steps per call of Keras's train "
                                     "function (TensorFlow compiles them as one loop; under JAX it saves Keras's "
                                     "per-step bookkeeping only); 0 = auto: 8 on a GPU, 1 on the CPU"})
    workers: int = field(default=1, metadata={"help": "host feed: PyDataset workers"})
    use_multiprocessing: bool = field(default=False, metadata={"help": "host feed: workers are processes"})
    max_queue_size: int = field(default=10, metadata={"help": "host feed: batches prepared ahead of the model"})

    def __post_init__(self):
        if self.feed not in ("auto", "host", "device"):
            raise ValueError(f"feed must be auto, host or device, not {self.feed!r}")

    def pydataset(self) -> dict:
        """The settings Keras's PyDataset takes."""
        return dict(workers=self.workers, use_multiprocessing=self.use_multiprocessing,
                    max_queue_size=self.max_queue_size)


PRESETS = {
    # The raw-wave Conv1D net of the "Beginner's Guide to Audio Data" kernel.
    "1d": Config(name="1d", preset="1d", network="conv1d", sample_rate=16000, crop_seconds=2.0),
    # The kernel's MFCC Conv2D net.
    "2d": Config(name="2d", preset="2d", network="mfcc2d", sample_rate=44100, crop_seconds=2.0),
    # A VGG-style log-mel CNN with the 2018 winners' training: mixup, random crops of random length,
    # SpecAugment masks, AMSGrad with a cosine schedule, whole-clip prediction. (No gain: its log-mel
    # is relative to each clip's loudest bin.) Batches of 32 for 80 epochs, the cosine schedule running
    # its course (no early stopping; docs/results.md has why).
    "logmel": Config(name="logmel", preset="logmel", network="logmel_cnn", sample_rate=22050,
                     crop_seconds=2.0, n_mels=64, n_fft=1024, hop_length=512, optimizer="amsgrad",
                     schedule="cosine", epochs=80, batch_size=32, patience=None, mixup=0.2,
                     min_crop_seconds=1.0, time_masks=1, freq_masks=1, prediction="windows",
                     combine="mean"),
    # The aisfx CNN pretrained on sound-effect libraries (src/models/aisfx_cnn.py; its weights are
    # optional: requirements-pretrained.txt), fine-tuned whole with logmel's augmentation: the
    # pretraining's input (44.1 kHz, 96 HTK mel bands, 2048 / 1024), a lower learning rate than from
    # scratch after a two-epoch warm-up, so that the first steps of the new head do not undo it.
    "aisfx": Config(name="aisfx", preset="aisfx", network="aisfx_cnn", sample_rate=44100, crop_seconds=2.0,
                    n_mels=96, n_fft=2048, hop_length=1024, learning_rate=3e-4, optimizer="adam",
                    schedule="cosine", warmup_epochs=2, epochs=20, batch_size=32, patience=None, mixup=0.2,
                    min_crop_seconds=1.0, time_masks=1, freq_masks=1, prediction="windows", combine="mean"),
    # EnvNet: 1.5 s raw-wave crops, probability voting over sliding windows at test time.
    "envnet": Config(name="envnet", preset="envnet", network="envnet", sample_rate=16000,
                     crop_seconds=1.5, optimizer="amsgrad", schedule="cosine", epochs=40, patience=10,
                     gain_db=6.0, time_shift=0.1, prediction="windows", combine="mean"),
}


def add_config_arguments(parser: argparse.ArgumentParser, feeding: bool = True) -> None:
    """Add `--model` and `--name`, one override flag per Config field (default: the preset's value),
    grouped by concern, and (with feeding) one per Feeding field."""
    parser.add_argument("--model", required=True, choices=sorted(PRESETS), help="the preset")
    parser.add_argument("--name", help="run name: the folder under predictions/ for a variant of the preset "
                                       "made with the flags below (default: the preset's name)")
    groups = {key: parser.add_argument_group(f"{title} (default: the preset's value)")
              for key, title in GROUPS.items()}
    for f in dataclasses.fields(Config):
        if "group" in f.metadata:
            _add_flag(groups[f.metadata["group"]], f)
    if feeding:
        group = parser.add_argument_group("feeding (how fast, not what is learnt)")
        for f in dataclasses.fields(Feeding):
            _add_flag(group, f)


def _add_flag(group, f: dataclasses.Field) -> None:
    flag, kind = "--" + f.name.replace("_", "-"), str(f.type)
    if kind == "bool":
        group.add_argument(flag, type=_parse_bool, metavar="BOOL", help=f.metadata["help"])
        return
    parse = {"int": int, "float": float, "str": str}[kind.split(" |")[0]]
    if "None" in kind:
        parse = _or_none(parse)
    group.add_argument(flag, type=parse, help=f.metadata["help"])


def config_from_args(args: argparse.Namespace) -> Config:
    """The chosen preset with every flag that was given applied."""
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
                 if "group" in f.metadata and getattr(args, f.name, None) is not None}
    overrides = {k: (None if v is NONE else v) for k, v in overrides.items()}
    if getattr(args, "name", None):
        overrides["name"] = args.name
    try:
        return dataclasses.replace(PRESETS[args.model], **overrides)
    except ValueError as error:  # options that contradict each other or the preset
        raise UsageError(f"--model {args.model} with these options: {error}") from None


def feeding_from_args(args: argparse.Namespace) -> Feeding:
    return Feeding(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Feeding)
                      if getattr(args, f.name, None) is not None})


NONE = object()  # "none" given on the command line (None means the flag was not given)


def _or_none(parse):
    def parse_or_none(text: str):
        return NONE if text.lower() == "none" else parse(text)
    parse_or_none.__name__ = parse.__name__
    return parse_or_none


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
