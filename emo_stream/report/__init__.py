"""Reports on recorded states: a timeline PNG and a markdown/HTML summary.

``emo-stream report --jsonl states.jsonl --out timeline.png`` calls
:func:`make_report`. Works with the states of every engine (uniform
probabilities, missing valence/arousal and absent modalities are drawn and
described as such). matplotlib is imported only when plotting (Agg backend).

A JSONL that holds several tracked people (``person_id``; the default engine
writes every person) gets one timeline row per person in the PNG and a
"People" table in the summary; the other panels and tables describe the
primary person's stream, so a single-person file's report is unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from emo_stream.outputs import refuse_alias, same_file
from emo_stream.report.analysis import (
    UNIFORM,
    Overview,
    ReportError,
    Segment,
    check_consistent,
    covers,
    hop_of,
    load_all_states,
    load_states,
    modality_spans,
    overview,
    people_streams,
    segments,
    sort_states,
    spans,
)
from emo_stream.state import EmotionState, primary_stream

__all__ = [
    "UNIFORM",
    "Overview",
    "Report",
    "ReportError",
    "Segment",
    "covers",
    "hop_of",
    "load_all_states",
    "load_states",
    "make_report",
    "modality_spans",
    "overview",
    "people_streams",
    "segments",
    "spans",
]

#: Suffixes the timeline image may have.
IMAGE_SUFFIXES = (".png",)


@dataclass(frozen=True)
class Report:
    png: Path
    summary: Path
    width: int
    height: int
    axes: dict[str, tuple[int, int, int, int]]
    segments: list[Segment]
    overview: Overview
    people: tuple[str, ...] = ()  # the tracked people's ids, one timeline row each (empty: one person)


def default_summary_path(png: str | Path) -> Path:
    """``timeline.png`` -> ``timeline.md``."""
    return Path(png).with_suffix(".md")


def make_report(
    states: Sequence[EmotionState] | str | Path,
    out: str | Path,
    *,
    summary: str | Path | None = None,
    title: str | None = None,
) -> Report:
    """Write the timeline PNG ``out`` and the summary (markdown, or HTML for .html) for ``states``.

    ``states`` is a list of states or the path of a states JSONL file; either
    may hold several tracked people (the primary person's state first in each
    window, as the JSONL sink writes them).
    """
    from emo_stream.report.plot import plot_timeline
    from emo_stream.report.summary import write_summary

    out = Path(out).expanduser()
    summary_path = Path(summary).expanduser() if summary is not None else default_summary_path(out)
    if isinstance(states, (str, Path)):
        # Neither output may be the states file itself (it is read in full first, but a
        # report must never replace its own input).
        refuse_alias({"--out": out, "--summary": summary_path}, {"--jsonl": states})
        source_name = Path(states).name
        everyone = load_all_states(states)
    else:
        source_name = None
        if not states:
            raise ReportError("no states to report on")
        everyone = list(states)
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise ReportError(f"--out must be a .png file, got {out}")
    if out.is_dir():
        raise ReportError(f"{out} is a directory; give a file name such as timeline.png")
    if same_file(summary_path, out):
        raise ReportError("the summary and the image must be different files")
    if summary_path.suffix.lower() not in (".md", ".markdown", ".html", ".htm"):
        raise ReportError(f"the summary must be a .md or .html file, got {summary_path}")
    check_consistent(everyone)
    people = people_streams(everyone)
    ordered = sort_states(primary_stream(everyone))
    hop = hop_of(ordered)
    segs = segments(ordered, hop)
    ov = overview(ordered, segs, hop)
    origin = 0.0 if ordered[0].clock == "media" else min(s.window_start for s in ordered)
    heading = title or (f"Emotion timeline: {source_name}" if source_name else "Emotion timeline")
    # Both files are written atomically: a failed write (full disk, read-only folder) is
    # one ``cannot write X: <reason>`` error and leaves any earlier report in place.
    plot = plot_timeline(ordered, out, segments=segs, origin=origin, title=heading, people=people)
    image_ref = os.path.relpath(out.resolve(), summary_path.resolve().parent)
    people_ov = {pid: overview(ss) for pid, ss in people.items()}
    write_summary(summary_path, ov, segs, origin=origin, image=image_ref, title=heading, people=people_ov)
    return Report(
        png=out, summary=summary_path, width=plot.width, height=plot.height, axes=plot.axes, segments=segs, overview=ov,
        people=tuple(people),
    )  # fmt: skip
