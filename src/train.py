"""Stage 4, train: one fold of one preset, trained and its predictions written (src.training.fold).

    python -m src.train --model 1d --fold 3          # train fold 3, predict its OOF rows and the test set
    python -m src.train --model 1d --prepare         # build caches and data/folds.csv, print the fold ids
                                                     # and the model's folder

Writes predictions/<model>/fold<k>/: config.json, best.keras, log.csv, tensorboard/, oof.csv (the fold's
validation rows), test.csv (sample_submission order), with --clean-labels cleaned_labels.csv (the
training labels it changed) and, last, result.json. A fold with result.json is
finished and is skipped unless --force (asked to train with other settings, it stops, naming them); every
file is written atomically, so a killed run never leaves a fold that looks finished.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .base import backend, cli
from .base.config import add_config_arguments, config_from_args, feeding_from_args
from .base.errors import DataError
from .base.files import WriteError
from .training.fold_files import finished_folds, fold_files
from .training.run_folder import seed_note
from .training.runs import write_plan


def train_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m src.train", __doc__)
    add_config_arguments(parser)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--fold", type=int, help="train this fold (0-based, as in data/folds.csv)")
    action.add_argument("--prepare", action="store_true",
                        help="build the caches and folds the preset needs; print its fold ids")
    parser.add_argument("--plan", type=Path, metavar="FILE",
                        help="with --prepare: also write the fold ids and the model's folders as JSON to FILE "
                             "(what run_folds.sh reads)")
    parser.add_argument("--force", action="store_true", help="retrain a finished fold")
    parser.add_argument("--resume-every", type=float, metavar="SECONDS",
                        help="save the state a killed fold resumes from after an epoch that ends this long after "
                             "the last save (0: after every epoch). Default: as often as keeps saving under 5 %% "
                             "of the time (every epoch on a CPU, every few sub-second epochs on a GPU)")
    return parser


@cli.command
def main(argv=None) -> int:
    args = train_parser().parse_args(argv)
    config, paths = config_from_args(args), cli.paths(args)
    if note := seed_note(paths, args.seed):  # --seed and an existing folds.csv: said, never silently ignored
        logging.getLogger(__name__).warning("%s", note)
    backend.current()  # no backend: said now, before Keras fails to load
    # Keras (seconds to load) comes with the training library: only once the flags are known to be good.
    from .training.fold import check_settings, prepare, train_fold

    if args.prepare:
        if not args.force:  # said where run_folds.sh runs, before minutes of caching, not in a fold's log
            check_settings(config, paths, finished_folds(paths, config.name))
        folds = prepare(config, paths)
        print(f"{config.name}: folds {' '.join(map(str, folds))} -> {paths.model_dir(config.name)}")
        if args.plan:
            write_plan(args.plan, paths, config.name, folds)
    else:
        try:
            train_fold(config, paths, args.fold, args.force, feeding_from_args(args), args.resume_every)
        except WriteError as error:  # a full disk, a read-only folder: say where and what was kept
            files = fold_files(paths, config.name, args.fold)
            kept = (f"the epochs saved so far are kept in {files.resume}: run the same command again to continue"
                    if files.resume.exists() else "no epoch of this attempt was saved yet")
            raise DataError(f"{error} For fold {args.fold} of {config.name}: {kept}; finished folds are "
                            f"untouched.") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
