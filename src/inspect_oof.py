"""Stage 6, inspect: where the out-of-fold predictions go wrong, as the dataset's task scores them.

    python -m src.inspect_oof 2d          # one model
    python -m src.inspect_oof 1d 2d       # their geometric-mean blend, as src.blend makes it (--combine)

Prints the OOF figures (MAP@3 and top-1 accuracy, or lwlrap and mAP for a multi-label dataset) overall,
per fold, for verified and unverified rows and per class; the label pairs most often confused (a true
label missed while another was guessed in its place: a clip's guess is its top-n labels, n its number
of true labels, so for one label per clip these are the off-diagonal cells of the confusion matrix); the
worst clips; saves predictions/<name>/oof_confusion.png and oof_per_class.png. Where the dataset ships
test labels (test_labels.csv), ends with the test figures of the same blend, and with a usage column
(FSDKaggle2018's release, test_post_competition.csv) the public and private leaderboards' figures.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .base import cli
from .base.files import atomic_path
from .base.metrics import COMBINES
from .dataset.folds import with_folds
from .dataset.tables import Dataset
from .dataset.task import Task
from .training.trained import load_model_predictions


def oof_table(train: pd.DataFrame, folds: pd.DataFrame, oof: np.ndarray, labels: list[str], targets: np.ndarray,
              task: Task) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(one row per predicted clip: fold, labels, verified, its own score, the mean probability of its
    labels, its top 3, the labels missed and the labels guessed in their place; its targets; its
    probabilities). A clip's guess is its top-n labels, n its number of true labels."""
    rows = ~np.isnan(oof).any(axis=1)
    table = with_folds(train[rows], folds).reset_index(drop=True)
    probs, y = oof[rows], targets[rows]
    table["score"] = task.row_scores(y, probs)
    table["p_true"] = (probs * y).sum(axis=1) / np.maximum(y.sum(axis=1), 1)
    order = np.argsort(-probs, axis=1, kind="stable")
    guesses = [set(o[:int(t.sum())]) for t, o in zip(y, order)]
    truths = [set(np.flatnonzero(t)) for t in y]
    table["missed"] = [sorted(labels[i] for i in t - g) for t, g in zip(truths, guesses)]
    table["invented"] = [sorted(labels[i] for i in g - t) for t, g in zip(truths, guesses)]
    table["top3"] = [" ".join(labels[i] for i in o[:3]) for o in order]
    return table, y, probs


def confused_pairs(table: pd.DataFrame, labels: list[str]) -> np.ndarray:
    """Counts of (label missed, label guessed in the same clip instead), over the table's clips."""
    pairs = np.zeros((len(labels), len(labels)), int)
    index = {label: i for i, label in enumerate(labels)}
    for lost, made in zip(table.missed, table.invented):
        for a in lost:
            for b in made:
                pairs[index[a], index[b]] += 1
    return pairs


def most_confused(matrix: np.ndarray, labels: list[str], n: int = 10) -> list[tuple[str, str, int]]:
    """The n largest off-diagonal counts as (missed, guessed instead, clips)."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:n]
    pairs = [np.unravel_index(i, off.shape) for i in order]
    return [(labels[t], labels[p], int(off[t, p])) for t, p in pairs if off[t, p] > 0]


def report(table: pd.DataFrame, y: np.ndarray, probs: np.ndarray, labels: list[str], task: Task, worst: int = 10,
           train_clips: int | None = None) -> tuple[str, dict[str, np.ndarray], np.ndarray]:
    """The printed summary, and (per-class figures, confused pairs) for the plots."""
    overall = task.oof_figures(y, probs)
    figures = ", ".join(f"{title} {overall[key]:.4f}" for key, title in task.columns if key.startswith("oof_"))
    lines = [figures + f" over {len(table)} clips"
             + (f" of {train_clips} (the rest: clips the audio cache skipped, in unfinished folds, or unverified "
                f"rows no fold validates on in a multi-label dataset)" if train_clips and train_clips != len(table)
                else "")]
    folds = table.fold.to_numpy()
    lines.append("per fold:      " + "  ".join(f"{k}: {task.score(y[folds == k], probs[folds == k]):.4f}"
                                              for k in sorted(set(folds))))
    for flag, name in ((1, "verified"), (0, "unverified")):
        part = (table.manually_verified == flag).to_numpy()
        if part.any():
            lines.append(f"{name + ':':<15}{task.score(y[part], probs[part]):.4f} over {int(part.sum())} clips")
    per_class = task.class_figures(y, probs)
    first = next(iter(per_class))
    missed = pd.Series([m for row in table.missed for m in row], dtype=object).value_counts()
    invented = pd.Series([m for row in table.invented for m in row], dtype=object).value_counts()
    lines.append(f"\nper class (worst {first} first):")
    for i in np.argsort(np.nan_to_num(per_class[first], nan=2.0), kind="stable"):
        values = "  ".join(f"{title} {column[i]:.4f}" for title, column in per_class.items())
        lines.append(f"  {labels[i]:<28}{values}  ({int(y[:, i].sum())} clips; missed {missed.get(labels[i], 0)}, "
                     f"guessed instead {invented.get(labels[i], 0)})")
    pairs = confused_pairs(table, labels)
    lines.append("\nmost often missed -> guessed instead in the same clip:")
    for a, b, count in most_confused(pairs, labels):
        lines.append(f"  {a} -> {b}: {count}")
    lines.append(f"\n{worst} worst clips (lowest {task.row_title}):")
    for _, row in table.sort_values(["score", "p_true"], kind="stable").head(worst).iterrows():
        flag = "verified" if row.manually_verified else "unverified"
        lines.append(f"  {row.fname}  {row.label} ({flag}, fold {row.fold}): {row.score:.3f}, p={row.p_true:.3f}, "
                     f"top-3 {row.top3}; missed {','.join(row.missed) or '-'}, guessed instead "
                     f"{','.join(row.invented) or '-'}")
    return "\n".join(lines), per_class, pairs


def test_report(scores: dict, task: Task) -> str:
    """The test figures of Task.test_figures, one line; the leaderboards' where known."""
    main = [(key, title) for key, title in task.columns
            if key.startswith("test_") and not key.endswith(("_public", "_private")) and key in scores]
    line = ", ".join(f"{title} {scores[key]:.4f}" for key, title in main)
    line += f" over {scores['test_rows']} labelled test clips"
    boards = [f"{board} leaderboard {scores[key]:.4f}" for board, key in
              (("public", f"test_{task.metric}_public"), ("private", f"test_{task.metric}_private")) if key in scores]
    if boards:
        line += "; as the competition scored it: " + ", ".join(boards)
    if "test_map3_private" in scores:
        line += " (the 2018 competition's final private ranking: 1st 0.9538, 2nd 0.9518)"
    return line


def save_plots(task: Task, y: np.ndarray, probs: np.ndarray, per_class: dict[str, np.ndarray], pairs: np.ndarray,
               labels: list[str], folder: Path, title: str) -> list[Path]:
    """oof_confusion.png (the task's confusion plot) and oof_per_class.png (the first per-class figure,
    worst first, with the overall figure as a line)."""
    matrix, caption, xlabel, ylabel, cmap, vmax = task.confusion(y, probs, pairs)
    axis, overall_name = task.class_plot
    ordered = pd.Series(np.nan_to_num(next(iter(per_class.values()))), index=labels).sort_values()
    return [_heatmap(matrix, labels, folder / "oof_confusion.png", f"{title}: {caption}", xlabel, ylabel, cmap, vmax),
            _bars(ordered, task.class_overall(y, probs), overall_name, folder / "oof_per_class.png", axis,
                  f"{title}: {axis} per class")]


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
    task, labels = dataset.task, dataset.labels
    predictions = [load_model_predictions(paths, m, dataset, args.allow_partial, args.allow_mismatch, args.combine)
                   for m in args.models]
    name = args.models[0] if len(args.models) == 1 else "blend_" + "_".join(args.models)
    oof = task.combine([p.oof for p in predictions], args.weights, args.combine)
    table, y, probs = oof_table(dataset.train, dataset.folds(), oof, labels, dataset.train_targets, task)
    text, per_class, pairs = report(table, y, probs, labels, task, args.worst, len(dataset.train))
    print(f"{name}:\n{text}")
    truth = dataset.test_targets()
    if truth is not None and len(dataset.test):
        test = task.combine([p.test for p in predictions], args.weights, args.combine)
        scores = task.test_figures(*truth, test, dataset.test_usage)
        if scores:
            print("\n" + test_report(scores, task))
    for path in save_plots(task, y, probs, per_class, pairs, labels, paths.model_dir(name), name):
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
