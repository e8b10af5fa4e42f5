"""Per-person cost (`emo-stream bench --people`): the tiles give as many tracked people as faces."""

import pytest

from emo_stream.bench.people import measure_people, render_people, tile_clip
from emo_stream.config import StreamConfig
from emo_stream.errors import EmoStreamError


@pytest.mark.slow
def test_tiled_astronaut_gives_one_person_per_tile_and_a_state_each(media):
    rows = measure_people(media / "astronaut_speech.mp4", StreamConfig(), seconds=2.0, faces=(1, 2))
    assert [r["faces"] for r in rows] == [1, 2]
    one, two = rows
    assert len(one["person_ids"]) == 1 and len(two["person_ids"]) == 2  # the mirrored copy is a person of its own
    assert one["windows"] == two["windows"] > 0
    assert one["states"] == one["windows"] and two["states"] == 2 * two["windows"]  # one state per person per window
    assert all(r["states_per_s"] > 0 and r["face_cpu_ms_per_window"] > 0 for r in rows)
    md = "\n".join(render_people(rows))
    assert "Per-person cost" in md and f"| 2 | 2 | {two['windows']} | {two['states']} |" in md


def test_unknown_tiling_and_undecodable_input_are_one_clear_error(tmp_path):
    with pytest.raises(EmoStreamError, match="faces must be one of"):
        tile_clip(tmp_path / "a.mp4", 3, 1.0, tmp_path / "b.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(EmoStreamError, match="ffmpeg could not tile"):
        tile_clip(bad, 2, 1.0, tmp_path / "out.mp4")
