"""Stage 6, inspect: where the out-of-fold predictions go wrong. MAP@3 by fold, class, verified or not.

    python -m src.inspect_oof 2d          # one model
    python -m src.inspect_oof 1d 2d       # their geometric-mean blend, as src.blend makes it (--combine)

Prints MAP@3 overall, per fold, per class, for verified and unverified rows, the most confused label
pairs and the worst clips; saves predictions/<name>/oof_confusion.png and oof_per_class.png. For a
multi-label dataset: lwlrap and mAP overall, per fold and per class, the labels most often missed and
invented, the label pairs behind them (a true label missed while another was invented), the worst
clips, and the same two plots (average precision per class, missed against invented labels). Where the
dataset ships test labels (test_labels.csv), ends with the test MAP@3 of the same blend, and with a
usage column (FSDKaggle2018's release) the 2018 public and private leaderboards' figures.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .base import cli
from .base.files import atomic_path
from .base.metrics import (
    COMBINES,
    average_precisions,
    combine,
    lwlrap,
    lwlrap_per_class,
    mean_average_precision,
    per_row_precision,
    test_scores,
    top_k,
)
from .blend import load_model_predictions
from .dataset.folds import with_folds
from .dataset.tables import Dataset


def oof_table(train: pd.DataFrame, folds: pd.DataFrame, oof: np.ndarray, labels: list[str]) -> pd.DataFrame:
    """One row per predicted train clip: fold, label, verified, precision@3, p(true label), top-3."""
    rows = ~np.isnan(oof).any(axis=1)
    table = with_folds(train[rows], folds).reset_index(drop=True)
    probs = oof[rows]
    y = table.label.map(labels.index).to_numpy()
    table["precision"] = per_row_precision(y, probs)
    table["p_true"] = probs[np.arange(len(y)), y]
    table["predicted"] = [labels[i] for i in probs.argmax(axis=1)]
    table["top3"] = [" ".join(labels[i] for i in r) for r in top_k(probs, 3)]
    return table


def confusion(table: pd.DataFrame, labels: list[str]) -> np.ndarray:
    """Counts of true label (rows) against the top-1 prediction (columns)."""
    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    index = {label: i for i, label in enumerate(labels)}
    for true, guess in zip(table.label, table.predicted):
        matrix[index[true], index[guess]] += 1
    return matrix


def most_confused(matrix: np.ndarray, labels: list[str], n: int = 10) -> list[tuple[str, str, int]]:
    """The n largest off-diagonal counts as (true, predicted, clips)."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:n]
    pairs = [np.unravel_index(i, off.shape) for i in order]
    return [(labels[t], labels[p], int(off[t, p])) for t, p in pairs if off[t, p] > 0]


def save_plots(table: pd.DataFrame, matrix: np.ndarray, labels: list[str], folder: Path, title: str) -> list[Path]:
    # Row-normalised, so rare and common classes read on one scale.
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    per_class = table.groupby("label").precision.mean().reindex(labels).sort_values()
    return [_heatmap(shares, labels, folder / "oof_confusion.png", f"{title}: OOF confusion (share of each true label)",
                     "top-1 prediction", "true label", "Blues", 1),
            _bars(per_class, table.precision.mean(), "overall", folder / "oof_per_class.png", "OOF MAP@3",
                  f"{title}: OOF MAP@3 per class")]


def _heatmap(matrix: np.ndarray, labels: list[str], path: Path, title: str, xlabel: str, ylabel: str, cmap: str,
             vmax: float | None = None) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(6, 0.28 * len(labels))
    fig, ax = plt.subplots(figsize=(size + 2, size))
    image = ax.imshow(matrix, cmap=cmap, vmin=0, vmax=vmax)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def _bars(values: pd.Series, overall: float, overall_name: str, path: Path, xlabel: str, title: str) -> Path:
    """One bar per class (values indexed by label, in the order to draw), the overall figure as a line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, max(4, 0.22 * len(values))))
    ax.barh(values.index, values.to_numpy(), color="tab:blue")
    ax.axvline(overall, color="tab:red", linestyle="--", label=overall_name)
    ax.set_xlim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def report(table: pd.DataFrame, labels: list[str], worst: int = 10, train_clips: int | None = None) -> str:
    """The printed summary."""
    accuracy = (table.label == table.predicted).mean()
    lines = [f"OOF MAP@3 {table.precision.mean():.4f} (top-1 accuracy {accuracy:.4f}) over {len(table)} clips"
             + (f" of {train_clips} (the rest: skipped by the audio cache or in unfinished folds)"
                if train_clips and train_clips != len(table) else "")]
    by_fold = table.groupby("fold").precision.agg(["mean", "size"])
    lines.append("per fold:      " + "  ".join(f"{k}: {r['mean']:.4f}" for k, r in by_fold.iterrows()))
    for flag, name in ((1, "verified"), (0, "unverified")):
        part = table[table.manually_verified == flag]
        if len(part):
            lines.append(f"{name + ':':<15}{part.precision.mean():.4f} over {len(part)} clips")
    lines.append("\nper class (worst first):")
    per_class = table.assign(hit=table.label == table.predicted).groupby("label").agg(
        map3=("precision", "mean"), top1=("hit", "mean"), clips=("precision", "size"))
    for label, row in per_class.sort_values("map3").iterrows():
        lines.append(f"  {label:<28}{row.map3:.4f}  top-1 {row.top1:.2f}  ({int(row.clips)} clips)")
    lines.append("\nmost confused (true -> top-1 prediction):")
    for true, guess, count in most_confused(confusion(table, labels), labels):
        lines.append(f"  {true} -> {guess}: {count}")
    lines.append(f"\n{worst} worst clips (lowest probability of the true label):")
    for _, row in table.nsmallest(worst, "p_true").iterrows():
        flag = "verified" if row.manually_verified else "unverified"
        lines.append(f"  {row.fname}  {row.label} ({flag}, fold {row.fold}): p={row.p_true:.3f}, "
                     f"top-3 {row.top3}")
    return "\n".join(lines)


def test_report(scores: dict) -> str:
    """The test figures of src.base.metrics.test_scores, one line; the leaderboards' where known."""
    line = f"test MAP@3 {scores['test_map3']:.4f} over {scores['test_rows']} labelled test clips"
    if "test_map3_private" in scores or "test_map3_public" in scores:
        boards = [f"{board} leaderboard {scores[key]:.4f}" for board, key in
                  (("public", "test_map3_public"), ("private", "test_map3_private")) if key in scores]
        line += "; as the 2018 competition scored it: " + ", ".join(boards) + \
            " (its final private ranking: 1st 0.9538, 2nd 0.9518)"
    return line


def multilabel_table(train: pd.DataFrame, folds: pd.DataFrame, oof: np.ndarray, labels: list[str],
                     y: np.ndarray) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(one row per predicted clip: fold, labels, its label-ranking precision, missed and invented labels;
    its targets; its probabilities). A clip's top-n labels, n its number of true labels, are its guess:
    true labels outside them are missed, the others in them invented."""
    rows = ~np.isnan(oof).any(axis=1)
    table = with_folds(train[rows], folds).reset_index(drop=True)
    probs, y = oof[rows], y[rows]
    table["lrap"] = [lwlrap(t[None], p[None]) for t, p in zip(y, probs)]
    guesses = [set(np.argsort(-p, kind="stable")[:int(t.sum())]) for t, p in zip(y, probs)]
    truths = [set(np.flatnonzero(t)) for t in y]
    table["missed"] = [sorted(labels[i] for i in t - g) for t, g in zip(truths, guesses)]
    table["invented"] = [sorted(labels[i] for i in g - t) for t, g in zip(truths, guesses)]
    table["top"] = [" ".join(labels[i] for i in np.argsort(-p, kind="stable")[:3]) for p in probs]
    return table, y, probs


def multilabel_report(table: pd.DataFrame, y: np.ndarray, probs: np.ndarray, labels: list[str],
                      worst: int = 10, train_clips: int | None = None) -> tuple[str, np.ndarray, np.ndarray]:
    """The printed summary of multi-label OOF predictions, and (per-class AP, missed x invented counts)
    for the plots."""
    lines = [f"OOF lwlrap {lwlrap(y, probs):.4f}, mAP {mean_average_precision(y, probs):.4f} over {len(table)} clips"
             + (f" of {train_clips} (the rest: unverified rows no fold validates on, clips the audio cache "
                f"skipped, or unfinished folds)" if train_clips and train_clips != len(table) else "")]
    folds = table.fold.to_numpy()
    lines.append("per fold:      " + "  ".join(f"{k}: {lwlrap(y[folds == k], probs[folds == k]):.4f}"
                                              for k in sorted(set(folds))))
    per_class, _ = lwlrap_per_class(y, probs)
    ap = average_precisions(y, probs)
    missed = pd.Series([m for row in table.missed for m in row], dtype=object).value_counts()
    invented = pd.Series([m for row in table.invented for m in row], dtype=object).value_counts()
    lines.append("\nper class (worst AP first):")
    for i in np.argsort(np.nan_to_num(ap, nan=2.0), kind="stable"):
        lines.append(f"  {labels[i]:<28}AP {ap[i]:.4f}  lwlrap {per_class[i]:.4f}  ({int(y[:, i].sum())} clips; "
                     f"missed {missed.get(labels[i], 0)}, invented {invented.get(labels[i], 0)})")
    pairs = np.zeros((len(labels), len(labels)), int)   # a true label missed while another was invented
    index = {label: i for i, label in enumerate(labels)}
    for lost, made in zip(table.missed, table.invented):
        for a in lost:
            for b in made:
                pairs[index[a], index[b]] += 1
    lines.append("\nmost often missed -> invented in the same clip:")
    for a, b, count in most_confused(pairs, labels):
        lines.append(f"  {a} -> {b}: {count}")
    lines.append(f"\n{worst} worst clips (lowest label-ranking precision):")
    for _, row in table.nsmallest(worst, "lrap").iterrows():
        lines.append(f"  {row.fname}  {row.label} (fold {row.fold}): {row.lrap:.3f}, top-3 {row.top}; "
                     f"missed {','.join(row.missed) or '-'}, invented {','.join(row.invented) or '-'}")
    return "\n".join(lines), ap, pairs


def save_multilabel_plots(ap: np.ndarray, pairs: np.ndarray, labels: list[str], folder: Path, title: str) -> list[Path]:
    per_class = pd.Series(np.nan_to_num(ap), index=labels).sort_values()
    return [_heatmap(pairs, labels, folder / "oof_confusion.png",
                     f"{title}: OOF labels missed while another was invented (clips)", "invented label", "missed label",
                     "Reds"),
            _bars(per_class, float(np.nanmean(ap)), "mAP", folder / "oof_per_class.png", "OOF average precision",
                  f"{title}: OOF average precision per class")]


@cli.command
def main(argv=None) -> int:
    parser = cli.parser("python -m src.inspect_oof", __doc__)
    parser.add_argument("models", nargs="+", help="model presets; several are blended by geometric mean")
    parser.add_argument("--weights", type=float, nargs="+", help="blend weights (default: equal)")
    parser.add_argument("--combine", choices=COMBINES, default="geometric",
                        help="how folds and models are averaged, as in src.blend (default: geometric)")
    parser.add_argument("--worst", type=int, default=10, help="worst clips to list (default: 10)")
    parser.add_argument("--allow-partial", action="store_true", help="inspect models with unfinished folds")
    parser.add_argument("--allow-mismatch", action="store_true", help="inspect folds trained on other train.csv "
                        "rows or labels, or other folds, than the dataset has now (stopped otherwise)")
    args = parser.parse_args(argv)
    paths = cli.paths(args)
    dataset = Dataset.load(paths.data_dir)
    labels = dataset.labels
    predictions = [load_model_predictions(paths, m, dataset, args.allow_partial, args.allow_mismatch, args.combine)
                   for m in args.models]
    name = args.models[0] if len(args.models) == 1 else "blend_" + "_".join(args.models)
    if dataset.multilabel:
        return _inspect_multilabel(dataset, predictions, args.weights, args.combine, name, args.worst, paths)
    oof = combine([p.oof for p in predictions], args.weights, args.combine)
    table = oof_table(dataset.train, dataset.folds(), oof, labels)
    print(f"{name}:")
    print(report(table, labels, args.worst, len(dataset.train)))
    if dataset.y_test is not None and len(dataset.test):
        test = combine([p.test for p in predictions], args.weights, args.combine)
        print("\n" + test_report(test_scores(dataset.y_test, test, dataset.test_usage)))
    for path in save_plots(table, confusion(table, labels), labels, paths.model_dir(name), name):
        print(f"saved {path}")
    return 0


def _inspect_multilabel(dataset: Dataset, predictions, weights, how: str, name: str, worst: int, paths) -> int:
    oof = combine([p.oof for p in predictions], weights, how, normalize=False)
    table, y, probs = multilabel_table(dataset.train, dataset.folds(), oof, dataset.labels, dataset.train_targets)
    text, ap, pairs = multilabel_report(table, y, probs, dataset.labels, worst, len(dataset.train))
    print(f"{name}:\n{text}")
    truth = dataset.test_targets()
    if truth is not None and truth[1].any():
        test = combine([p.test for p in predictions], weights, how, normalize=False)
        (y_test, known) = truth
        print(f"\ntest lwlrap {lwlrap(y_test[known], test[known]):.4f}, mAP "
              f"{mean_average_precision(y_test[known], test[known]):.4f} over {int(known.sum())} labelled test clips")
    for path in save_multilabel_plots(ap, pairs, dataset.labels, paths.model_dir(name), name):
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
