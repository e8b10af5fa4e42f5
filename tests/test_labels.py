import numpy as np
import pytest

from emo_stream.errors import ConfigError
from emo_stream.labels import LABEL_SETS, LabelSet, canonical, get_label_set, map_probabilities, mapping_matrix, normalize, valence_arousal


def test_registered_sets_have_the_papers_sizes():
    sizes = {k: len(v) for k, v in LABEL_SETS.items()}
    assert sizes == {"mer2023": 6, "merr": 9, "dfew": 7, "meld": 7, "fer2013": 7}
    assert LABEL_SETS["merr"].labels[-2:] == ("contempt", "doubt")


@pytest.mark.parametrize("src", sorted(LABEL_SETS))
@pytest.mark.parametrize("dst", sorted(LABEL_SETS))
def test_mapping_conserves_mass_and_keeps_shared_emotions(src, dst):
    s, d = LABEL_SETS[src], LABEL_SETS[dst]
    m = mapping_matrix(s, d)
    assert np.allclose(m.sum(axis=1), 1.0)
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(len(s)))
    assert map_probabilities(p, s, d).sum() == pytest.approx(1.0)
    for i, c in enumerate(s.canonical_labels):
        if c in d.canonical_labels:  # an emotion both sets have maps onto itself
            assert m[i, d.canonical_labels.index(c)] == 1.0


def test_meld_names_are_aliases():
    meld, mer = get_label_set("meld"), get_label_set("mer2023")
    p = np.zeros(len(meld))
    p[meld.index("joy")] = 1.0
    out = map_probabilities(p, meld, mer)
    assert mer.labels[int(np.argmax(out))] == "happy"
    assert meld.index("happy") == meld.index("joy")


def test_missing_emotions_follow_documented_fallbacks():
    merr, mer, dfew = get_label_set("merr"), get_label_set("mer2023"), get_label_set("dfew")
    m = mapping_matrix(merr, mer)
    assert mer.labels[int(np.argmax(m[merr.index("fear")]))] == "worried"
    assert mer.labels[int(np.argmax(m[merr.index("doubt")]))] == "worried"
    m2 = mapping_matrix(merr, dfew)
    assert dfew.labels[int(np.argmax(m2[merr.index("contempt")]))] == "disgust"
    assert dfew.labels[int(np.argmax(m2[merr.index("worried")]))] == "fear"


def test_valence_arousal_signs():
    mer = get_label_set("mer2023")
    onehot = lambda lab: np.eye(len(mer))[mer.index(lab)]  # noqa: E731
    v, a = valence_arousal(onehot("happy"), mer)
    assert v > 0.5 and a > 0
    v, a = valence_arousal(onehot("sad"), mer)
    assert v < 0 and a < 0
    assert valence_arousal(np.full(6, 1 / 6), mer)[0] < valence_arousal(onehot("happy"), mer)[0]


def test_bad_labels_and_sets_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown emotion label 'bored'"):
        canonical("bored")
    with pytest.raises(ConfigError, match="unknown label set"):
        get_label_set("iemocap")
    with pytest.raises(ConfigError, match="same emotion"):
        LabelSet("x", ("joy", "happy"))


def test_normalize_handles_garbage():
    assert np.allclose(normalize([np.nan, -1.0, 0.0]), [1 / 3] * 3)
    assert np.allclose(normalize([2.0, 2.0, np.inf]), [0.5, 0.5, 0.0])
