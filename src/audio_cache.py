"""Stage 2, audio cache: every clip decoded once, resampled and packed as int16. One flat file per
split and rate, read by offset (src/dataset/audio.py, src/dataset/store.py).

    python -m src.audio_cache --rates 16000 44100 [--data-dir data]

Incremental (a second run does nothing; new or changed clips are added), keyed by its parameters,
parallel over all cores. A clip that cannot be decoded, or holds no samples, is recorded as skipped in
report.csv beside the index instead of stopping the build; stereo, 8-bit or other-rate files are
converted and the conversion noted.
"""
from __future__ import annotations

import sys

from .base import cli
from .dataset.audio import build


@cli.command
def main(argv=None) -> int:
    parser = cli.parser("python -m src.audio_cache", __doc__, out_dir=False)
    parser.add_argument("--rates", type=int, nargs="+", default=[16000, 44100],
                        help="sample rates to cache, Hz (default: 16000 44100, for the 1d and 2d presets)")
    parser.add_argument("--splits", nargs="+", default=["train", "test"], choices=["train", "test"])
    parser.add_argument("--jobs", type=int, default=-1, help="decoding processes (default: all cores)")
    args = parser.parse_args(argv)
    for split in args.splits:
        stores = build(args.data_dir, split, args.rates, args.jobs)
        for rate, store in stores.items():
            ok = store.index[store.index.status == "ok"]
            hours = ok.length.sum() / rate / 3600
            print(f"{split} @ {rate} Hz: {len(ok)} clips, {hours:.2f} h of audio, "
                  f"{(store.index.status != 'ok').sum()} skipped -> {store.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
