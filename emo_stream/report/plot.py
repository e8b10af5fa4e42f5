"""The timeline figure (matplotlib, Agg backend: no display needed).

Three panels sharing the time axis (seconds of media time, or seconds since
the first window for live clocks):

1. label probabilities over ``window_end``, stacked (they sum to 1), one colour
   per emotion (:mod:`emo_stream.report.palette`), with the top label of each
   segment written over runs long enough to hold the text;
2. valence and arousal in [-1, 1], with **face-present** spans (orange) and
   **speech** spans (blue, "voice" among the modalities) shaded behind them;
3. modality lanes: one bar per modality (video, audio, face, voice, text)
   where the states report it present.

When the stream holds several tracked people (``people``: states by
``person_id``), one more row per person follows the probabilities, labelled
with the id: that person's label probabilities, stacked, one bar per window
they were seen in (gaps where they were not). The three panels above describe
the primary person's stream, as for one person.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emo_stream.outputs import atomic_output
from emo_stream.report.analysis import Segment, covers, hop_of, modality_spans
from emo_stream.report.palette import emotion_mpl, modality_mpl
from emo_stream.state import MODALITIES, EmotionState

FIG_SIZE_IN = (12.0, 7.5)
#: Figure height added per tracked person's row (inches).
PERSON_ROW_IN = 1.1
DPI = 100
FACE_SHADE = (1.0, 0.62, 0.25)
SPEECH_SHADE = (0.30, 0.60, 1.0)


@dataclass(frozen=True)
class PlotResult:
    """The written PNG, its size in pixels and each panel's pixel box (x0, y0, x1, y1; y from the top)."""

    path: Path
    width: int
    height: int
    axes: dict[str, tuple[int, int, int, int]]


def _matplotlib():
    try:
        import matplotlib
    except ImportError as exc:
        from emo_stream.report.analysis import ReportError

        raise ReportError(f"the report needs matplotlib ({exc}); run: pip install 'emo-stream[viz]'") from None
    matplotlib.use("Agg", force=True)  # file output only; never needs a display
    import matplotlib.pyplot as plt

    return matplotlib, plt


def plot_timeline(
    states: Sequence[EmotionState],
    out: str | Path,
    *,
    segments: Sequence[Segment] = (),
    origin: float = 0.0,
    title: str | None = None,
    people: Mapping[str, Sequence[EmotionState]] | None = None,
) -> PlotResult:
    """Draw the timeline of sorted ``states`` into the PNG ``out``.

    ``people``: every tracked person's sorted states by id (see
    :func:`~emo_stream.report.analysis.people_streams`); two or more add one
    row per person, an empty mapping or None draws the single-person figure.
    """
    _, plt = _matplotlib()
    from matplotlib.patches import Patch

    out = Path(out)
    labels = list(states[0].labels)
    t = np.array([s.window_end for s in states], dtype=np.float64) - origin
    probs = np.array([s.probabilities for s in states], dtype=np.float64)
    hop = hop_of(states)
    t_lo = min(s.window_start for s in states) - origin
    t_hi = float(t.max()) if t.size else 1.0
    if t_hi <= t_lo:
        t_hi = t_lo + max(hop, 1e-3)
    if 0.0 < t_lo < 0.25 * (t_hi - t_lo):
        t_lo = 0.0  # start the axis at the stream start, not at the first window's first sample

    people = dict(people or {})
    n_people = len(people) if len(people) >= 2 else 0
    fig_h = FIG_SIZE_IN[1] + PERSON_ROW_IN * n_people
    fig, axes = plt.subplots(
        3 + n_people, 1, figsize=(FIG_SIZE_IN[0], fig_h), dpi=DPI, sharex=True,
        gridspec_kw={"height_ratios": [3.0] + [1.0] * n_people + [2.0, 1.3], "hspace": 0.12 + 0.04 * n_people},
    )  # fmt: skip
    ax_p, ax_people, ax_va, ax_m = axes[0], list(axes[1 : 1 + n_people]), axes[-2], axes[-1]
    try:
        # 1. probabilities, stacked; a single state is drawn as a bar of the hop's width
        colors = [emotion_mpl(lab) for lab in labels]
        if len(states) >= 2:
            # step plot: each state fills the time it covers, (previous window end, its window end]
            x = np.concatenate([[covers(states[:1], hop)[0][0] - origin], t])
            y = np.concatenate([probs[:1], probs]).T
            ax_p.stackplot(x, y, labels=labels, colors=colors, step="pre", alpha=0.92, linewidth=0)
        else:
            bottom = 0.0
            for lab, c, p in zip(labels, colors, probs[0]):
                ax_p.bar(t[0] - hop / 2, p, width=hop, bottom=bottom, color=c, label=lab, align="edge")
                bottom += p
        ax_p.set_ylim(0, 1)
        ax_p.set_ylabel("probability")
        ax_p.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False, title="label", title_fontsize=8)
        span = t_hi - t_lo
        for seg in segments:
            if seg.duration >= 0.08 * span and seg.label:
                ax_p.text((seg.start + seg.end) / 2 - origin, 0.5, seg.label, ha="center", va="center", fontsize=8,
                          color="black", bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.7})  # fmt: skip
        head = title or "emotion timeline"
        model = states[0].model_id
        ax_p.set_title(head, fontsize=11, loc="left", pad=16)
        who = f" | {n_people} people: the primary person's stream, then one row per person" if n_people else ""
        ax_p.text(0.0, 1.015, f"{len(states)} states | label set {states[0].label_set} | {model}{who}", transform=ax_p.transAxes,
                  fontsize=8, color="0.35", ha="left", va="bottom")  # fmt: skip

        # 1b. one row per tracked person: their probabilities, stacked, in the windows they were seen
        primary_ids = {s.person_id for s in states}
        for ax, (pid, pstates) in zip(ax_people, people.items()):
            _person_row(ax, pstates, labels, colors, hop, origin)
            ax.set_ylabel(pid + ("\n(primary)" if pid in primary_ids else ""), fontsize=8, rotation=0, ha="right", va="center")

        # 2. valence / arousal with face and speech spans shaded behind
        for a, b in modality_spans(states, "face", hop):
            ax_va.axvspan(a - origin, b - origin, color=FACE_SHADE, alpha=0.18, lw=0, zorder=0)
        for a, b in modality_spans(states, "voice", hop):  # hatched, so overlaps with face stay readable
            ax_va.axvspan(a - origin, b - origin, facecolor="none", edgecolor=SPEECH_SHADE, alpha=0.45, lw=0, zorder=0.5, hatch="///")
        ax_va.axhline(0.0, color="0.6", lw=0.8, zorder=1)
        val = np.array([np.nan if s.valence is None else s.valence for s in states], dtype=np.float64)
        aro = np.array([np.nan if s.arousal is None else s.arousal for s in states], dtype=np.float64)
        handles = []
        if np.isfinite(val).any():
            handles += ax_va.plot(t, val, color=(0.1, 0.55, 0.1), lw=1.8, marker="o", ms=2.5, label="valence", zorder=3)
        if np.isfinite(aro).any():
            handles += ax_va.plot(t, aro, color=(0.75, 0.1, 0.45), lw=1.8, marker="o", ms=2.5, label="arousal", zorder=3)
        if not handles:
            ax_va.text(0.5, 0.5, "valence / arousal not estimated by this engine", transform=ax_va.transAxes,
                       ha="center", va="center", fontsize=9, color="0.35")  # fmt: skip
        handles += [
            Patch(facecolor=FACE_SHADE, alpha=0.35, label="face present"),
            Patch(facecolor="none", edgecolor=SPEECH_SHADE, alpha=0.6, hatch="///", label="speech (voice)"),
        ]
        ax_va.set_ylim(-1.05, 1.05)
        ax_va.set_ylabel("valence / arousal")
        ax_va.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)

        # 3. modality lanes
        for row, mod in enumerate(MODALITIES):
            sp = modality_spans(states, mod, hop)
            y = len(MODALITIES) - 1 - row
            if sp:
                ax_m.broken_barh([(a - origin, b - a) for a, b in sp], (y - 0.35, 0.7), facecolors=modality_mpl(mod))
        ax_m.set_yticks(range(len(MODALITIES)))
        ax_m.set_yticklabels(list(reversed(MODALITIES)), fontsize=8)
        ax_m.set_ylim(-0.6, len(MODALITIES) - 0.4)
        ax_m.set_xlabel("time (s)" if origin == 0.0 else "time since the first window (s)")
        ax_m.set_xlim(t_lo, t_hi)
        for ax in (ax_p, *ax_people, ax_va, ax_m):
            ax.grid(axis="x", color="0.85", lw=0.6)
            ax.set_axisbelow(True)
        # the same margins in inches as the single-person figure
        fig.subplots_adjust(left=0.07, right=0.87, top=1 - 0.08 * FIG_SIZE_IN[1] / fig_h, bottom=0.08 * FIG_SIZE_IN[1] / fig_h)
        fig.canvas.draw()
        width, height = (round(v) for v in fig.canvas.get_width_height())
        boxes = {}
        named = [("probabilities", ax_p), *((f"person:{pid}", ax) for pid, ax in zip(people, ax_people))]
        for name, ax in (*named, ("valence_arousal", ax_va), ("modalities", ax_m)):
            bb = ax.get_window_extent()
            boxes[name] = (int(np.ceil(bb.x0)), int(np.ceil(height - bb.y1)), int(np.floor(bb.x1)), int(np.floor(height - bb.y0)))
        with atomic_output(out) as tmp:  # never half a PNG under the final name
            fig.savefig(tmp, dpi=DPI, format="png")
    finally:
        plt.close(fig)
    return PlotResult(path=out, width=width, height=height, axes=boxes)


def _person_row(ax, states: Sequence[EmotionState], labels: list[str], colors: list, hop: float, origin: float) -> None:
    """One person's probabilities as stacked bars, one per window they were seen in.

    WHY bars and not a stack plot: a person is absent from some windows (not
    yet entered, left, occluded); bars leave those windows empty instead of
    joining across them.
    """
    x = np.array([s.window_end for s in states], dtype=np.float64) - origin - hop
    probs = np.array([s.probabilities for s in states], dtype=np.float64)
    bottom = np.zeros(len(states))
    for k, (lab, c) in enumerate(zip(labels, colors)):
        ax.bar(x, probs[:, k], width=hop, bottom=bottom, color=c, align="edge", linewidth=0, label=lab)
        bottom += probs[:, k]
    ax.set_ylim(0, 1)
    ax.set_yticks([])
