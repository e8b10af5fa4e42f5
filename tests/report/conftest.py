"""Hand-made state streams with known segments and spans."""

from __future__ import annotations

import pytest

from emo_stream.labels import get_label_set
from emo_stream.state import EmotionState

MER = get_label_set("mer2023")  # neutral, angry, happy, sad, worried, surprise


def _probs(top: str, conf: float = 0.7) -> list[float]:
    rest = (1.0 - conf) / (len(MER.labels) - 1)
    return [conf if lab == top else rest for lab in MER.labels]


@pytest.fixture
def stream():
    """``stream(n=20, hop=0.5, t0=0.0, clock="media")``: happy (0-7), sad (8-13), neutral (14-19);
    face in states 0-9, voice in 4-15, a rationale every 4th state."""

    def build(n: int = 20, hop: float = 0.5, t0: float = 0.0, clock: str = "media", rationale: str = "because {i}") -> list[EmotionState]:
        out = []
        for i in range(n):
            top = "happy" if i < 8 else "sad" if i < 14 else "neutral"
            mods = ["video", "audio"] + (["face"] if i < 10 else []) + (["voice"] if 4 <= i < 16 else [])
            end = t0 + hop * (i + 1)
            out.append(
                EmotionState.build(
                    label_set=MER,
                    probabilities=_probs(top, 0.6 + 0.01 * (i % 5)),
                    window_start=max(t0, end - 2.0),
                    window_end=end,
                    sequence=i,
                    model_id="synthetic",
                    valence={"happy": 0.6, "sad": -0.6, "neutral": 0.0}[top],
                    arousal=0.3 - 0.02 * i,
                    modalities=mods,
                    rationale=rationale.format(i=i) if i % 4 == 0 else "",
                    rationale_age_s=float(hop * (i % 4)),
                    latency_ms={"engine": 10.0 + i},
                    clock=clock,
                )
            )
        return out

    return build


@pytest.fixture
def write_jsonl(tmp_path):
    def write(states, name="states.jsonl"):
        p = tmp_path / name
        p.write_text("".join(s.to_json() + "\n" for s in states), encoding="utf-8")
        return p

    return write
