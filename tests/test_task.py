"""The task kind has one owner, src/dataset/task.py: no other module asks which kind it has."""
import io
import re
import tokenize
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.dataset.task import MULTI_LABEL, SINGLE_LABEL, task_named, task_of

SRC = Path(__file__).resolve().parent.parent / "src"
OWNER = SRC / "dataset" / "task.py"
# Names of the old bool that threaded the kind through the code, and comparisons of a task with a kind.
KIND_NAMES = re.compile(r"^(is_)?multi_?label$|^multi$")
KIND_TESTS = re.compile(r"\.\s*NAME\s*[!=]=|\bis\s+(not\s+)?(SINGLE|MULTI)_LABEL\b|[!=]=\s*(SINGLE|MULTI)_LABEL\b"
                        r"|isinstance\([^)]*(SingleLabel|MultiLabel)")


def code_tokens(path: Path):
    """The NAME tokens and the code lines (comments and strings left out) of a module."""
    names, lines = [], {}
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type == tokenize.NAME:
            names.append((tok.start[0], tok.string))
        if tok.type not in (tokenize.COMMENT, tokenize.STRING, tokenize.NL, tokenize.NEWLINE):
            lines.setdefault(tok.start[0], []).append(tok.string)
    return names, {n: " ".join(parts) for n, parts in lines.items()}


def test_no_module_but_the_task_branches_on_the_kind():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path == OWNER:
            continue
        names, lines = code_tokens(path)
        offenders += [f"{path.relative_to(SRC)}:{n}: {name}" for n, name in names if KIND_NAMES.match(name)]
        offenders += [f"{path.relative_to(SRC)}:{n}: {line}" for n, line in lines.items() if KIND_TESTS.search(line)]
    assert offenders == []


def test_the_checker_finds_what_it_looks_for(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("if dataset.multilabel:\n    pass\nok = task is MULTI_LABEL\nz = t.NAME == 'a'\n# multilabel\n")
    names, lines = code_tokens(sample)
    assert [name for _, name in names if KIND_NAMES.match(name)] == ["multilabel"]
    assert [n for n, line in lines.items() if KIND_TESTS.search(line)] == [3, 4]


def test_the_task_is_chosen_from_the_table_and_read_back_by_name():
    assert task_of(pd.DataFrame({"fname": ["a"], "label": ["x"]})) is SINGLE_LABEL
    assert task_of(pd.DataFrame({"fname": ["a"], "labels": ["x,y"]})) is MULTI_LABEL
    assert task_named("multi-label") is MULTI_LABEL and task_named(None) is SINGLE_LABEL
    with pytest.raises(Exception, match="none of single-label, multi-label"):
        task_named("regression", "result.json")


def test_each_task_scores_and_submits_its_own_way():
    labels = ["a", "b", "c"]
    probs = np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]])
    one_hot = np.array([[0, 0, 1], [1, 0, 0]], np.float32)
    assert SINGLE_LABEL.score(one_hot, probs) == pytest.approx((1 / 2 + 1) / 2)      # MAP@3: 2nd, then 1st
    assert MULTI_LABEL.score(np.array([[0, 1, 1], [1, 0, 0]]), probs) == pytest.approx(1.0)
    assert SINGLE_LABEL.submission(probs, ["x.wav", "y.wav"], labels).label.tolist() == ["b c a", "a b c"]
    multi = MULTI_LABEL.submission(probs, ["x.wav", "y.wav"], labels, ["c", "a", "b"])
    assert list(multi.columns) == ["fname", "c", "a", "b"] and multi.c.tolist() == [0.3, 0.1]
    combined = SINGLE_LABEL.combine([probs, probs[::-1]])
    np.testing.assert_allclose(combined.sum(axis=1), 1)                                 # renormalised
    assert not np.allclose(MULTI_LABEL.combine([probs, probs[::-1]]).sum(axis=1), 1)   # each label its own
