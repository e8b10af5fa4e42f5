"""Per-person cost: states/s and face-stage CPU per window with the input tiled to 1, 2 and 4 faces.

The per-person part of the default engine (face detection, one expression crop
per face, the tracker, per-person fusion) is what grows with the number of
people; the LLM scores the primary person only and ASR runs once per stream,
so both are off here to measure that part alone (issue 18). The tiles are
built with ffmpeg from the bench's own clip (the left/right copies mirrored, so
the tracker sees distinct faces, not one face twice at the same place), and
each tiled clip streams through one engine in lossless file mode. ``states``
counts every person's states: a window with two people gives two.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from emo_stream.errors import EmoStreamError

#: ffmpeg filter graphs tiling the first video stream into 1, 2 (side by side) and 4 (2x2) copies.
LAYOUTS = {
    1: "[0:v]copy[v]",
    2: "[0:v]split[a][b];[b]hflip[b2];[a][b2]hstack=inputs=2[v]",
    4: "[0:v]split=4[a][b][c][d];[b]hflip[b2];[c]hflip[c2];[a][b2]hstack[top];[c2][d]hstack[bot];[top][bot]vstack[v]",
}

#: The per-person part only: the LLM, rationales and ASR do not grow with people.
PER_PERSON_OPTIONS = {"llm": False, "rationale": "off", "asr": "off"}


def tile_clip(clip: Path, faces: int, seconds: float, out: Path) -> Path:
    """``clip``'s first ``seconds`` with its picture tiled ``faces`` times (audio kept when there is some)."""
    if faces not in LAYOUTS:
        raise EmoStreamError(f"people bench: faces must be one of {sorted(LAYOUTS)}, got {faces}")
    cmd = [
        "ffmpeg",
        "-v",
        "error",
        "-y",
        "-t",
        str(seconds),
        "-i",
        str(clip),
        "-filter_complex",
        LAYOUTS[faces],
        "-map",
        "[v]",
        "-map",
        "0:a?",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-crf",
        "16",
        "-c:a",
        "aac",
        str(out),
    ]
    try:
        subprocess.run(cmd, check=True, timeout=300, capture_output=True)
    except FileNotFoundError as exc:
        raise EmoStreamError("people bench: ffmpeg not found (scripts/apt_install.sh installs it)") from exc
    except subprocess.CalledProcessError as exc:
        msg = exc.stderr.decode(errors="replace").strip().splitlines()
        raise EmoStreamError(f"people bench: ffmpeg could not tile {clip}: {msg[-1] if msg else exc}") from exc
    return out


def measure_people(clip: Path, config: Any, *, seconds: float = 4.0, faces: tuple[int, ...] = (1, 2, 4)) -> list[dict[str, Any]]:
    """One row per tiling: faces, person ids seen, states (all persons), windows, wall s, states/s, face-stage CPU ms per window."""
    from emo_stream.engines import make_engine
    from emo_stream.pipeline import Pipeline
    from emo_stream.stream.sinks import Sink
    from emo_stream.stream.sources.factory import open_sources

    class _Count(Sink):
        def __init__(self) -> None:
            self.states, self.ids = 0, set[str]()

        def write(self, state) -> None:
            self.states += 1
            self.ids.add(state.person_id)

        write_person = write

    options = {**dict(config.engine.options), **PER_PERSON_OPTIONS}
    cfg = config.replace(engine={"name": "default", "options": options}, source={"realtime": False})
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="emo-people-") as tmp, make_engine(cfg) as engine:
        face_cpu = 0.0  # the engine's stage clock counts over its lifetime: per clip = difference
        for n in faces:
            tiled = tile_clip(Path(clip), n, seconds, Path(tmp) / f"faces{n}.mp4")
            sink = _Count()
            t0 = time.perf_counter()
            stats = Pipeline(open_sources(str(tiled), cfg), engine, [sink], cfg).run()
            wall = time.perf_counter() - t0
            cpu = stats.stage_cpu_s.get("face", 0.0) - face_cpu
            face_cpu += cpu
            rows.append(
                {
                    "faces": n,
                    "person_ids": sorted(sink.ids),
                    "states": sink.states,
                    "windows": stats.states,
                    "wall_s": round(wall, 2),
                    "states_per_s": round(sink.states / wall, 2) if wall > 0 else None,
                    "face_cpu_ms_per_window": round(1e3 * cpu / max(1, stats.states), 1),
                }
            )
    return rows


def render_people(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines for :func:`measure_people`'s rows."""
    lines = [
        "## Per-person cost (input tiled; lossless, LLM/rationale/ASR off)",
        "",
        "| faces tiled | person ids seen | windows | states (all persons) | states/s | face-stage CPU ms per window |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['faces']} | {len(r['person_ids'])} | {r['windows']} | {r['states']} | {r['states_per_s']} | {r['face_cpu_ms_per_window']} |" for r in rows]
    return [*lines, ""]
