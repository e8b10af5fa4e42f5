"""Metrics against scikit-learn (a test-only dependency) on random predictions; open labels; the confusion PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emo_stream.labels import get_label_set
from emo_stream.train import metrics as M

sk = pytest.importorskip("sklearn.metrics", reason="scikit-learn checks the metrics: pip install scikit-learn")


def _cases():
    rng = np.random.default_rng(0)
    for trial in range(60):
        c = int(rng.integers(2, 10))
        n = int(rng.integers(1, 60))
        t = rng.integers(0, c, n)
        if trial % 3 == 0:  # skewed predictions: classes never predicted, predicted but absent in targets
            p = rng.choice([0, c - 1], n)
        elif trial % 3 == 1:
            p = np.where(rng.random(n) < 0.6, t, rng.integers(0, c, n))
        else:
            p = rng.integers(0, c, n)
        yield c, t, p


def test_against_sklearn_on_random_predictions() -> None:
    import warnings

    for c, t, p in _cases():
        cm = M.confusion_matrix(t, p, c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zero-division and "y_pred contains classes not in y_true"
            assert np.array_equal(cm, sk.confusion_matrix(t, p, labels=list(range(c))))
            assert M.weighted_f1(cm) == pytest.approx(sk.f1_score(t, p, average="weighted"), abs=1e-12)
            assert M.macro_f1(cm) == pytest.approx(sk.f1_score(t, p, average="macro"), abs=1e-12)
            assert M.uar(cm) == pytest.approx(sk.balanced_accuracy_score(t, p), abs=1e-12)  # UAR
            assert M.accuracy(cm) == pytest.approx(sk.accuracy_score(t, p), abs=1e-12)  # WAR
            assert M.accuracy(cm) == pytest.approx(sk.recall_score(t, p, average="weighted"), abs=1e-12)  # WAR = weighted recall
            pc = M.per_class(cm)
            used = (pc["support"] + pc["predicted"]) > 0
            labels = np.flatnonzero(used)
            assert np.allclose(pc["f1"][labels], sk.f1_score(t, p, average=None, labels=labels))
            assert np.allclose(pc["precision"][labels], sk.precision_score(t, p, average=None, labels=labels))


def test_report_and_chance() -> None:
    ls = get_label_set("mer2023")
    rep = M.classification_report([0, 1, 2, 2], [0, 2, 2, 2], ls)
    assert rep["accuracy"] == rep["war"] == 0.75 and rep["n"] == 4
    assert rep["chance_accuracy"] == 0.5 and rep["confusion"][1][2] == 1
    assert rep["per_class"]["neutral"]["f1"] == 1.0 and rep["labels"] == list(ls.labels)
    with pytest.raises(ValueError):
        M.confusion_matrix([0, 7], [0, 1], 3)


def test_answer_to_label_follows_emotion_llama() -> None:
    ls = get_label_set("mer2023")
    assert M.answer_to_label("The emotion is Happy.", ls) == (ls.index("happy"), True)
    assert M.answer_to_label("joy", ls) == (ls.index("happy"), True)
    assert M.answer_to_label("no idea what this is", ls) == (ls.index("neutral"), False)
    assert M.answer_to_label("", ls) == (ls.index("neutral"), False)


def test_open_labels_and_hit_rate() -> None:
    assert M.open_labels("She looks cheerful and a bit anxious, not angry at all.") == ["happy", "worried"]
    assert M.open_labels("") == []
    assert M.hit_rate(["happy", "sad", "anger"], [["joy", "surprise"], ["happy"], ["furious"]]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        M.hit_rate(["happy"], [])


def test_confusion_png(tmp_path: Path) -> None:
    ls = get_label_set("mer2023")
    cm = M.confusion_matrix([0, 1, 2, 3, 4, 5, 5], [0, 1, 2, 3, 4, 5, 0], 6)
    p = M.plot_confusion(cm, ls.labels, tmp_path / "c" / "cm.png", title="t")
    data = p.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
