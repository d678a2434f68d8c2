"""Stage 5, blend: fold predictions into validated top-3 submissions, by geometric mean. Per model and
across models, with the out-of-fold (OOF) MAP@3 of each model and of the blend.

    python -m src.blend                      # every model under predictions/, equal weights
    python -m src.blend 1d 2d --weights 1 2  # chosen models and weights
    python -m src.blend --search             # the equal-weight subset with the best OOF MAP@3
    python -m src.blend logmel 1d 2d --stack # also a second-level model trained on the OOF predictions

Writes submissions/<model>.csv for each model and submissions/<name>.csv for the blend. Each
submission is validated before it is written: its rows and fnames are sample_submission.csv's, and
each row holds exactly three distinct training labels.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .base import cli
from .base.errors import DataError
from .base.files import Lock, atomic_write_csv
from .base.layout import Paths
from .base.metrics import COMBINES
from .dataset.tables import Dataset, read_table
from .training.ensembles import fit_weights, fold_spread, search_blends, stacked
from .training.fold_files import trained_models
from .training.trained import ModelPredictions, load_model_predictions

log = logging.getLogger(__name__)

def write_submission(path: Path, probs: np.ndarray, dataset: Dataset) -> Path | None:
    """Validate and write the task's submission of the test clips (top 3 labels, or a probability per
    label); None (nothing written) when there are no test clips."""
    if not len(dataset.test):
        return None
    submission = dataset.task.submission(probs, list(dataset.test.fname), dataset.labels, dataset.submission_columns)
    atomic_write_csv(submission, path, float_format="%.6f")
    return path


def write_kaggle_form(path: Path, probs: np.ndarray, dataset: Dataset, sample: pd.DataFrame) -> Path:
    """The submission in the rows of Kaggle's own sample_submission.csv (9,400 in 2018): the clips of this
    test split get their predictions; the others (the unscored padding clips, absent from the public
    release) get the training labels' frequencies, so a late submission to Kaggle is accepted whole."""
    position = pd.Series(np.arange(len(dataset.test)), index=dataset.test.fname)
    ours = sample.fname.isin(position.index).to_numpy()
    prior = dataset.train_targets.mean(axis=0)
    rows = np.tile(prior, (len(sample), 1))
    rows[ours] = probs[position[sample.fname[ours]].to_numpy()]
    submission = dataset.task.submission(rows, list(sample.fname), dataset.labels, dataset.submission_columns)
    atomic_write_csv(submission, path, float_format="%.6f")
    log.info("%s: %d of Kaggle's %d rows predicted, %d filled with the training labels' frequencies", path,
             int(ours.sum()), len(sample), int((~ours).sum()))
    return path


def blend(paths: Paths, models: list[str], weights: list[float] | None = None, name: str | None = None,
          allow_partial: bool = False, fit: bool = False, search: bool = False, stack: bool = False,
          allow_mismatch: bool = False, how: str = "geometric", kaggle_form: Path | None = None) -> dict:
    """Per-model and blended submissions plus the OOF (and, where test labels exist, test) MAP@3;
    with fit, also a blend whose weights are fitted on the OOF matrix; with search, the models are
    first narrowed to the equal-weight subset with the best OOF MAP@3 (the ranking is reported); with
    stack, also a second-level model trained on the OOF probabilities (stacked); with kaggle_form (Kaggle's
    sample_submission.csv), each submission also in that file's rows (<name>.kaggle.csv)."""
    dataset = Dataset.load(paths.data_dir)
    if kaggle_form is not None:
        kaggle_form = read_table(kaggle_form, ["fname"])
    predictions = [load_model_predictions(paths, m, dataset, allow_partial, allow_mismatch, how) for m in models]
    # Without a test split nothing is written, so there is nothing to lock.
    writing = Lock(paths.submissions_dir / "blend.lock", f"src.blend {' '.join(models)}") if len(dataset.test) \
        else contextlib.nullcontext()
    with writing:
        return _blend_and_write(paths, dataset, predictions, models, weights, name, fit, search, stack, how,
                                kaggle_form)


def _blend_and_write(paths: Paths, dataset: Dataset, predictions: list[ModelPredictions], models: list[str],
                     weights, name, fit: bool, search: bool, stack: bool, how: str = "geometric",
                     kaggle_form: pd.DataFrame | None = None) -> dict:
    task, targets = dataset.task, dataset.train_targets
    ranking = None
    if search:
        ranking = search_blends({p.name: p.oof for p in predictions}, targets, task)
        models = ranking[0][1]
        predictions = [p for p in predictions if p.name in models]

    def write(path: Path, probs: np.ndarray) -> Path | None:
        if kaggle_form is not None:
            write_kaggle_form(path.with_suffix(".kaggle.csv"), probs, dataset, kaggle_form)
        return write_submission(path, probs, dataset)

    rows = []
    for p in predictions:
        path = write(paths.submissions_dir / f"{p.name}.csv", p.test)
        rows.append(_report_row(p.name, p.oof, p.test, dataset, path, len(p.folds), p.minutes))
    if len(predictions) > 1:
        name = name or "blend_" + "_".join(models)
        oof = task.combine([p.oof for p in predictions], weights, how)
        probs = task.combine([p.test for p in predictions], weights, how)
        path = write(paths.submissions_dir / f"{name}.csv", probs)
        rows.append(_report_row(name, oof, probs, dataset, path, None,
                                sum(p.minutes for p in predictions)))
        if fit:
            rows.append(_fitted_blend(paths, name, predictions, rows[-1], dataset, write))
    if stack:
        oof, probs, strengths = stacked([p.oof for p in predictions], [p.test for p in predictions], targets,
                                        dataset.train_with_folds().fold.to_numpy(), task)
        stack_name = "stack_" + "_".join(p.name for p in predictions)
        path = write(paths.submissions_dir / f"{stack_name}.csv", probs)
        rows.append(_report_row(stack_name, oof, probs, dataset, path, None,
                                sum(p.minutes for p in predictions)))
        rows[-1]["stack_strengths"] = strengths
    return {"rows": rows, "search": ranking, "train_clips": len(dataset.train), "task": task}


def _fitted_blend(paths: Paths, name, predictions, equal_row, dataset: Dataset, write) -> ReportRow:
    task, targets, key = dataset.task, dataset.train_targets, f"oof_{dataset.task.metric}"
    fitted = fit_weights([p.oof for p in predictions], targets, task)
    oof = task.combine([p.oof for p in predictions], fitted)
    probs = task.combine([p.test for p in predictions], fitted)
    path = write(paths.submissions_dir / f"{name}_fitted.csv", probs)
    row = _report_row(f"{name}_fitted", oof, probs, dataset, path, None, equal_row["train_minutes"])
    row["weights"] = {p.name: round(float(w), 4) for p, w in zip(predictions, fitted)}
    folds = dataset.train_with_folds().fold.to_numpy()
    spread = fold_spread(task.combine([p.oof for p in predictions]), targets, folds, task)
    gain = row[key] - equal_row[key]
    row["gain_over_equal"], row["fold_spread"] = gain, spread
    if gain < spread:
        log.warning("fitted weights %s beat equal weights by %.4f OOF %s, less than the fold-to-fold "
                    "spread (std %.4f): the difference may be noise; equal weights are the safer choice",
                    row["weights"], gain, task.metric_title, spread)
    return row


@dataclass
class ReportRow:
    """One line of the report: a model's, a blend's or a stacker's figures as the task scores them
    (`figures`: oof_<metric>, oof_rows, and test_<metric> with its leaderboards where test labels exist;
    src.dataset.task), and what only some lines have (`notes`: fitted weights, their gain and the
    fold-to-fold spread; the stacker's strengths). Read by key too: row["oof_map3"], row["weights"]."""

    name: str
    folds: int | None
    train_minutes: float
    submission: str
    figures: dict[str, float]
    notes: dict = field(default_factory=dict)

    def __getitem__(self, key: str):
        if key in ("name", "folds", "train_minutes", "submission"):
            return getattr(self, key)
        return self.figures[key] if key in self.figures else self.notes[key]

    def __setitem__(self, key: str, value) -> None:
        self.notes[key] = value

    def __contains__(self, key: str) -> bool:
        return key in ("name", "folds", "train_minutes", "submission") or key in self.figures or key in self.notes


def _report_row(name, oof, test_probs, dataset: Dataset, path, n_folds, minutes) -> ReportRow:
    """A model's or blend's line of the report: its OOF figures and, where test labels exist, its test
    figures (per leaderboard where known), as the task scores them."""
    figures = dataset.task.oof_figures(dataset.train_targets, oof)
    truth = dataset.test_targets()
    if truth is not None:
        figures |= dataset.task.test_figures(*truth, test_probs, dataset.test_usage)
    return ReportRow(name, n_folds, minutes, str(path) if path else "-", figures)


@cli.command
def main(argv=None) -> int:
    parser = cli.parser("python -m src.blend", __doc__)
    parser.add_argument("models", nargs="*", help="model presets (default: every folder in predictions/)")
    parser.add_argument("--weights", type=float, nargs="+", help="one weight per model (default: equal)")
    parser.add_argument("--name", help="blend submission name (default: blend_<models>)")
    parser.add_argument("--allow-partial", action="store_true", help="blend models with unfinished folds")
    parser.add_argument("--allow-mismatch", action="store_true", help="blend folds trained on other train.csv "
                        "rows or labels, or other folds, than the dataset has now (stopped otherwise)")
    parser.add_argument("--fit-weights", action="store_true", help="also blend with weights fitted on the "
                        "OOF predictions (log loss), written as <name>_fitted.csv")
    parser.add_argument("--search", action="store_true", help="blend the equal-weight subset of the models "
                        "with the best OOF MAP@3 (every subset is tried; the test set plays no part)")
    parser.add_argument("--combine", choices=COMBINES, default="geometric", help="how each model's folds and "
                        "the models are averaged: geometric (default) or arithmetic mean of the probabilities")
    parser.add_argument("--stack", action="store_true", help="also a second-level model (logistic regression on "
                        "the models' OOF probabilities, inner cross-validation; written as stack_<models>.csv)")
    parser.add_argument("--kaggle-form", type=Path, metavar="SAMPLE_SUBMISSION", help="also write each submission "
                        "in the rows of Kaggle's own sample_submission.csv (<name>.kaggle.csv; 2018: 9,400 rows), e.g. "
                        "after the Zenodo route, whose test split holds the 1,600 scored clips")
    args = parser.parse_args(argv)
    paths = cli.paths(args)
    models = args.models or trained_models(paths)
    if not models:
        raise DataError(f"no finished folds under {paths.predictions_dir}: train some first "
                        f"(./run_folds.sh MODEL -- --data-dir {paths.data_dir} --out-dir {paths.out_dir}).")
    if len(set(models)) < len(models):
        parser.error(f"a model named twice ({' '.join(models)}): weight it with --weights instead")
    if args.weights and (args.search or len(args.weights) != len(models)):
        parser.error("--search blends with equal weights" if args.search else
                     f"{len(args.weights)} weights for {len(models)} models ({' '.join(models)})")
    report = blend(paths, models, args.weights, args.name, args.allow_partial, args.fit_weights, args.search,
                   args.stack, args.allow_mismatch, args.combine, args.kaggle_form)
    first = report["rows"][0]
    columns = [(k, title) for k, title in report["task"].columns if k in first]
    if report["search"]:
        print(f"equal-weight subsets by {columns[0][1]} (best {min(10, len(report['search']))} "
              f"of {len(report['search'])}):")
        for score, subset in report["search"][:10]:
            print(f"  {score:.4f}  {' '.join(subset)}")
        print()
    print(f"{'model':<20}{'folds':>6}{'OOF rows':>10}" + "".join(f"{title:>12}" for _, title in columns)
          + f"{'minutes':>9}  submission")
    for row in report["rows"]:
        figures = "".join(f"{row[k]:>12.4f}" for k, _ in columns)
        print(f"{row['name']:<20}{row['folds'] or '':>6}{row['oof_rows']:>10}{figures}"
              f"{row['train_minutes']:>9.1f}  {row['submission']}")
        if "weights" in row:
            print(f"{'':<20}weights fitted on OOF: {row['weights']}; OOF {columns[0][1][4:]} gain over equal weights "
                  f"{row['gain_over_equal']:+.4f}, fold-to-fold spread (std) {row['fold_spread']:.4f}")
        if "stack_strengths" in row:
            print(f"{'':<20}stacked: logistic regression on the OOF log-probabilities, strength C chosen by "
                  f"inner cross-validation per outer fold: {row['stack_strengths']}")
    covered = min(row["oof_rows"] for row in report["rows"])
    scope = (f"OOF figures over all {report['train_clips']} train clips" if covered == report["train_clips"] else
             f"OOF figures over the train clips some fold predicted, of {report['train_clips']}: the others were "
             f"skipped by the audio cache, in unfinished folds, or unverified rows of a multi-label dataset, "
             f"which no fold validates on")
    print(f"({scope}" + (f"; test figures over the {first['test_rows']} test clips with labels)"
                         if "test_rows" in first else ")"))
    if "test_map3_private" in first:
        print("(the 2018 competition's final ranking was by the private leaderboard: 1st 0.9538, 2nd 0.9518)")
    if args.kaggle_form:
        written = [Path(r["submission"]).with_suffix(".kaggle.csv") for r in report["rows"] if r["submission"] != "-"]
        if written:
            print(f"in the rows of {args.kaggle_form}: {', '.join(map(str, written))}; submit one late with "
                  f"`kaggle competitions submit freesound-audio-tagging -f {written[-1]} -m MESSAGE`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
