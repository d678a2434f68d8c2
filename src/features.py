"""Stage 3, features: the audio cache and the features one preset reads, built. The input kinds are
in src/dataset/inputs.py.

    python -m src.features --model 2d [--data-dir data]
"""
from __future__ import annotations

import sys

from .base import cli
from .base.config import add_config_arguments, config_from_args
from .dataset.inputs import model_input


@cli.command
def main(argv=None) -> int:
    parser = cli.parser("python -m src.features", __doc__, out_dir=False)
    add_config_arguments(parser, feeding=False)
    parser.add_argument("--jobs", type=int, default=-1, help="processes (default: all cores)")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    for split in ("train", "test"):
        source = model_input(args.data_dir, split, config, args.jobs)
        print(f"{split}: {len(source.store.index)} clips -> {source.store.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
