"""Acceptance: headless demo on real clips keeps frames, timing and audio; overlay visible, rest untouched.

Each clip is annotated once per module (lossless H.264, so the decoded output can
be compared with the decoded input pixel for pixel) and checked several ways.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from emo_stream.config import StreamConfig
from emo_stream.demo.headless import AnnotateResult, annotate_file
from emo_stream.demo.overlay import overlay_layout, regions_mask
from emo_stream.demo.track import StateTrack
from emo_stream.demo.video import VideoInfo, iter_video_frames, probe
from emo_stream.state import read_jsonl


@dataclass
class Run:
    input: Path
    result: AnnotateResult
    info_in: VideoInfo
    info_out: VideoInfo


def _annotate(src: Path, out: Path, engine: str, lossless: bool = True, **cfg) -> Run:
    config = StreamConfig().replace(engine={"name": engine, **cfg})
    result = annotate_file(src, out, config, jsonl=out.with_suffix(".jsonl"), lossless=lossless)
    return Run(src, result, probe(src), probe(out))


@pytest.fixture(scope="module")
def megamind(media, tmp_path_factory) -> Run:
    return _annotate(media / "megamind.avi", tmp_path_factory.mktemp("mm") / "annotated.mp4", "baseline")


@pytest.fixture(scope="module")
def astronaut(media, tmp_path_factory) -> Run:
    return _annotate(media / "astronaut_speech.mp4", tmp_path_factory.mktemp("as") / "annotated.mp4", "baseline")


@pytest.mark.parametrize("clip", [pytest.param("megamind", marks=pytest.mark.slow), "astronaut"])  # megamind: the whole 11 s clip
def test_same_frames_timing_and_audio_as_the_input(clip, request) -> None:
    run: Run = request.getfixturevalue(clip)
    i, o = run.info_in, run.info_out
    expected = {"megamind": (270, "ac3"), "astronaut": (178, "aac")}[clip]
    assert (i.frames, i.audio_codec) == expected
    assert o.frames == i.frames == run.result.frames_in == run.result.frames_out
    assert (o.width, o.height) == (i.width, i.height) and o.video_codec == "h264"
    # every frame keeps its presentation time (within the output container's tick)
    assert np.abs(np.array(i.frame_times) - np.array(o.frame_times)).max() < 1.5e-3
    assert o.video_duration_s == pytest.approx(i.video_duration_s, abs=1.5e-3)
    # container durations: equal up to where each container puts the first frame (see the report)
    assert o.duration_s == pytest.approx(i.duration_s, abs=2.0 / i.fps + 1e-3)
    # the original audio track, copied packet for packet
    assert o.audio_codec == i.audio_codec and (o.audio_rate, o.audio_channels) == (i.audio_rate, i.audio_channels)
    assert run.result.audio == f"copy {i.audio_codec}"
    assert o.audio_duration_s == pytest.approx(i.audio_duration_s or o.audio_duration_s, abs=0.1)
    assert o.audio_duration_s > i.duration_s - 0.2


@pytest.mark.parametrize(
    "clip,index", [pytest.param("megamind", 0, marks=pytest.mark.slow), pytest.param("megamind", 150, marks=pytest.mark.slow), ("astronaut", 120)]
)
def test_overlay_visible_inside_its_regions_identical_elsewhere(clip, index, request) -> None:
    run: Run = request.getfixturevalue(clip)
    track = StateTrack(read_jsonl(str(run.result.jsonl)))
    src = next(f for f in iter_video_frames(run.input) if f.index == index)
    out = next(f for f in iter_video_frames(run.result.video) if f.index == index)
    a, b = src.bgr(), out.bgr()
    state, stats = track.at(src.t, note="engine: baseline")
    lay = overlay_layout(a.shape, state, stats)
    changed = np.any(a != b, axis=2)
    # exact: regions cover whole 2x2 blocks (yuv420p colour samples), the rest keeps the input's samples
    inside = regions_mask(a.shape, lay.regions())
    assert changed[~inside].sum() == 0, "decoded output differs from the input outside the overlay"
    x0, y0, x1, y1 = lay.panel
    assert changed[y0:y1, x0:x1].mean() > 0.6
    if index == 0 and clip == "megamind":
        assert state is None  # before the first state: the panel says "waiting"


@pytest.mark.slow
def test_states_jsonl_is_written_beside(megamind) -> None:
    states = read_jsonl(str(megamind.result.jsonl))
    assert len(states) == megamind.result.states == 23
    assert all("not_an_emotion_model" in s.flags for s in states)


@pytest.mark.slow
def test_default_engine_on_the_speech_clip_draws_the_face_box(media, tmp_path) -> None:
    """The real default engine (lighter options: no LLM, no ASR) and the default lossy encoding."""
    run = _annotate(
        media / "astronaut_speech.mp4",
        tmp_path / "default.mp4",
        "default",
        lossless=False,
        options={"llm": False, "rationale": "off", "asr": "off", "face_frames": 1},
    )
    assert run.info_out.frames == run.info_in.frames == 178
    assert run.info_out.audio_codec == "aac"
    assert run.info_out.duration_s == pytest.approx(run.info_in.duration_s, abs=0.05)
    states = read_jsonl(str(run.result.jsonl))
    assert states and all("face" in s.modalities for s in states)
    track = StateTrack(states)
    src = next(f for f in iter_video_frames(run.input) if f.index == 150)
    out = next(f for f in iter_video_frames(run.result.video) if f.index == 150)
    a, b = src.bgr().astype(int), out.bgr().astype(int)
    state, stats = track.at(src.t)
    lay = overlay_layout(a.shape, state, stats)
    assert lay.face_box is not None
    x0, y0, _x1, y1 = lay.face_box
    diff = np.abs(a - b).max(axis=2)
    assert diff[y0 + 20 : y1 - 20, x0].mean() > 40  # the outline (lossy: compare magnitudes)
    outside = ~regions_mask(a.shape, lay.regions(), grow=8)
    assert diff[outside].mean() < 3.0  # crf 18 elsewhere: visually the same picture


@pytest.mark.slow
def test_emotion_llama_tiny_on_a_clip_without_audio(media, tmp_path) -> None:
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model on a shared 2-core machine: one thread is much faster
    try:
        run = _annotate(media / "astronaut_3s_noaudio.mp4", tmp_path / "el.mp4", "emotion-llama", options={"tiny": True})
    finally:
        torch.set_num_threads(threads)
    assert run.info_out.frames == run.info_in.frames == 75
    assert run.info_out.audio_codec is None and run.result.audio == "none"
    states = read_jsonl(str(run.result.jsonl))
    assert states and all(s.model_id.startswith("emotion-llama") for s in states)
    last_in = next(f for f in iter_video_frames(run.input) if f.index == 74).bgr()
    last_out = next(f for f in iter_video_frames(run.result.video) if f.index == 74).bgr()
    lay = overlay_layout(last_in.shape, states[-1], None)
    x0, y0, x1, y1 = lay.panel
    assert np.any(last_in != last_out, axis=2)[y0:y1, x0:x1].mean() > 0.6


def test_stop_during_the_pipeline_writes_no_video(media, tmp_path) -> None:
    from emo_stream.demo.headless import FileAnnotator

    seen = []
    annotator = FileAnnotator(
        media / "astronaut_speech.mp4",
        tmp_path / "stopped.mp4",
        StreamConfig().replace(engine={"name": "baseline"}),
        jsonl=tmp_path / "stopped.jsonl",
        on_state=lambda s: (seen.append(s), len(seen) == 3 and annotator.stop()),
    )
    result = annotator.run()
    assert result.stopped and result.video is None and not (tmp_path / "stopped.mp4").exists()
    assert result.states == 3 and len(read_jsonl(str(tmp_path / "stopped.jsonl"))) == 3
    assert "stopped before rendering" in result.summary()


@pytest.fixture(scope="module")
def two_faces(media, tmp_path_factory) -> Run:
    """3 s: Megamind (left) beside the astronaut photo (right), with speech, through the real default engine."""
    import subprocess

    d = tmp_path_factory.mktemp("two")
    clip = d / "two_faces.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-t", "3", "-i", str(media / "megamind.avi"), "-t", "3", "-i", str(media / "astronaut_speech.mp4"),
         "-filter_complex", "[1:v]scale=-2:528,fps=24[r];[0:v]fps=24[l];[l][r]hstack=inputs=2[v]", "-map", "[v]", "-map", "1:a",
         "-c:v", "libx264", "-preset", "ultrafast", "-crf", "16", "-c:a", "aac", "-shortest", str(clip)],
        check=True, timeout=60,
    )  # fmt: skip
    return _annotate(clip, d / "annotated.mp4", "default", options={"llm": False, "rationale": "off", "asr": "off"})


@pytest.mark.slow
def test_two_people_each_get_their_box_and_label_drawn(two_faces) -> None:
    """Both people of a real two-face clip are drawn at their own faces; nothing outside the overlay changes."""
    everyone = read_jsonl(str(two_faces.result.jsonl))
    primary = [s for s in everyone if s.person_id == everyone[0].person_id]
    others: dict[tuple[int, float], list] = {}
    for s in everyone:
        if s.person_id != everyone[0].person_id:
            others.setdefault((s.sequence, s.window_end), []).append(s)
    assert others, "the default engine tracked one person only"
    track = StateTrack(primary)
    frames_in = {f.index: f for f in iter_video_frames(two_faces.input)}
    seen_right = 0
    for out in iter_video_frames(two_faces.result.video):
        if out.index % 12:
            continue
        src = frames_in[out.index]
        state, stats = track.at(src.t, note="engine: default")
        people = others.get((state.sequence, state.window_end), []) if state is not None else []
        a, b = src.bgr(), out.bgr()
        lay = overlay_layout(a.shape, state, stats, people)
        changed = np.any(a != b, axis=2)
        assert changed[~regions_mask(a.shape, lay.regions())].sum() == 0  # lossless: exact outside the overlay
        if state is None:
            continue
        assert lay.face is not None and changed[lay.face[1] : lay.face[3], lay.face[0] : lay.face[2]].mean() > 0.05
        assert len(lay.people) == len(people)  # every other person of the window had a fresh face box
        for p in lay.people:  # their box outline, id tag and bars are drawn at their own face
            x0, y0, _x1, y1 = p.face_box
            assert changed[y0 + 4 : y1 - 4, x0].mean() > 0.9  # the outline
            tag = (p.face[0], p.face[1], p.face[2], y0)  # the tag strip above the box
            assert changed[tag[1] : tag[3], tag[0] : tag[0] + 40].mean() > 0.5
            assert p.bars is not None and changed[p.bars[1] : p.bars[3], p.bars[0] : p.bars[2]].mean() > 0.5
            seen_right += x0 >= 720  # the astronaut photo, right of Megamind's 720 px
    assert seen_right >= 4  # the astronaut is drawn in (almost) every sampled frame with states


@pytest.mark.slow
def test_report_of_the_two_face_clip_has_one_row_per_person(two_faces, tmp_path) -> None:
    """The JSONL the demo wrote holds every tracked person: `emo-stream report` plots each of them."""
    from emo_stream.report import make_report

    everyone = read_jsonl(str(two_faces.result.jsonl))
    ids = list(dict.fromkeys(s.person_id for s in everyone))
    rep = make_report(two_faces.result.jsonl, tmp_path / "timeline.png")
    assert len(ids) >= 2 and rep.people == tuple(ids)
    assert {f"person:{pid}" for pid in ids} <= set(rep.axes)
    assert rep.overview.states == two_faces.result.states  # the panels above: the primary stream, one state per window
