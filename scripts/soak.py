#!/usr/bin/env python
"""Soak: stream a real clip, looped, for N minutes and watch for leaks and lost states.

Issue 13 item 4: a paced run (like a camera: windows may be dropped when the
engine falls behind, never queued) of the default engine for 30 minutes,
recording every minute the process's resident memory, thread count and open
file descriptors, and at the end the states emitted against the windows the
hop grid holds over the media time streamed. Bounded buffers mean RSS, threads
and fds after the first minute stay flat however long it runs. ``--lossless``
streams unpaced instead (every window processed, as fast as the engine goes:
the memory soak of a long file).

The clip is the project's astronaut + LibriVox speech (a real face and voice,
so every perception stage works) looped with ffmpeg stream copy into one file
in ``.cache/soak/`` (about 1 MB per minute), so timestamps run on across loops
like one long recording.

    .venv/bin/python scripts/soak.py [--minutes 30] [--engine default] [--input CLIP]
        [--hop 0.5] [--lossless] [--out out/soak]      # writes soak.csv + soak.json

Not a test (timings depend on the machine): a script whose numbers go into notes.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emo_stream.cli_args import config_from_args
from emo_stream.engines import make_engine
from emo_stream.pipeline import Pipeline
from emo_stream.signals import SIGNALS
from emo_stream.stats import percentiles as _percentiles
from emo_stream.stream.sinks import CallbackSink
from emo_stream.stream.sources.factory import open_sources

DEFAULT_CLIP = REPO / ".cache" / "media" / "astronaut_speech.mp4"
CSV_FIELDS = ("wall_s", "media_s", "states", "expected", "windows_dropped", "rss_mib", "threads", "py_threads", "fds", "cpu_s")


def media_duration(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip())


def looped_clip(src: Path, seconds: float, out_dir: Path) -> Path:
    """``src`` repeated (stream copy) until it lasts at least ``seconds``; cached by name and loop count."""
    loops = max(1, math.ceil(seconds / media_duration(src)))
    out_dir.mkdir(parents=True, exist_ok=True)
    dst = out_dir / f"{src.stem}_x{loops}.mkv"
    if not dst.exists():
        tmp = dst.with_name(f".tmp.{dst.name}")
        subprocess.run(
            [
                "ffmpeg",
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                "-stream_loop",
                str(loops - 1),
                "-i",
                str(src),
                "-map",
                "0:v?",
                "-map",
                "0:a?",
                "-c",
                "copy",
                "-f",
                "matroska",
                str(tmp),
            ],
            check=True,
        )
        tmp.replace(dst)
    return dst


class Sampler:
    """Process resources and stream progress, every ``period_s`` on its own thread and once at the end."""

    def __init__(self, period_s: float, hop_s: float, csv_path: Path | None) -> None:
        self.period_s = period_s
        self.hop_s = hop_s
        self.proc = psutil.Process()
        self.rows: list[dict] = []
        self.states = 0
        self.media_s = 0.0
        self.pipeline: Pipeline | None = None
        self.peak_threads: dict = {}
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._csv = csv_path.open("w", newline="") if csv_path else None
        self._writer = csv.DictWriter(self._csv, CSV_FIELDS) if self._csv else None
        if self._writer:
            self._writer.writeheader()
            self._csv.flush()
        self._thread = threading.Thread(target=self._loop, name="soak-sampler", daemon=True)

    def on_state(self, state) -> None:
        with self._lock:
            self.states += 1
            self.media_s = max(self.media_s, state.window_end)

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._thread.start()

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        row = self.sample()
        if self._csv:
            self._csv.close()
        return row

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample()

    def sample(self) -> dict:
        with self._lock:
            states, media_s = self.states, self.media_s
        cpu = self.proc.cpu_times()
        stats = self.pipeline.stats if self.pipeline is not None else None
        row = {
            "wall_s": round(time.monotonic() - self._t0, 1),
            "media_s": round(media_s, 2),
            "states": states,
            "expected": expected_windows(media_s, self.hop_s),
            "windows_dropped": stats.windows_dropped if stats else 0,
            "rss_mib": round(self.proc.memory_info().rss / 2**20, 1),
            "threads": self.proc.num_threads(),  # native + Python
            "py_threads": threading.active_count(),
            "fds": self.proc.num_fds(),
            "cpu_s": round(cpu.user + cpu.system, 1),
        }
        if row["threads"] >= self.peak_threads.get("threads", 0):
            self.peak_threads = {"threads": row["threads"], "wall_s": row["wall_s"], "by_name": _native_thread_names()}
        self.rows.append(row)
        if self._writer and not self._csv.closed:
            self._writer.writerow(row)
            self._csv.flush()
        print(f"soak: {row}", file=sys.stderr, flush=True)
        return row


def _native_thread_names() -> dict[str, int]:
    """OS threads of this process by name (/proc/self/task/*/comm; digits dropped), to tell whose pool grows."""
    names: dict[str, int] = {}
    for comm in Path("/proc/self/task").glob("*/comm"):
        try:
            raw = comm.read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
        key = "".join(ch for ch in raw if not ch.isdigit()).rstrip("-_: ") or raw
        names[key] = names.get(key, 0) + 1
    return dict(sorted(names.items(), key=lambda kv: -kv[1]))


def _thread_names() -> dict[str, int]:
    names: dict[str, int] = {}
    for th in threading.enumerate():
        key = "".join(ch for ch in th.name if not ch.isdigit()).rstrip("-_ ") or th.name
        names[key] = names.get(key, 0) + 1
    return dict(sorted(names.items()))


def expected_windows(media_s: float, hop_s: float) -> int:
    """Windows the hop grid holds up to ``media_s`` (one per hop; the stream starts at 0)."""
    return int(math.floor(media_s / hop_s + 1e-6))


def percentiles(values: list[float]) -> dict[str, float | None]:
    return _percentiles(values, (50, 95, 99), ndigits=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="how long to stream (wall time when paced)")
    ap.add_argument("--engine", default="default")
    ap.add_argument("--input", type=Path, default=DEFAULT_CLIP, help="clip to loop (default: astronaut + speech)")
    ap.add_argument("--config", type=Path, default=None, help="YAML stream config")
    ap.add_argument("--hop", type=float, default=None)
    ap.add_argument("--window", type=float, default=None)
    ap.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE", help="engine option, as for emo-stream run")
    ap.add_argument("--lossless", action="store_true", help="stream unpaced (every window, as fast as possible)")
    ap.add_argument("--sample-s", type=float, default=60.0, help="seconds between resource samples")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "soak", help="directory for soak.csv and soak.json")
    args = ap.parse_args(argv)

    ns = argparse.Namespace(
        config=args.config,
        window=args.window,
        hop=args.hop,
        engine=args.engine,
        label_set=None,
        option=args.option,
        weights=None,
        export=None,
        realtime=not args.lossless,
    )
    cfg = config_from_args(ns)
    speed = cfg.source.speed if not args.lossless else 1.0
    # Paced: the clip must outlast the wall time; lossless: stream `minutes` of media.
    clip = looped_clip(args.input, args.minutes * 60 * speed + 10, REPO / ".cache" / "soak")
    args.out.mkdir(parents=True, exist_ok=True)
    hop = cfg.window.hop_s
    sampler = Sampler(args.sample_s, hop, args.out / "soak.csv")
    since_end: list[float] = []

    def on_state(state) -> None:
        sampler.on_state(state)
        lat = state.latency_ms.get("since_window_end")
        if lat is not None:
            since_end.append(lat)

    t_load = time.monotonic()
    engine = make_engine(cfg)
    pipeline = Pipeline(open_sources(str(clip), cfg), engine, [CallbackSink(on_state)], cfg)
    sampler.pipeline = pipeline
    timer = threading.Timer(args.minutes * 60, pipeline.stop) if not args.lossless else None
    SIGNALS.install()  # SIGINT/SIGTERM stop the stream early; the report is still written
    with engine, SIGNALS.stopping(pipeline.stop):
        load_s = time.monotonic() - t_load
        sampler.start()
        if timer:
            timer.start()
        try:
            stats = pipeline.run()
        finally:
            if timer:
                timer.cancel()
            SIGNALS.uninstall()
        last = sampler.stop()  # the end of the stream, models still loaded
    closed = sampler.sample()  # after the engine released its workers
    rows = sampler.rows[:-1]
    first_min = next((r for r in rows if r["wall_s"] >= min(60.0, args.sample_s) - 1), rows[0])
    after = [r for r in rows if r["wall_s"] >= first_min["wall_s"]]
    expected = expected_windows(sampler.media_s, hop)
    report = {
        "clip": str(clip),
        "engine": cfg.engine.name,
        "mode": stats.mode,
        "hop_s": hop,
        "window_s": cfg.window.length_s,
        "minutes_requested": args.minutes,
        "engine_load_s": round(load_s, 1),
        "wall_s": round(stats.wall_s, 1),
        "media_s": round(sampler.media_s, 1),
        "states_emitted": stats.states,
        "states_expected": expected,
        "emitted_ratio": round(stats.states / expected, 4) if expected else None,
        "windows_dropped": stats.windows_dropped,
        "engine_errors": stats.engine_errors,
        "corrupt_packets": sum(s.corrupt_packets for s in stats.sources.values()),
        "capture_samples_dropped": sum(s.dropped_samples for s in stats.sources.values()),
        "since_window_end_ms": percentiles(since_end),
        "engine_ms": {f"p{q}": round(stats.engine_ms_percentile(q), 1) if stats.engine_ms else None for q in (50, 95, 99)},
        "at_1min": {k: first_min[k] for k in ("wall_s", "rss_mib", "threads", "fds")},
        "at_end": {k: last[k] for k in ("wall_s", "rss_mib", "threads", "fds")},
        "after_engine_close": {k: closed[k] for k in ("rss_mib", "threads", "fds")},
        "rss_growth_after_1min_mib": round(max(r["rss_mib"] for r in after) - first_min["rss_mib"], 1),
        "threads_max_after_1min": max(r["threads"] for r in after),
        "fds_max_after_1min": max(r["fds"] for r in after),
        "cpu_s": last["cpu_s"],
        # Python threads alive after the engine closed, by name (digits dropped): a leak shows here by name.
        "py_threads_after_close": _thread_names(),
        "peak_threads": sampler.peak_threads,
        "cpus": os.cpu_count(),
        "samples": rows,
    }
    (args.out / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    print(f"soak: wrote {args.out / 'soak.json'} and {args.out / 'soak.csv'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
