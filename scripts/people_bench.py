#!/usr/bin/env python3
"""Per-person cost of the default engine: states/s and face-stage ms per frame with 1, 2, 4 faces.

Builds 4 s clips from the real test media with ffmpeg (the astronaut_speech
clip, its speech, its photo tiled 1x1, 2x1 and 2x2, alternate tiles mirrored)
and streams each through the default engine in lossless file mode with the
LLM, rationales and ASR off (the per-person part: face detection, one
expression crop per face, the tracker, per-person fusion). Prints one JSON line
per clip: faces, states (all persons), wall seconds, states/s, face-stage CPU
ms per analysed frame. Numbers for notes, never pass/fail.

    .venv/bin/python scripts/people_bench.py [--media .cache/media] [--seconds 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAYOUTS = {
    1: "[0:v]copy[v]",
    2: "[0:v]split[a][b];[b]hflip[b2];[a][b2]hstack=inputs=2[v]",
    4: "[0:v]split=4[a][b][c][d];[b]hflip[b2];[c]hflip[c2];[a][b2]hstack[top];[c2][d]hstack[bot];[top][bot]vstack[v]",
}


def build(media: Path, faces: int, seconds: float, out: Path) -> Path:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-t", str(seconds), "-i", str(media / "astronaut_speech.mp4"), "-filter_complex", LAYOUTS[faces],
         "-map", "[v]", "-map", "0:a", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "16", "-c:a", "aac", str(out)],
        check=True, timeout=120,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--media", type=Path, default=Path(".cache/media"))
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args(argv)

    from emo_stream.config import StreamConfig
    from emo_stream.engines import make_engine
    from emo_stream.pipeline import Pipeline
    from emo_stream.stream.sinks import Sink
    from emo_stream.stream.sources.factory import open_sources

    class Count(Sink):
        def __init__(self) -> None:
            self.states, self.ids = 0, set()

        def write(self, state) -> None:
            self.states += 1
            self.ids.add(state.person_id)

        write_person = write

    cfg = StreamConfig().replace(engine={"name": "default", "options": {"llm": False, "rationale": "off", "asr": "off"}})
    with tempfile.TemporaryDirectory() as tmp, make_engine(cfg) as engine:
        face_cpu = 0.0  # the engine's stage clock counts over its lifetime: per clip = difference
        for faces in (1, 2, 4):
            clip = build(args.media, faces, args.seconds, Path(tmp) / f"faces{faces}.mp4")
            sink = Count()
            t0 = time.perf_counter()
            stats = Pipeline(open_sources(str(clip), cfg), engine, [sink], cfg).run()
            wall = time.perf_counter() - t0
            cpu = stats.stage_cpu_s.get("face", 0.0) - face_cpu
            face_cpu += cpu
            frames = max(1, engine.face_analyzer.detections)
            print(json.dumps({"faces": faces, "person_ids": sorted(sink.ids), "states": sink.states, "windows": stats.states,
                              "wall_s": round(wall, 2), "states_per_s": round(sink.states / wall, 2),
                              "face_cpu_ms_per_frame": round(1e3 * cpu / frames, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
