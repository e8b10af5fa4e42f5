"""The written summary: markdown (default) or HTML, from the same tables.

Contents: what was analysed (states, time range, model, label set, state
rate, engine latency, flags), the dominant emotions (share of time as top
label, mean probability), the modalities' time shares (face present, speech,
text), and the **segments**: runs of consecutive windows with the same top
label, with their time range, mean confidence, mean valence/arousal and up to
two sampled rationales. A stream of several tracked people adds a
**People** table: per person id, the windows they were seen in, their time
range, dominant emotion (and its share of their time) and how often their
face was seen.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path

from emo_stream.outputs import write_text
from emo_stream.report.analysis import UNIFORM, Overview, Segment

#: Segments listed at most (a flickering stream can have hundreds); the rest are counted.
MAX_SEGMENT_ROWS = 200


def _f(x: float | None, fmt: str = "{:+.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def _t(x: float) -> str:
    return f"{x:.2f}"


Tables = dict[str, tuple[list[str], list[list[str]]]]


def _people_table(people: Mapping[str, Overview], origin: float) -> tuple[list[str], list[list[str]]]:
    rows = []
    for pid, pov in people.items():
        top = next(iter(pov.label_time_share), "-")
        rows.append([
            pid, str(pov.states), f"{_t(pov.start - origin)} - {_t(pov.end - origin)}", top,
            f"{pov.label_time_share.get(top, 0.0) * 100:.0f}%", f"{pov.modality_share.get('face', 0.0) * 100:.0f}%",
        ])  # fmt: skip
    return ["person", "windows", "time range (s)", "dominant emotion", "its share of their time", "face present"], rows


def _tables(
    ov: Overview, segs: Sequence[Segment], origin: float, people: Mapping[str, Overview] | None = None
) -> tuple[list[tuple[str, str]], Tables, list[str]]:
    """(facts, {section: (header, rows)}, notes) shared by both renderers."""
    rate = 1.0 / ov.hop if ov.hop > 0 else None
    facts = [
        ("states", f"{ov.states} (sequence gaps: {ov.sequence_gaps})"),
        ("time range", f"{_t(ov.start - origin)} - {_t(ov.end - origin)} s" + ("" if origin == 0 else f" (since the first window; {ov.clock} clock)")),
        ("model", ", ".join(ov.model_ids)),
        ("label set", f"{ov.label_set}: {', '.join(ov.labels)}"),
        ("state rate", f"{rate:.2f} states/s (hop {ov.hop:.2f} s)" if rate else "-"),
        ("engine latency", f"p50 {ov.latency_p50_ms:.0f} ms, p95 {ov.latency_p95_ms:.0f} ms" if ov.latency_p50_ms is not None else "-"),
        ("rationales", str(ov.rationales)),
        ("flags", ", ".join(f"{k} x{v}" for k, v in ov.flags.items()) or "none"),
    ]
    dom_rows = [[lab, f"{share * 100:.0f}%", f"{ov.mean_probabilities[lab]:.2f}" if lab in ov.mean_probabilities else "-"]
                for lab, share in ov.label_time_share.items()]  # fmt: skip
    for lab, p in sorted(ov.mean_probabilities.items(), key=lambda kv: -kv[1]):
        if lab not in ov.label_time_share:
            dom_rows.append([lab, "0%", f"{p:.2f}"])
    mod_names = {"face": "face present", "voice": "speech (voice)", "text": "transcript (text)", "video": "video", "audio": "audio"}
    mod_rows = [[mod_names[m], f"{share * 100:.0f}%"] for m, share in ov.modality_share.items()]
    seg_rows = []
    for seg in segs[:MAX_SEGMENT_ROWS]:
        mods = ", ".join(f"{m} {v * 100:.0f}%" for m, v in seg.modality_share.items()) or "-"
        seg_rows.append([
            str(seg.index + 1), _t(seg.start - origin), _t(seg.end - origin), f"{seg.duration:.2f}", seg.label, str(seg.states),
            f"{seg.mean_confidence:.2f}", _f(seg.mean_valence), _f(seg.mean_arousal), mods,
            " / ".join(f"\u201c{r}\u201d" for r in seg.rationales) or "-",
        ])  # fmt: skip
    tables = {
        "Dominant emotions": (["top label", "share of time", "mean probability"], dom_rows),
        "Modalities": (["modality", "share of time present"], mod_rows),
        **({"People": _people_table(people, origin)} if people else {}),
        "Segments": (
            ["#", "from (s)", "to (s)", "duration (s)", "top label", "states", "mean confidence", "valence", "arousal", "modalities", "rationale (sampled)"],
            seg_rows,
        ),
    }
    notes = []
    if len(segs) > MAX_SEGMENT_ROWS:
        notes.append(f"{len(segs) - MAX_SEGMENT_ROWS} more segments not listed.")
    if UNIFORM in ov.label_time_share:
        notes.append(f"{UNIFORM}: the probabilities were uniform (no evidence, or an engine that is not an emotion model).")
    return facts, tables, notes


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(
    ov: Overview,
    segs: Sequence[Segment],
    *,
    origin: float = 0.0,
    image: str | None = None,
    title: str = "Emotion timeline",
    people: Mapping[str, Overview] | None = None,
) -> str:
    facts, tables, notes = _tables(ov, segs, origin, people)
    lines = [f"# {title}", ""]
    lines += [f"- **{k}**: {_md_cell(v)}" for k, v in facts]
    lines.append("")
    if image:
        lines += [f"![timeline]({image})", ""]
    for name in tables:
        header, rows = tables[name]
        lines.append(f"## {name}")
        lines.append("")
        if name == "Segments":
            lines += ["Consecutive windows with the same top label" + (" (the primary person's stream)." if "People" in tables else "."), ""]
        if name == "People":
            lines += ["Every tracked person, one timeline row each in the image.", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join("---" for _ in header) + "|")
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
        lines.append("")
    lines += notes
    return "\n".join(lines).rstrip() + "\n"


def render_html(
    ov: Overview,
    segs: Sequence[Segment],
    *,
    origin: float = 0.0,
    image: str | None = None,
    title: str = "Emotion timeline",
    people: Mapping[str, Overview] | None = None,
) -> str:
    facts, tables, notes = _tables(ov, segs, origin, people)
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>',
        "<style>body{font-family:sans-serif;max-width:1300px;margin:1em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:14px;vertical-align:top}"
        "th{background:#f3f3f3}img{max-width:100%}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        "<ul>" + "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in facts) + "</ul>",
    ]
    if image:
        parts.append(f'<img src="{e(image)}" alt="timeline">')
    for name in tables:
        header, rows = tables[name]
        parts.append(f"<h2>{e(name)}</h2>")
        parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</table>")
    parts += [f"<p>{e(n)}</p>" for n in notes]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_summary(
    path: str | Path,
    ov: Overview,
    segs: Sequence[Segment],
    *,
    origin: float = 0.0,
    image: str | None = None,
    title: str = "Emotion timeline",
    people: Mapping[str, Overview] | None = None,
) -> Path:
    """Write markdown, or HTML when ``path`` ends in .html/.htm (atomically; a failed
    write raises ``cannot write PATH: <reason>``). ``people``: each tracked person's
    overview by id (two or more add the People table)."""
    p = Path(path)
    render = render_html if p.suffix.lower() in (".html", ".htm") else render_markdown
    return write_text(p, render(ov, segs, origin=origin, image=image, title=title, people=people))
