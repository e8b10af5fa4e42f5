import numpy as np
import pytest

from emo_stream.engines.fusion import FusionConfig, distribution_from_coordinate, fuse
from emo_stream.errors import ConfigError
from emo_stream.labels import get_label_set

MER = get_label_set("mer2023")


def onehot(label):
    return np.eye(len(MER))[MER.index(label)]


def test_no_evidence_is_uniform_and_single_expert_keeps_its_argmax():
    cfg = FusionConfig()
    assert np.allclose(fuse({}, MER, cfg), 1 / 6)
    p = fuse({"face": onehot("happy")}, MER, cfg)
    assert MER.labels[int(np.argmax(p))] == "happy" and p.max() < 0.999  # smoothing caps certainty


def test_weak_llm_cannot_overrule_a_confident_face():
    face = 0.9 * onehot("happy") + 0.1 / 6
    p = fuse({"face": face, "llm": onehot("sad")}, MER, FusionConfig())
    assert MER.labels[int(np.argmax(p))] == "happy" and p[MER.index("happy")] > 0.6


def test_llm_breaks_a_tie_between_close_experts():
    face = np.array([0.0, 0.0, 0.45, 0.0, 0.0, 0.45]) + 0.1 / 6
    p = fuse({"face": face, "llm": onehot("surprise")}, MER, FusionConfig())
    assert MER.labels[int(np.argmax(p))] == "surprise"


def test_overrides_and_validation():
    cfg = FusionConfig.from_options({"llm": {"weight": 0.0}})
    p = fuse({"face": onehot("happy"), "llm": onehot("sad")}, MER, cfg)
    q = fuse({"face": onehot("happy")}, MER, cfg)
    assert np.allclose(p, q)  # weight 0 removes the expert
    with pytest.raises(ConfigError, match="unknown fusion expert"):
        FusionConfig.from_options({"smell": {"weight": 1}})
    with pytest.raises(ConfigError, match="smoothing"):
        FusionConfig.from_options({"face": {"smoothing": 0.0}})
    with pytest.raises(ValueError, match="probabilities for 6"):
        fuse({"face": np.ones(7)}, MER, FusionConfig())


def test_coordinate_kernel_prefers_matching_labels():
    arousal = MER.circumplex()[:, 1]
    high = distribution_from_coordinate(0.8, arousal, 0.4)
    low = distribution_from_coordinate(-0.4, arousal, 0.4)
    assert high[MER.index("surprise")] > high[MER.index("sad")]
    assert low[MER.index("sad")] > low[MER.index("surprise")]
