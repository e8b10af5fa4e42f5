"""A reference-style pipeline: how Emotion-LLaMA's demo would serve a stream.

Emotion-LLaMA answers one clip at a time: every feature is computed from the
raw clip, and the answer is generated as free text. Run per window, that means:

* faces detected and classified on every selected frame (no per-frame cache);
* VAD and prosody recomputed over the whole window (state reset each time);
* Whisper run on the whole window's audio every window (not once per utterance);
* the LLM prompt evaluated from scratch (no KV-cached prefix) and the answer
  *generated* ("Emotion: happy ...") then parsed, instead of one scoring pass.

The same models and the same perception code as the default engine are used,
loaded once, so the comparison isolates the streaming design (caching,
incremental work, scoring instead of generation), not the model choice.
"""

from __future__ import annotations

import re
import time

import numpy as np

from emo_stream.config import StreamConfig
from emo_stream.engines import clues as cl
from emo_stream.engines.base import Engine, EngineOutput
from emo_stream.engines.default import DefaultEngine
from emo_stream.labels import valence_arousal
from emo_stream.runtime.llama_cpp import sanitize_clue_text
from emo_stream.stream.scheduler import Window


class ReferenceStyleEngine(Engine):
    """Recompute-everything, generate-the-answer baseline (see module doc)."""

    def __init__(self, config: StreamConfig, max_answer_tokens: int = 24) -> None:
        cfg = config.replace(engine={"name": "default", "options": {**config.engine.options, "asr": "sync", "rationale": "off"}})
        self._inner = DefaultEngine(cfg)
        self.label_set = self._inner.label_set
        self.model_id = "reference-style/" + self._inner.model_id
        self._max_tokens = max_answer_tokens
        self._pattern = re.compile(r"\b(" + "|".join(map(re.escape, self.label_set.labels)) + r")\b", re.IGNORECASE)

    def process(self, window: Window) -> EngineOutput:
        inner = self._inner
        # Forget everything: the next window is analysed as a fresh clip.
        inner.reset()
        inner._start(window)
        lat: dict[str, float] = {}
        signals: dict[str, float] = {}
        flags: list[str] = ["reference_baseline"]
        face = inner._face_clue(window, lat, signals)
        voice, words = None, None
        if window.audio is not None:
            voice, words = inner._voice_and_words(window, lat, signals, flags)
            # Whisper on the whole window every time, as a clip-level model does.
            t = time.perf_counter()
            assert inner.transcriber is not None, "the reference transcribes every window: the default engine with ASR on"
            seg = inner.transcriber.transcribe(window.audio.samples, window.audio.start)
            lat["asr"] = lat.get("asr", 0.0) + (time.perf_counter() - t) * 1e3
            if seg.text.strip():
                tc = inner.text.analyze(seg.text)
                words = cl.WordsClue(seg.text.strip(), tc.prompt_hint(), tc.valence, dict(tc.evidence))
        clues = cl.WindowClues(face, voice, words)
        t = time.perf_counter()
        assert inner.llm is not None, "the reference generates an answer: the default engine with its LLM"
        answer = inner.llm.generate(
            inner._prefix + sanitize_clue_text(cl.render(clues)), inner._tail, max_tokens=self._max_tokens, stop=("\n",), reuse_prefix=False
        )
        lat["llm_generate"] = (time.perf_counter() - t) * 1e3
        match = self._pattern.search(answer)
        probs = np.full(len(self.label_set), 1.0 / len(self.label_set))
        if match:
            probs = np.eye(len(self.label_set))[self.label_set.labels.index(match.group(1).lower())]
        else:
            flags.append("unparsed_answer")
        v, a = valence_arousal(probs, self.label_set)
        return EngineOutput(
            probabilities=probs,
            valence=v,
            arousal=a,
            modalities=window.modalities,
            rationale=answer.strip(),
            rationale_stamp=window.end,
            latency_ms=lat,
            flags=flags,
            signals=signals,
        )

    def close(self) -> None:
        self._inner.close()
