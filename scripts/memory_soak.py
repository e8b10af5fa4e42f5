#!/usr/bin/env python
"""Stream a long file as fast as possible and record resident memory over time.

Proves the pipeline's buffers are bounded: RSS after warm-up must stay flat
however long the input. Makes a ~10-minute clip by looping Megamind.avi
(copy mode, so the corrupt AC3 packet recurs every loop too).

    .venv/bin/python scripts/memory_soak.py [--minutes 10] [--engine baseline] [--json out/soak.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emo_stream.config import StreamConfig  # noqa: E402
from emo_stream.engines import make_engine  # noqa: E402
from emo_stream.stream.pipeline import Pipeline  # noqa: E402
from emo_stream.stream.sinks import CallbackSink  # noqa: E402
from emo_stream.stream.sources.factory import open_sources  # noqa: E402


def long_clip(minutes: float, out_dir: Path) -> Path:
    src = REPO / ".cache" / "media" / "megamind.avi"
    loops = int(minutes * 60 / 11.26) + 1
    dst = out_dir / f"megamind_x{loops}.avi"
    if not dst.exists():
        tmp = dst.with_suffix(".tmp.avi")
        subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-stream_loop", str(loops - 1), "-i", str(src), "-c", "copy", str(tmp)],
            check=True,
        )
        tmp.replace(dst)
    return dst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--engine", default="baseline")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    clip = long_clip(args.minutes, REPO / ".cache")
    cfg = StreamConfig().replace(engine={"name": args.engine})
    proc = psutil.Process()
    samples: list[tuple[float, float, float]] = []  # (media t, wall s, RSS MiB)
    t0 = time.monotonic()

    def record(state) -> None:
        if state.sequence % 40 == 0:
            samples.append((state.window_end, time.monotonic() - t0, proc.memory_info().rss / 2**20))

    with make_engine(cfg) as engine:
        stats = Pipeline(open_sources(str(clip), cfg), engine, [CallbackSink(record)], cfg).run()
    rss = [s[2] for s in samples]
    warm = [s[2] for s in samples if s[0] >= 60.0]  # after the first media minute
    report = {
        "clip": str(clip),
        "media_s": samples[-1][0] if samples else 0.0,
        "states": stats.states,
        "wall_s": round(stats.wall_s, 1),
        "rss_mib_first": round(rss[0], 1),
        "rss_mib_after_1min": round(warm[0], 1) if warm else None,
        "rss_mib_max": round(max(rss), 1),
        "rss_mib_last": round(rss[-1], 1),
        "rss_growth_after_1min_mib": round(max(warm) - warm[0], 1) if warm else None,
        "corrupt_packets": sum(s.corrupt_packets for s in stats.sources.values()),
        "trace": [(round(t, 1), round(w, 1), round(m, 1)) for t, w, m in samples],
    }
    print(json.dumps({k: v for k, v in report.items() if k != "trace"}, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
