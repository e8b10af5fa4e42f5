import json

import pytest

from emo_stream.labels import get_label_set
from emo_stream.state import EmotionState, read_jsonl

MER = get_label_set("mer2023")


def make(**kw):
    args = dict(
        label_set=MER,
        probabilities=[0.1, 0.1, 0.5, 0.1, 0.1, 0.1],
        window_start=1.0,
        window_end=3.0,
        sequence=4,
        model_id="test",
        valence=0.4,
        arousal=0.2,
        modalities=["voice", "video", "face"],
        rationale="smiling",
        rationale_age_s=0.0,
        latency_ms={"engine": 12.5},
        flags=["audio_gap", "audio_gap"],
        signals={"motion_energy": 0.1},
    )
    args.update(kw)
    return EmotionState.build(**args)


def test_build_derives_top_label_and_orders_fields():
    s = make()
    assert s.top_label == "happy" and s.confidence == pytest.approx(0.5)
    assert s.stamp == s.window_end == 3.0
    assert s.modalities == ("video", "face", "voice")  # canonical order
    assert s.flags == ("audio_gap",)  # de-duplicated
    assert sum(s.probabilities) == pytest.approx(1.0)
    assert s.probability("joy") == pytest.approx(0.5)


def test_json_round_trip_is_exact(tmp_path):
    s = make(valence=None)
    line = s.to_json()
    d = json.loads(line)
    assert d["schema"] == 1 and d["valence"] is None and d["labels"][2] == "happy"
    assert EmotionState.from_json(line) == s
    p = tmp_path / "s.jsonl"
    p.write_text(line + "\n" + make(sequence=5).to_json() + "\n")
    assert [x.sequence for x in read_jsonl(str(p))] == [4, 5]


def test_build_normalizes_and_clips():
    s = make(probabilities=[0, 0, 2, 0, 0, 2], valence=3.0, arousal=float("nan"))
    assert s.probabilities[2] == pytest.approx(0.5) and s.top_label == "happy"
    assert s.valence == 1.0 and s.arousal is None


@pytest.mark.parametrize(
    "change, msg",
    [
        (dict(probabilities=(0.5, 0.6, 0, 0, 0, 0)), "sum to"),
        (dict(top_label="sad"), "arg-max"),
        (dict(window_start=5.0), "ordered"),
        (dict(stamp=2.0), "stamp must equal"),
        (dict(modalities=("smell",)), "unknown modalities"),
        (dict(valence=1.5), "outside"),
        (dict(labels=("a",)), "labels but"),
    ],
)
def test_invariants_are_enforced(change, msg):
    d = make().as_dict()
    d.pop("schema")
    d.update(change)
    with pytest.raises(ValueError, match=msg):
        EmotionState.from_dict(d)


def test_wrong_probability_count_is_rejected():
    with pytest.raises(ValueError, match="6 labels"):
        make(probabilities=[0.5, 0.5])


def test_person_id_defaults_to_the_primary_person_and_old_lines_read_back():
    s = make()
    assert s.person_id == ""  # no tracker: the one primary person, as before ids existed
    d = s.as_dict()
    assert d["person_id"] == ""
    d.pop("person_id")  # a line written before person_id existed
    assert EmotionState.from_dict(d) == s


def test_person_id_round_trips_through_json():
    s = make(person_id="p2")
    back = EmotionState.from_json(s.to_json())
    assert back.person_id == "p2" and back == s


@pytest.mark.parametrize("bad", ["2p", "p 1", "p/1", "p-1", "x" * 65, 7])
def test_person_id_must_be_a_ros_name_token(bad):
    d = make().as_dict()
    d.pop("schema")
    d["person_id"] = bad
    with pytest.raises(ValueError, match="person_id"):
        EmotionState.from_dict(d)


def test_primary_stream_keeps_the_first_state_of_each_window():
    from emo_stream.state import primary_stream

    a0, b0 = make(sequence=0, window_end=0.5, window_start=0.0, person_id="p2"), make(sequence=0, window_end=0.5, window_start=0.0, person_id="p1")
    a1, b1 = make(sequence=1, window_end=1.0, window_start=0.0, person_id="p2"), make(sequence=1, window_end=1.0, window_start=0.0, person_id="p1")
    assert primary_stream([a0, b0, a1, b1]) == [a0, a1]
    single = [make(sequence=k, window_end=0.5 * (k + 1), window_start=0.0) for k in range(3)]
    assert primary_stream(single) == single
