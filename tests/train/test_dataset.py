"""Manifests: reading, writing, validation errors with line numbers, MERR and folder converters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emo_stream.train.dataset import (
    DatasetError,
    Sample,
    convert_folder,
    convert_merr,
    read_manifest,
    write_manifest,
)


def _write(p: Path, lines: list) -> Path:
    p.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return p


@pytest.fixture()
def clips(tmp_path: Path) -> Path:
    d = tmp_path / "clips"
    d.mkdir()
    for n in ("a.mp4", "b.wav"):
        (d / n).write_bytes(b"\0")
    return tmp_path


def test_jsonl_round_trip_relative_paths_and_header(clips: Path) -> None:
    m = _write(
        clips / "train.jsonl",
        [
            {"format": "emo_stream.dataset", "version": 1, "label_set": "merr", "name": "x"},
            {"id": "1", "media": "clips/a.mp4", "label": "joy", "subtitle": "hi.", "start": 0.5, "end": 2},
            {"id": "2", "media": "clips/b.wav", "label": "doubt", "reason": "because", "meta": {"k": 1}},
        ],
    )
    man = read_manifest(m)
    assert man.label_set.id == "merr" and man.name == "x" and len(man) == 2
    a, b = man.samples
    assert a.media == clips / "clips" / "a.mp4" and a.start == 0.5 and a.end == 2.0 and a.line == 2
    assert a.label_index(man.label_set) == man.label_set.index("happy")  # alias
    assert a.grain == "coarse" and b.grain == "fine" and b.explanation == "because" and b.meta == {"k": 1}
    # moved folder: paths are relative to the manifest
    out = write_manifest(clips / "sub" / "copy.jsonl", man.samples, "merr")
    again = read_manifest(out)
    assert [s.media for s in again] == [s.media for s in man] and again.samples[0].to_json() == a.to_json()
    assert json.loads(out.read_text().splitlines()[1])["media"] == "../clips/a.mp4"


def test_json_format_and_bare_list(clips: Path) -> None:
    obj = {"format": "emo_stream.dataset", "label_set": "mer2023", "samples": [{"id": "1", "media": "clips/a.mp4", "label": "sad"}]}
    (clips / "m.json").write_text(json.dumps(obj))
    assert read_manifest(clips / "m.json").samples[0].label == "sad"
    (clips / "l.json").write_text(json.dumps(obj["samples"]))
    assert len(read_manifest(clips / "l.json")) == 1


def test_every_problem_reported_with_line_numbers(clips: Path) -> None:
    m = _write(
        clips / "bad.jsonl",
        [
            {"id": "1", "media": "clips/a.mp4", "label": "happy"},
            {"id": "2", "media": "clips/missing.mp4", "label": "happy"},
            {"id": "3", "media": "clips/a.mp4", "label": "ecstatic"},
            "{not json",
            {"id": "1", "media": "clips/a.mp4", "label": "sad"},
            {"id": "5", "media": "clips/a.mp4"},
            {"id": "6", "media": "clips/a.mp4", "label": "sad", "lable": "x"},
            {"id": "7", "media": "clips/a.mp4", "label": "sad", "start": 3, "end": 2},
            {"id": "8", "label": "sad"},
            {"id": "9", "features": {"eeg": "x.npy", "audio": "no.npy"}, "label": "sad"},
        ],
    )
    with pytest.raises(DatasetError) as ei:
        read_manifest(m)
    msg = str(ei.value)
    assert "line 2: media file not found" in msg
    assert "line 3: label 'ecstatic' is not in label set mer2023" in msg
    assert "line 4: not valid JSON" in msg
    assert "line 5: duplicate id '1' (first at line 1)" in msg
    assert "line 6: 'label' is missing" in msg
    assert "line 7: unknown key(s) ['lable']" in msg
    assert "line 8: 'end' (2.0) must be after 'start' (3.0)" in msg
    assert "line 9: a sample needs 'media'" in msg
    assert "line 10: feature modality 'eeg'" in msg and "line 10: audio feature file not found" in msg
    # unlabelled manifests are fine for inference
    ok = _write(clips / "unlabelled.jsonl", [{"id": "1", "media": "clips/a.mp4"}])
    assert read_manifest(ok, require_label=False).samples[0].label is None


def test_header_label_set_must_agree(clips: Path) -> None:
    m = _write(clips / "h.jsonl", [{"format": "emo_stream.dataset", "label_set": "dfew"}, {"id": "1", "media": "clips/a.mp4", "label": "disgust"}])
    assert read_manifest(m).label_set.id == "dfew"
    with pytest.raises(DatasetError, match="label_set 'dfew' differs"):
        read_manifest(m, "mer2023")
    with pytest.raises(DatasetError, match="manifest not found"):
        read_manifest(clips / "nope.jsonl")


def _merr_tree(root: Path) -> Path:
    (root / "video").mkdir()
    for n in ("s1", "s2", "s3"):
        (root / "video" / f"{n}.mp4").write_bytes(b"\0")
    for d in ("mae_340_UTT", "maeV_399_UTT", "HL-UTT"):
        (root / d).mkdir()
        for n in ("s1", "s2", "s3"):
            np.save(root / d / f"{n}.npy", np.ones(8, np.float32))
    (root / "ann.txt").write_text("s1 35 happy -1.2\ns2 doubt\n\ns3 12 worried\n")
    (root / "transcription_en_all.csv").write_text("name,sentence\ns1,I won!\ns2,Really?\ns3,Oh no\n")
    (root / "coarse.json").write_text(json.dumps({n: {"caption": f"coarse {n}"} for n in ("s1", "s2", "s3")}))
    (root / "fine.json").write_text(json.dumps({n: {"smp_reason_caption": f"reason {n}"} for n in ("s1", "s2", "s3")}))
    return root / "ann.txt"


def test_convert_merr_layout(tmp_path: Path) -> None:
    ann = _merr_tree(tmp_path)
    m = convert_merr(
        ann,
        tmp_path / "out" / "merr.jsonl",
        video_dir=tmp_path / "video",
        transcription="transcription_en_all.csv",
        coarse_json="coarse.json",
        fine_json="fine.json",
    )
    assert m.label_set.id == "merr" and [s.id for s in m] == ["s1", "s2", "s3"]
    s1 = m.samples[0]
    assert s1.label == "happy" and s1.subtitle == "I won!" and s1.reason == "reason s1" and s1.caption == "coarse s1" and s1.grain == "fine"
    assert s1.media == tmp_path / "video" / "s1.mp4"
    assert set(s1.features) == {"face", "temporal", "audio"} and s1.features["audio"] == tmp_path / "HL-UTT" / "s1.npy"


def test_convert_merr_errors_name_lines(tmp_path: Path) -> None:
    ann = _merr_tree(tmp_path)
    ann.write_text("s1 35 happy\ns2 12 joyous\ns9 3 sad\ns3\n")
    (tmp_path / "HL-UTT" / "s1.npy").unlink()
    with pytest.raises(DatasetError) as ei:
        convert_merr(ann, tmp_path / "o.jsonl", video_dir=tmp_path / "video", label_set="mer2023")
    msg = str(ei.value)
    assert "line 1: audio feature" in msg and "s1.npy not found" in msg
    assert "line 2: label 'joyous' of 's2' is not in label set mer2023" in msg
    assert "line 3: no clip s9.mp4 or s9.avi" in msg
    assert "line 4: expected 'name label'" in msg
    assert not (tmp_path / "o.jsonl").exists()


def test_convert_folder(tmp_path: Path) -> None:
    for lab, n in (("joy", 2), ("sad", 1)):
        (tmp_path / lab).mkdir()
        for i in range(n):
            (tmp_path / lab / f"c{i}.wav").write_bytes(b"\0")
    (tmp_path / "joy" / "c0.txt").write_text("yay\n")
    (tmp_path / "joy" / "c0.reason.txt").write_text("smiles")
    (tmp_path / "joy" / "notes.md").write_text("ignored")
    m = convert_folder(tmp_path, tmp_path / "m.jsonl")
    assert [(s.id, s.label) for s in m] == [("joy/c0", "joy"), ("joy/c1", "joy"), ("sad/c0", "sad")]
    assert m.samples[0].subtitle == "yay" and m.samples[0].reason == "smiles" and m.samples[0].grain == "fine"
    (tmp_path / "bored").mkdir()
    with pytest.raises(DatasetError, match=r"folder bored/: not a label of mer2023"):
        convert_folder(tmp_path, tmp_path / "m2.jsonl")


def test_sample_to_json_minimal() -> None:
    s = Sample(id="x", label="sad", media=Path("/a/b.mp4"))
    assert s.to_json(Path("/a")) == {"id": "x", "media": "b.mp4", "label": "sad"}
