"""The task, chosen once from the tables: one label per clip (FSDKaggle2018, ESC-50) or several
(FSDKaggle2019, FSD50K: a `labels` column of comma-separated labels).

Everything that differs between the two kinds lives here, in the two classes below: the targets, how
folds are stratified, the output activation and loss, the metrics and their names, the figures a report
shows, how probabilities are combined, the submission's form and its validation, how the stacker and
fitted weights score, and what `src.predict` calls a clip's labels. The rest of the project asks its
`Task` and never which kind it has (tests/test_task.py looks for code that does). A run saves the task's
name in config.json and result.json (`Task.NAME`); `task_named` reads it back."""
from __future__ import annotations

import logging
from typing import ClassVar

import numpy as np
import pandas as pd

from ..base.errors import DataError
from ..base.layout import row_number
from ..base.metrics import (
    average_precisions,
    combine,
    lwlrap,
    lwlrap_per_class,
    map_at_k,
    mean_average_precision,
    per_row_precision,
    test_scores,
    top_k,
)

log = logging.getLogger(__name__)

MULTI = "labels"
"""The column of a multi-label table: a clip's labels, comma-separated."""

ALWAYS_TRAINING = -1
"""The fold of rows that every fold trains on and none validates on (a multi-label dataset's unverified
rows, FSD50K's train split)."""


class Task:
    """What depends on the kind of task; one instance per kind (SINGLE_LABEL, MULTI_LABEL)."""

    NAME: ClassVar[str]
    activation: ClassVar[str]
    """The output layer's activation: one softmax over the labels, or a sigmoid per label."""
    loss: ClassVar[str]
    """The per-clip loss, a function of keras.losses."""
    train_metric: ClassVar[str]
    """The accuracy Keras logs while training, a function of src.models.losses."""
    metric: ClassVar[str]
    """The key of the task's score in result.json and report rows (val_<metric>, oof_<metric>, ...)."""
    metric_title: ClassVar[str]
    normalize: ClassVar[bool]
    """Whether a combined row is renormalised to sum to 1 (one label per clip)."""
    columns: ClassVar[list[tuple[str, str]]]
    """The figures src.blend prints, by key of a report row, with their titles."""
    cleanable: ClassVar[bool]
    """Whether label cleaning (a judge of one label per clip) applies."""

    def __repr__(self) -> str:
        return f"Task({self.NAME})"

    # --- tables -----------------------------------------------------------------------------------
    label_columns: ClassVar[tuple[str, ...]]
    """Columns a labelled table keeps besides fname and label."""

    def read_labels(self, path, table: pd.DataFrame) -> None:
        """Check a table's label column(s) and give it `label`: one label, or the labels as a set (sorted,
        joined by commas), so code that shows or hashes a clip's labels reads one column either way."""
        raise NotImplementedError

    def label_lists(self, table: pd.DataFrame) -> list[list[str]]:
        """Each row's labels."""
        raise NotImplementedError

    def targets(self, labels: list[str], rows: pd.DataFrame) -> np.ndarray:
        """The rows' targets, one float32 column per label of `labels`."""
        out = np.zeros((len(rows), len(labels)), np.float32)
        index = {label: i for i, label in enumerate(labels)}
        for row, names in zip(out, self.label_lists(rows)):
            row[[index[n] for n in names]] = 1
        return out

    def folds(self, train: pd.DataFrame, n_folds: int, seed: int) -> np.ndarray:
        """A fold number per train row, stratified on the labels and seeded."""
        raise NotImplementedError

    # --- scores -----------------------------------------------------------------------------------
    def score(self, targets: np.ndarray, probs: np.ndarray) -> float:
        """The task's score (MAP@3 or lwlrap) of probabilities against targets."""
        raise NotImplementedError

    def validation_logs(self, targets: np.ndarray, probs: np.ndarray) -> dict[str, float]:
        """What each epoch's validation adds to Keras's logs (val_loss first: early stopping reads it)."""
        raise NotImplementedError

    def oof_figures(self, targets: np.ndarray, oof: np.ndarray) -> dict:
        """A report row's OOF figures over the rows some fold predicted."""
        raise NotImplementedError

    def test_figures(self, targets: np.ndarray, known: np.ndarray, probs: np.ndarray,
                     usage: np.ndarray | None) -> dict:
        """A report row's test figures over the labelled test clips, per leaderboard where known."""
        raise NotImplementedError

    row_title: ClassVar[str]
    """What row_scores measures, for reports."""

    def row_scores(self, targets: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """Each clip's own score: the precision of its label in the top 3, or its label-ranking precision."""
        raise NotImplementedError

    def class_figures(self, targets: np.ndarray, probs: np.ndarray) -> dict[str, np.ndarray]:
        """Per-class figures by title, the first the one a report sorts and plots by (NaN: no clip)."""
        raise NotImplementedError

    def class_overall(self, targets: np.ndarray, probs: np.ndarray) -> float:
        """The overall figure of the first per-class figure (MAP@3 over the clips; mAP over the classes)."""
        raise NotImplementedError

    class_plot: ClassVar[tuple[str, str]]
    """The per-class plot's axis (its title too) and the name of its overall line."""

    def confusion(self, targets: np.ndarray, probs: np.ndarray, pairs: np.ndarray) -> tuple:
        """The confusion plot: (matrix, caption, x label, y label, colour map, colour maximum). `pairs`
        counts, per clip, each label missed against each label guessed in its place."""
        raise NotImplementedError

    def combine(self, probs: list[np.ndarray], weights=None, how: str = "geometric") -> np.ndarray:
        return combine(probs, weights, how, normalize=self.normalize)

    def weight_loss(self, targets: np.ndarray, log_mixed: np.ndarray) -> float:
        """The log loss fitted blend weights minimise, from the weighted mean of log-probabilities."""
        raise NotImplementedError

    def stacker(self):
        """(estimator, inner cross-validation, scoring, name of its strength parameter) of the second-level
        model that src.training.ensembles.stacked fits on the models' OOF log-probabilities."""
        raise NotImplementedError

    def stack_targets(self, targets: np.ndarray) -> np.ndarray:
        """The targets as the stacker takes them."""
        return targets

    def stack_probabilities(self, model, x: np.ndarray, n_classes: int) -> np.ndarray:
        """The fitted stacker's probabilities, one column per label."""
        return model.predict_proba(x)

    # --- submissions ------------------------------------------------------------------------------
    def submission(self, probs: np.ndarray, fnames: list[str], labels: list[str],
                   columns: list[str] | None = None) -> pd.DataFrame:
        """The competition's submission of these probabilities, validated (ValueError otherwise)."""
        raise NotImplementedError

    # --- new audio --------------------------------------------------------------------------------
    default_top_k: ClassVar[int | None]
    """src.predict: how many labels a file is tagged with at most (None: every label over the threshold)."""
    default_threshold: ClassVar[float | None]
    """src.predict: a label is named when its probability reaches this (None: the top k by rank)."""
    output_note: ClassVar[str]
    """What the probabilities of an exported model are."""

    def tag_table(self, records: list[dict], labels: list[str], top_k: int | None) -> pd.DataFrame:
        """src.predict's CSV of tagged files (records with "file", "tags" and "probabilities")."""
        raise NotImplementedError


class SingleLabel(Task):
    NAME = "single-label"
    activation = "softmax"
    loss = "categorical_crossentropy"
    train_metric = "label_accuracy"
    metric = "map3"
    metric_title = "MAP@3"
    normalize = True
    cleanable = True
    columns = [("oof_map3", "OOF MAP@3"), ("oof_accuracy", "OOF acc"), ("test_map3", "test MAP@3"),
               ("test_map3_public", "public LB"), ("test_map3_private", "private LB")]
    default_threshold = None
    default_top_k = 3
    output_note = "class probabilities summing to 1"

    label_columns = ()

    def read_labels(self, path, table):
        if "label" not in table.columns:
            raise DataError(f"{path}: missing column 'label' (one label per clip) or 'labels' (comma-separated, for "
                            f"multi-label tagging); found {list(table.columns)}.")

    def label_lists(self, table):
        return [[x] for x in table["label"]]

    def folds(self, train, n_folds, seed):
        from sklearn.model_selection import StratifiedKFold

        smallest = train.label.value_counts().min()
        if smallest < n_folds:
            log.warning(
                "the smallest class has %d clips, fewer than %d folds: some folds lack it", smallest, n_folds)
        fold = np.zeros(len(train), dtype=int)
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        for k, (_, val) in enumerate(splitter.split(train.fname, train.label)):
            fold[val] = k
        return fold

    def score(self, targets, probs):
        return map_at_k(np.asarray(targets).argmax(axis=1), probs)

    def validation_logs(self, targets, probs):
        probs = np.clip(probs / probs.sum(axis=1, keepdims=True), 1e-7, 1 - 1e-7)
        return {"val_loss": float(-(targets * np.log(probs)).sum(axis=1).mean()),
                "val_accuracy": float((probs.argmax(1) == targets.argmax(1)).mean())}

    def oof_figures(self, targets, oof):
        rows = ~np.isnan(oof).any(axis=1)
        y = np.asarray(targets).argmax(axis=1)
        accuracy = float(np.mean(oof[rows].argmax(axis=1) == y[rows])) if rows.any() else float("nan")
        return {"oof_map3": map_at_k(y[rows], oof[rows]), "oof_accuracy": accuracy, "oof_rows": int(rows.sum())}

    def test_figures(self, targets, known, probs, usage):
        y = np.where(known, np.asarray(targets).argmax(axis=1), -1)
        return test_scores(y, probs, usage)

    row_title = "precision of the true label in the top 3"

    def row_scores(self, targets, probs):
        return per_row_precision(np.asarray(targets).argmax(axis=1), probs)

    def class_figures(self, targets, probs):
        y, rows = np.asarray(targets).argmax(axis=1), self.row_scores(targets, probs)
        hits = probs.argmax(axis=1) == y
        mean = lambda values: np.array([values[y == c].mean() if (y == c).any() else np.nan
                                        for c in range(targets.shape[1])])
        return {"MAP@3": mean(rows), "top-1": mean(hits)}

    def class_overall(self, targets, probs):
        return self.score(targets, probs)

    class_plot = ("OOF MAP@3", "overall")

    def confusion(self, targets, probs, pairs):
        # True label against the top-1 guess, the diagonal included; each row a share of its label's clips.
        matrix = np.zeros((targets.shape[1], targets.shape[1]), dtype=int)
        np.add.at(matrix, (np.asarray(targets).argmax(axis=1), probs.argmax(axis=1)), 1)
        shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        return shares, "OOF confusion (share of each true label)", "top-1 prediction", "true label", "Blues", 1

    def weight_loss(self, targets, log_mixed):
        y = np.asarray(targets).argmax(axis=1)
        top = log_mixed.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(log_mixed - top).sum(axis=1)) + top[:, 0]
        return float(np.mean(log_norm - log_mixed[np.arange(len(y)), y]))

    def stacker(self):
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold

        return (LogisticRegression(max_iter=2000), StratifiedKFold(3, shuffle=True, random_state=0), "neg_log_loss",
                "logisticregression__C")

    def stack_targets(self, targets):
        return np.asarray(targets).argmax(axis=1)

    def stack_probabilities(self, model, x, n_classes):
        out = np.full((len(x), n_classes), 1e-9)   # labels the stacker never saw: last, not absent
        out[:, model.best_estimator_.classes_] = model.predict_proba(x)
        return out / out.sum(axis=1, keepdims=True)

    def tag_table(self, records, labels, top_k):
        rows = [{"file": r["file"], **{f"label{i + 1}": t["label"] for i, t in enumerate(r["tags"])},
                 **{f"p{i + 1}": t["probability"] for i, t in enumerate(r["tags"])}} for r in records]
        columns = ["file"] + [f"label{i + 1}" for i in range(top_k)] + [f"p{i + 1}" for i in range(top_k)]
        return pd.DataFrame(rows, columns=columns)   # the header even with no rows

    def submission(self, probs, fnames, labels, columns=None):
        names = np.asarray(labels)
        frame = pd.DataFrame({"fname": list(fnames), "label": [" ".join(r) for r in names[top_k(probs, 3)]]})
        validate_top3(frame, list(fnames), labels)
        return frame


class MultiLabel(Task):
    NAME = "multi-label"
    activation = "sigmoid"
    loss = "binary_crossentropy"
    train_metric = "top_label_accuracy"
    metric = "lwlrap"
    metric_title = "lwlrap"
    normalize = False
    cleanable = False
    columns = [("oof_lwlrap", "OOF lwlrap"), ("oof_map", "OOF mAP"), ("test_lwlrap", "test lwlrap"),
               ("test_map", "test mAP"), ("test_lwlrap_public", "public LB"), ("test_lwlrap_private", "private LB")]
    default_threshold = 0.5
    default_top_k = None
    output_note = "a probability per label (multi-label)"

    label_columns = (MULTI,)

    def read_labels(self, path, table):
        for i, text in table[MULTI].items():
            parts = [] if pd.isna(text) else str(text).split(",")
            padded = [p for p in parts if p != p.strip()]
            why = None
            if not parts or "" in parts:
                why = "no labels"
            elif padded:
                why = f"label {padded[0]!r} has spaces at its start or end"
            elif len(set(parts)) < len(parts):
                why = "a label listed twice"
            if why:
                raise DataError(f"{path}, row {row_number(i)} ({table.fname[i]}): {why} in labels {text!r}; list "
                                f"each label once, separated by commas without spaces.")
        # "Hi-hat,Cello" and "Cello,Hi-hat" are one set: the same fingerprint, the same fold.
        table["label"] = table[MULTI].map(lambda text: ",".join(sorted(text.split(","))))

    def label_lists(self, table):
        return [text.split(",") for text in table[MULTI]]

    def folds(self, train, n_folds, seed):
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        # Iterative stratification (Sechidis et al., 2011) of the verified rows on their label sets;
        # unverified rows (FSDKaggle2019's noisy subset) train every fold and are never validated on.
        verified = train.manually_verified.to_numpy() == 1
        if verified.sum() < n_folds:
            raise DataError(f"{verified.sum()} verified clips cannot fill {n_folds} folds: unverified clips are "
                            f"never validated on in a multi-label dataset. Lower --n-folds or mark more rows "
                            f"verified.")
        names = sorted({label for labels in self.label_lists(train) for label in labels})
        hot = self.targets(names, train[verified]).astype(np.int8)
        splitter = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        fold = np.full(len(train), ALWAYS_TRAINING)
        positions = np.flatnonzero(verified)
        for k, (_, val) in enumerate(splitter.split(np.zeros(len(hot)), hot)):
            fold[positions[val]] = k
        return fold

    def score(self, targets, probs):
        return lwlrap(targets, probs)

    def validation_logs(self, targets, probs):
        p = np.clip(probs, 1e-7, 1 - 1e-7)
        return {"val_loss": float(-(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean(axis=1).mean()),
                "val_lwlrap": lwlrap(targets, probs), "val_map": mean_average_precision(targets, probs)}

    def oof_figures(self, targets, oof):
        rows = ~np.isnan(oof).any(axis=1)
        y = targets[rows]
        return {"oof_lwlrap": lwlrap(y, oof[rows]), "oof_map": mean_average_precision(y, oof[rows]),
                "oof_rows": int(rows.sum())}

    def test_figures(self, targets, known, probs, usage):
        if not known.any():
            return {}
        scores = test_scores(targets, probs, usage, lwlrap, known, "lwlrap")
        scores["test_map"] = mean_average_precision(targets[known], probs[known])
        return scores

    row_title = "label-ranking precision"

    def row_scores(self, targets, probs):
        return np.array([lwlrap(t[None], p[None]) for t, p in zip(targets, probs)])

    def class_figures(self, targets, probs):
        return {"AP": average_precisions(targets, probs), "lwlrap": lwlrap_per_class(targets, probs)[0]}

    def class_overall(self, targets, probs):
        return mean_average_precision(targets, probs)

    class_plot = ("OOF average precision", "mAP")

    def confusion(self, targets, probs, pairs):
        return (pairs, "OOF labels missed while another was invented (clips)", "invented label", "missed label",
                "Reds", None)

    def weight_loss(self, targets, log_mixed):
        p = np.clip(np.exp(log_mixed), 1e-7, 1 - 1e-7)
        return float(-np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p)))

    def stacker(self):
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import make_scorer
        from sklearn.model_selection import KFold
        from sklearn.multiclass import OneVsRestClassifier

        return (OneVsRestClassifier(LogisticRegression(max_iter=2000)), KFold(3, shuffle=True, random_state=0),
                make_scorer(lwlrap, response_method="predict_proba"), "onevsrestclassifier__estimator__C")

    def tag_table(self, records, labels, top_k):
        # The labels at or above the threshold, comma-separated, then every label's probability.
        rows = [{"file": r["file"], "tags": ",".join(t["label"] for t in r["tags"]), **r["probabilities"]}
                for r in records]
        return pd.DataFrame(rows, columns=["file", "tags", *labels])

    def submission(self, probs, fnames, labels, columns=None):
        columns = columns or labels
        frame = pd.DataFrame(probs, columns=labels)[columns]
        frame.insert(0, "fname", list(fnames))
        validate_probabilities(frame, list(fnames), columns)
        return frame


SINGLE_LABEL, MULTI_LABEL = SingleLabel(), MultiLabel()
TASKS = {task.NAME: task for task in (SINGLE_LABEL, MULTI_LABEL)}


def task_of(table: pd.DataFrame) -> Task:
    """The task a train table asks for: multi-label when it has a `labels` column."""
    return MULTI_LABEL if MULTI in table.columns else SINGLE_LABEL


def task_named(name: str | None, where: str = "") -> Task:
    """The task saved under `name` in a run's config.json or result.json; single-label for runs saved
    before the task was recorded (they were all single-label or said so by their output activation)."""
    if name is None:
        return SINGLE_LABEL
    if name not in TASKS:
        raise DataError(f"{where}: task {name!r} is none of {', '.join(TASKS)}; the file was edited or made by a "
                        f"newer version of this project.")
    return TASKS[name]


def validate_top3(submission: pd.DataFrame, test_fnames: list[str], labels: list[str]) -> None:
    """ValueError unless the submission has the test fnames in order and three distinct known labels per
    row (the 2018 form)."""
    if list(submission.columns) != ["fname", "label"]:
        raise ValueError(f"submission columns must be fname,label; got {list(submission.columns)}")
    if len(submission) != len(test_fnames):
        raise ValueError(f"submission has {len(submission)} rows; sample_submission.csv has {len(test_fnames)}")
    mismatch = np.flatnonzero(submission.fname.to_numpy() != np.asarray(test_fnames))
    if len(mismatch):
        i = mismatch[0]
        raise ValueError(f"submission row {i}: fname {submission.fname[i]!r}, expected {test_fnames[i]!r}")
    known = set(labels)
    for i, text in enumerate(submission.label):
        guesses = str(text).split(" ")
        if len(guesses) != 3 or len(set(guesses)) != 3 or not set(guesses) <= known:
            raise ValueError(f"submission row {i} ({submission.fname[i]}): {text!r} is not three distinct "
                             f"training labels separated by single spaces")


def validate_probabilities(submission: pd.DataFrame, test_fnames: list[str], columns: list[str]) -> None:
    """ValueError unless the multi-label submission (the 2019 form: fname, then one probability column
    per label) has the test fnames in order, the label columns in order and probabilities in [0, 1]."""
    if list(submission.columns) != ["fname", *columns]:
        raise ValueError(f"submission columns must be fname and the {len(columns)} labels in order; got "
                         f"{list(submission.columns)[:5]}...")
    if list(submission.fname) != list(test_fnames):
        raise ValueError("submission fnames are not sample_submission.csv's, in its order")
    values = submission[columns].to_numpy(dtype=float)
    bad = ~np.isfinite(values) | (values < 0) | (values > 1)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"submission row {i} ({submission.fname[i]}), {columns[j]}: {values[i, j]} is not a "
                         f"probability")

