"""Dataset manifests: the one format the trainer, the feature extractor and ``eval`` read.

Format
------
A split is one manifest file, JSON Lines (``.jsonl``, one sample per line) or
JSON (``.json``). Relative paths are resolved from the manifest's directory, so
a dataset folder can be moved as a whole.

``.jsonl``: an optional first *header* line, then one object per sample::

    {"format": "emo_stream.dataset", "version": 1, "label_set": "mer2023", "name": "synthetic"}
    {"id": "s0001", "media": "clips/s0001.mp4", "label": "happy", "subtitle": "What a lovely day!"}
    {"id": "s0002", "media": "clips/long.mp4", "start": 3.2, "end": 5.0, "label": "sad",
     "reason": "The voice is low and slow ...", "grain": "fine"}
    {"id": "s0003", "features": {"face": "feats/face/s0003.npy", "audio": "feats/audio/s0003.npy"}, "label": "angry"}

``.json``: ``{"format": "emo_stream.dataset", "version": 1, "label_set": ..., "samples": [...]}``
or a bare list of samples.

Sample fields
~~~~~~~~~~~~~
========== ======== ==================================================================
``id``     required unique string (feature caches and predictions are keyed by it)
``media``  one of   video or audio clip (anything FFmpeg reads); decoded by the
           media/   stream's own sources, so training sees what streaming sees
``features``        ``{modality: path}`` of precomputed utterance features
                    (``.npy``, 1-D ``(D,)`` or 2-D ``(T, D)``), modality one of
                    ``global``, ``face``, ``temporal``, ``audio``; e.g. Emotion-LLaMA's
                    MAE / VideoMAE / HuBERT ``.npy`` files. With ``media`` too, the
                    encoders run only for the modalities not given here.
``start``  optional seconds into ``media`` where the sample starts (default 0)
``end``    optional seconds where it ends (default: end of file); ``end > start``
``label``  required emotion label, in the manifest's label set (aliases such as
           for      ``joy`` for ``happy`` are accepted, see :mod:`emo_stream.labels`);
           training may be omitted only when reading with ``require_label=False``
``subtitle`` opt.   transcript, put in the prompt ("The person in video says: ...")
``reason`` optional free-text explanation (fine-grained, EMER-style); the answer
                    of the ``reason`` task
``caption`` opt.    coarse description (MERR coarse-grained ``caption``); used as the
                    ``reason`` answer when there is no ``reason``
``grain``  optional ``"coarse"`` or ``"fine"`` (default: ``fine`` when ``reason`` is
                    given, else ``coarse``); a training stage can select one
``meta``   optional free-form object, carried through to predictions
========== ======== ==================================================================

Unknown keys are errors (a typo such as ``lable`` must not silently drop the
label). All problems of a file are collected and reported together, each with
its line number (``.jsonl``) or sample index (``.json``), in one
:class:`DatasetError`.

Converters
----------
* :func:`convert_merr` -- Emotion-LLaMA's MERR / MER2023 layout: an annotation
  text file (``name label`` or ``name frames label [valence]`` per line), a
  video folder (``name.mp4`` / ``name.avi``), optionally the transcription CSV
  (``name,sentence``), the coarse-grained JSON (``{name: {"caption": ...}}``),
  the fine-grained JSON (``{name: {"smp_reason_caption": ...}}``) and the
  precomputed feature folders ``mae_340_UTT`` (face), ``maeV_399_UTT``
  (temporal) and ``HL-UTT`` (audio) next to the annotation file.
* :func:`convert_folder` -- a plain folder ``root/<label>/<clip>.<ext>``, with an
  optional ``<clip>.txt`` transcript and ``<clip>.reason.txt`` explanation
  beside each clip.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emo_stream.errors import ConfigError, EmoStreamError
from emo_stream.labels import LabelSet, get_label_set
from emo_stream.outputs import make_dir, write_text
from emo_stream.structured_files import parse_json_text, read_json, read_text

#: Manifests and MERR annotation/caption files list tens of thousands of samples: a larger cap
#: than configs get, still far below what would exhaust memory.
MANIFEST_MAX_BYTES = 256 * 1024 * 1024

FORMAT = "emo_stream.dataset"
FORMAT_VERSION = 1
#: Modalities a precomputed feature may be given for (the model's encoder slots).
FEATURE_MODALITIES = ("global", "face", "temporal", "audio")
SAMPLE_KEYS = frozenset({"id", "media", "features", "start", "end", "label", "subtitle", "reason", "caption", "grain", "meta"})
HEADER_KEYS = frozenset({"format", "version", "label_set", "name", "description"})
MEDIA_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac"}
)
#: How many problems one DatasetError lists before "... and N more".
MAX_REPORTED = 12


class DatasetError(EmoStreamError):
    """A manifest (or a dataset being converted) is malformed: the message lists every problem with its line."""


@dataclass(frozen=True)
class Sample:
    """One labelled clip (or precomputed feature set). Paths are absolute."""

    id: str
    label: str | None
    media: Path | None = None
    features: Mapping[str, Path] = field(default_factory=dict)
    start: float | None = None
    end: float | None = None
    subtitle: str = ""
    reason: str = ""
    caption: str = ""
    grain: str = "coarse"
    meta: Mapping[str, Any] = field(default_factory=dict)
    line: int = 0

    def label_index(self, label_set: LabelSet) -> int:
        if self.label is None:
            raise DatasetError(f"sample {self.id!r} has no label")
        return label_set.index(self.label)

    @property
    def explanation(self) -> str:
        """The ``reason`` task's answer text: the fine reason, else the coarse caption."""
        return self.reason or self.caption

    def to_json(self, base: Path | None = None) -> dict[str, Any]:
        """The manifest object for this sample (paths relative to ``base`` when given)."""

        def rel(p: Path) -> str:
            if base is None:
                return str(p)
            try:
                return os.path.relpath(p, base)
            except ValueError:  # another drive on Windows
                return str(p)

        out: dict[str, Any] = {"id": self.id}
        if self.media is not None:
            out["media"] = rel(self.media)
        if self.features:
            out["features"] = {k: rel(v) for k, v in self.features.items()}
        if self.start is not None:
            out["start"] = self.start
        if self.end is not None:
            out["end"] = self.end
        if self.label is not None:
            out["label"] = self.label
        for key in ("subtitle", "reason", "caption"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.grain != ("fine" if self.reason else "coarse"):
            out["grain"] = self.grain
        if self.meta:
            out["meta"] = dict(self.meta)
        return out


@dataclass(frozen=True)
class Manifest:
    """A parsed split: its samples, label set and where it lives."""

    path: Path
    label_set: LabelSet
    samples: tuple[Sample, ...]
    name: str = ""

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self):
        return iter(self.samples)

    def by_id(self) -> dict[str, Sample]:
        return {s.id: s for s in self.samples}

    def label_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.label_set.labels, 0)
        for s in self.samples:
            if s.label is not None:
                counts[self.label_set.labels[s.label_index(self.label_set)]] += 1
        return counts


class _Problems:
    """Collects "where: what" messages and raises them as one DatasetError."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[str] = []

    def add(self, where: str, msg: str) -> None:
        self.items.append(f"{where}: {msg}")

    def raise_if_any(self) -> None:
        if not self.items:
            return
        shown = self.items[:MAX_REPORTED]
        more = len(self.items) - len(shown)
        tail = f"; ... and {more} more" if more else ""
        # one line (the CLI prints errors as one line): "path: N problem(s): line 3: ...; line 7: ..."
        raise DatasetError(f"{self.path}: {len(self.items)} problem(s): " + "; ".join(shown) + tail)


def _join(base: Path, rel: str) -> Path:
    """``rel`` (``~`` expanded) against ``base``, with ``..`` folded (symlinks are not resolved)."""
    return Path(os.path.normpath(base / Path(rel).expanduser()))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _parse_sample(obj: Any, where: str, base: Path, label_set: LabelSet, problems: _Problems, *, require_label: bool, check_files: bool) -> Sample | None:
    if not isinstance(obj, Mapping):
        problems.add(where, f"a sample must be a JSON object, got {type(obj).__name__}")
        return None
    n_before = len(problems.items)
    unknown = sorted(set(obj) - SAMPLE_KEYS)
    if unknown:
        problems.add(where, f"unknown key(s) {unknown}; valid keys: {sorted(SAMPLE_KEYS)}")
    sid = obj.get("id")
    if not isinstance(sid, str) or not sid.strip():
        problems.add(where, f"'id' must be a non-empty string, got {sid!r}")
        sid = None
    label = obj.get("label")
    if label is None:
        if require_label:
            problems.add(where, "'label' is missing")
    elif not isinstance(label, str):
        problems.add(where, f"'label' must be a string, got {label!r}")
        label = None
    else:
        try:
            label_set.index(label)
        except ConfigError:
            problems.add(where, f"label {label!r} is not in label set {label_set.id} {list(label_set.labels)}")
    media = None
    if "media" in obj:
        if not isinstance(obj["media"], str) or not obj["media"]:
            problems.add(where, f"'media' must be a path string, got {obj['media']!r}")
        else:
            media = _join(base, obj["media"])
            if check_files and not media.is_file():
                problems.add(where, f"media file not found: {media}")
    features: dict[str, Path] = {}
    if "features" in obj:
        raw = obj["features"]
        if not isinstance(raw, Mapping) or not raw:
            problems.add(where, f"'features' must be a non-empty object {{modality: path}}, got {raw!r}")
        else:
            for mod, p in raw.items():
                if mod not in FEATURE_MODALITIES:
                    problems.add(where, f"feature modality {mod!r} is not one of {list(FEATURE_MODALITIES)}")
                elif not isinstance(p, str) or not p:
                    problems.add(where, f"features.{mod} must be a path string, got {p!r}")
                else:
                    fp = _join(base, p)
                    if check_files and not fp.is_file():
                        problems.add(where, f"{mod} feature file not found: {fp}")
                    features[mod] = fp
    if media is None and not features and "media" not in obj and "features" not in obj:
        problems.add(where, "a sample needs 'media' (a clip) or 'features' (precomputed feature files)")
    start = end = None
    for key in ("start", "end"):
        if key in obj and obj[key] is not None:
            v = _number(obj[key])
            if v is None or v < 0:
                problems.add(where, f"'{key}' must be a number of seconds >= 0, got {obj[key]!r}")
            elif key == "start":
                start = v
            else:
                end = v
    if end is not None and end <= (start or 0.0):
        problems.add(where, f"'end' ({end}) must be after 'start' ({start or 0.0})")
    if (start is not None or end is not None) and media is None and "media" not in obj:
        problems.add(where, "'start'/'end' need a 'media' clip to cut")
    texts = {}
    for key in ("subtitle", "reason", "caption"):
        text = obj.get(key, "")
        if text is None:
            text = ""
        if not isinstance(text, str):
            problems.add(where, f"'{key}' must be a string, got {type(text).__name__}")
            text = ""
        texts[key] = text.strip()
    grain = obj.get("grain", "fine" if texts["reason"] else "coarse")
    if grain not in ("coarse", "fine"):
        problems.add(where, f"'grain' must be 'coarse' or 'fine', got {grain!r}")
    meta = obj.get("meta", {})
    if not isinstance(meta, Mapping):
        problems.add(where, f"'meta' must be an object, got {type(meta).__name__}")
        meta = {}
    if len(problems.items) > n_before or sid is None:
        return None
    line = int(where.split()[-1]) if where.startswith("line ") else 0
    return Sample(id=sid, label=label, media=media, features=features, start=start, end=end, grain=grain, meta=dict(meta), line=line, **texts)


def read_manifest(
    path: str | Path,
    label_set: str | LabelSet | None = None,
    *,
    require_label: bool = True,
    check_files: bool = True,
) -> Manifest:
    """Parse and validate a manifest (see module docstring).

    Args:
        path: ``.jsonl`` or ``.json`` file.
        label_set: the label set labels must belong to; default: the header's
            ``label_set``, else ``mer2023``. When both are given they must agree.
        require_label: every sample needs a label (training/evaluation).
        check_files: media and feature files must exist.

    Raises:
        DatasetError: listing every problem with its line number.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DatasetError(f"manifest not found: {p}")
    problems = _Problems(p)
    # The project's one safe reader (structured_files): size-capped, no FIFOs, UTF-8 checked, and
    # JSON nesting / duplicate keys / NaN refused, so a hostile manifest is one line, never a hang.
    text = read_text(p, max_bytes=MANIFEST_MAX_BYTES, what="manifest")
    header: dict[str, Any] = {}
    entries: list[tuple[str, Any]] = []
    if p.suffix.lower() == ".json":
        data = parse_json_text(text, f"manifest {p}", max_chars=MANIFEST_MAX_BYTES)
        if isinstance(data, Mapping):
            header = {k: v for k, v in data.items() if k != "samples"}
            samples = data.get("samples")
            if not isinstance(samples, list):
                raise DatasetError(f"{p}: a JSON manifest object needs a 'samples' list")
        elif isinstance(data, list):
            samples = data
        else:
            raise DatasetError(f"{p}: a JSON manifest must be an object with 'samples' or a list of samples")
        entries = [(f"samples[{i}]", s) for i, s in enumerate(samples)]
    else:
        for lineno, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip() or raw.lstrip().startswith("//"):
                continue
            try:
                obj = parse_json_text(raw, "line")
            except ConfigError as exc:  # "line is not valid JSON: ...", "line is nested more than 64 levels deep"
                problems.add(f"line {lineno}", str(exc).removeprefix("line is "))
                continue
            if not entries and not header and isinstance(obj, Mapping) and "format" in obj:
                header = dict(obj)
                continue
            entries.append((f"line {lineno}", obj))
    if header:
        unknown = sorted(set(header) - HEADER_KEYS)
        if unknown:
            problems.add("header", f"unknown key(s) {unknown}; valid: {sorted(HEADER_KEYS)}")
        if header.get("format", FORMAT) != FORMAT:
            problems.add("header", f"format must be {FORMAT!r}, got {header.get('format')!r}")
        if int(header.get("version", FORMAT_VERSION) or 0) > FORMAT_VERSION:
            problems.add("header", f"version {header.get('version')} is newer than this emo_stream reads ({FORMAT_VERSION})")
    ls_from_header = header.get("label_set")
    try:
        if isinstance(label_set, LabelSet):
            ls = label_set
        else:
            ls = get_label_set(label_set or ls_from_header or "mer2023")
    except ConfigError as exc:
        raise DatasetError(f"{p}: {exc}") from None
    if ls_from_header and label_set is not None and get_label_set(str(ls_from_header)).id != ls.id:
        problems.add("header", f"label_set {ls_from_header!r} differs from the requested {ls.id!r}")
    base = p.parent
    samples_out: list[Sample] = []
    seen: dict[str, str] = {}
    for where, obj in entries:
        s = _parse_sample(obj, where, base, ls, problems, require_label=require_label, check_files=check_files)
        if s is None:
            continue
        if s.id in seen:
            problems.add(where, f"duplicate id {s.id!r} (first at {seen[s.id]})")
            continue
        seen[s.id] = where
        samples_out.append(s)
    if not entries and not problems.items:
        problems.add("file", "no samples")
    problems.raise_if_any()
    return Manifest(path=p, label_set=ls, samples=tuple(samples_out), name=str(header.get("name", "")))


def write_manifest(path: str | Path, samples: Iterable[Sample], label_set: str | LabelSet, name: str = "") -> Path:
    """Write ``samples`` as a ``.jsonl`` manifest with a header (paths relative to its folder), atomically."""
    p = Path(path)
    ls = label_set if isinstance(label_set, LabelSet) else get_label_set(label_set)
    make_dir(p.parent)
    header = {"format": FORMAT, "version": FORMAT_VERSION, "label_set": ls.id}
    if name:
        header["name"] = name
    lines = [json.dumps(header)]
    base = p.parent.resolve()
    for s in samples:
        lines.append(json.dumps(s.to_json(base), ensure_ascii=False))
    return write_text(p, "\n".join(lines) + "\n")


# ---------------------------------------------------------------------------
# converters
# ---------------------------------------------------------------------------

#: MERR feature folders (next to the annotation file) -> our modality names.
MERR_FEATURE_DIRS = {"face": "mae_340_UTT", "temporal": "maeV_399_UTT", "audio": "HL-UTT"}


def _merr_rows(ann: Path, problems: _Problems) -> list[tuple[int, str, str]]:
    rows = []
    for lineno, raw in enumerate(read_text(ann, max_bytes=MANIFEST_MAX_BYTES, what="annotation file").splitlines(), start=1):
        parts = raw.split()
        if not parts:
            continue
        if len(parts) == 2:
            name, label = parts
        elif len(parts) >= 3:
            name, label = parts[0], parts[2]  # "name frames label [valence]" (Emotion-LLaMA's t[2])
        else:
            problems.add(f"line {lineno}", f"expected 'name label' or 'name frames label [valence]', got {raw.strip()!r}")
            continue
        rows.append((lineno, name, label))
    return rows


def _read_json_map(path: Path, what: str) -> dict[str, Any]:
    data = read_json(path, what=what, max_bytes=MANIFEST_MAX_BYTES)
    if not isinstance(data, Mapping):
        raise DatasetError(f"{what} {path} must map sample names to objects")
    return dict(data)


def _read_transcripts(path: Path) -> dict[str, str]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"name", "sentence"} <= set(reader.fieldnames):
                raise DatasetError(f"transcription CSV {path} needs 'name' and 'sentence' columns, has {reader.fieldnames}")
            return {row["name"]: (row.get("sentence") or "").strip() for row in reader}
    except OSError as exc:
        raise DatasetError(f"transcription CSV {path} cannot be read ({exc})") from None


def convert_merr(
    annotation: str | Path,
    out: str | Path,
    *,
    video_dir: str | Path | None = None,
    transcription: str | Path | None = None,
    coarse_json: str | Path | None = None,
    fine_json: str | Path | None = None,
    feature_dirs: Mapping[str, str | Path] | None = None,
    label_set: str = "merr",
    grain: str | None = None,
) -> Manifest:
    """Convert Emotion-LLaMA's MERR/MER2023 layout into a manifest (see module docstring).

    Args:
        annotation: the ``name [frames] label [valence]`` text file.
        out: manifest path to write (``.jsonl``).
        video_dir: folder of ``name.mp4`` / ``name.avi`` clips (optional when
            every modality comes as a precomputed feature).
        transcription: CSV with ``name`` and ``sentence`` columns.
        coarse_json: ``{name: {"caption": ...}}`` (MERR coarse-grained).
        fine_json: ``{name: {"smp_reason_caption": ...}}`` (MERR fine-grained).
        feature_dirs: ``{modality: folder}`` of ``name.npy`` files; relative
            folders are resolved next to the annotation file. Default: the MERR
            folders (:data:`MERR_FEATURE_DIRS`) that exist there.
        label_set: labels the annotation uses (``merr``: 9 labels; ``mer2023``: 6).
        grain: force ``coarse``/``fine``; default: ``fine`` for samples with a reason.

    Raises:
        DatasetError: every missing clip/feature/transcript and unknown label,
            with the annotation line numbers.
    """
    ann = Path(annotation).expanduser()
    if not ann.is_file():
        raise DatasetError(f"MERR annotation file not found: {ann}")
    ls = get_label_set(label_set)
    problems = _Problems(ann)
    rows = _merr_rows(ann, problems)
    root = ann.parent
    vdir = Path(video_dir).expanduser() if video_dir is not None else None
    if vdir is not None and not vdir.is_dir():
        raise DatasetError(f"MERR video folder not found: {vdir}")
    if feature_dirs is None:
        fdirs = {m: root / d for m, d in MERR_FEATURE_DIRS.items() if (root / d).is_dir()}
    else:
        fdirs = {}
        for m, d in feature_dirs.items():
            if m not in FEATURE_MODALITIES:
                raise DatasetError(f"feature modality {m!r} is not one of {list(FEATURE_MODALITIES)}")
            fd = Path(d).expanduser()
            fd = fd if fd.is_absolute() else root / fd
            if not fd.is_dir():
                raise DatasetError(f"{m} feature folder not found: {fd}")
            fdirs[m] = fd
    if vdir is None and not fdirs:
        raise DatasetError(f"{ann}: no video folder given and none of the MERR feature folders {sorted(MERR_FEATURE_DIRS.values())} exist next to it")

    def resolve(p: str | Path | None) -> Path | None:
        if p is None:
            return None
        q = Path(p).expanduser()
        return q if q.is_absolute() else root / q

    tr_path, coarse_path, fine_path = resolve(transcription), resolve(coarse_json), resolve(fine_json)
    transcripts = _read_transcripts(tr_path) if tr_path is not None else {}
    if tr_path is not None and not tr_path.is_file():
        raise DatasetError(f"transcription CSV not found: {tr_path}")
    coarse = _read_json_map(coarse_path, "coarse-grained JSON") if coarse_path is not None else {}
    fine = _read_json_map(fine_path, "fine-grained JSON") if fine_path is not None else {}
    samples = []
    seen: set[str] = set()
    for lineno, name, label in rows:
        where = f"line {lineno}"
        if name in seen:
            problems.add(where, f"duplicate sample {name!r}")
            continue
        seen.add(name)
        try:
            ls.index(label)
        except ConfigError:
            problems.add(where, f"label {label!r} of {name!r} is not in label set {ls.id} {list(ls.labels)}")
            continue
        media = None
        if vdir is not None:
            for ext in (".mp4", ".avi"):
                if (vdir / (name + ext)).is_file():
                    media = vdir / (name + ext)
                    break
            if media is None:
                problems.add(where, f"no clip {name}.mp4 or {name}.avi in {vdir}")
                continue
        feats = {}
        for m, fd in fdirs.items():
            f = fd / (name + ".npy")
            if not f.is_file():
                problems.add(where, f"{m} feature {f} not found")
            feats[m] = f
        if tr_path is not None and name not in transcripts:
            problems.add(where, f"{name!r} has no row in {tr_path}")
        reason = ""
        if fine_path is not None:
            entry = fine.get(name)
            if not isinstance(entry, Mapping) or not isinstance(entry.get("smp_reason_caption"), str):
                problems.add(where, f"{name!r} has no 'smp_reason_caption' in {fine_path}")
            else:
                reason = entry["smp_reason_caption"].strip()
        caption = ""
        if coarse_path is not None:
            entry = coarse.get(name)
            if isinstance(entry, Mapping) and isinstance(entry.get("caption"), str):
                caption = entry["caption"].strip()
            else:
                problems.add(where, f"{name!r} has no 'caption' in {coarse_path}")
        g = grain or ("fine" if reason else "coarse")
        samples.append(
            Sample(id=name, label=label, media=media, features=feats, subtitle=transcripts.get(name, ""), reason=reason, caption=caption, grain=g, line=lineno)
        )
    if not rows and not problems.items:
        problems.add("file", "no annotation rows")
    problems.raise_if_any()
    path = write_manifest(out, samples, ls, name=f"merr:{ann.name}")
    return read_manifest(path, ls)


def convert_folder(root: str | Path, out: str | Path, *, label_set: str = "mer2023", extensions: Sequence[str] | None = None) -> Manifest:
    """Convert ``root/<label>/<clip>.<ext>`` into a manifest (see module docstring).

    Folder names are labels (aliases allowed: ``joy/`` counts as ``happy``). A
    ``<clip>.txt`` beside a clip is its transcript, ``<clip>.reason.txt`` its
    explanation. Sample ids are ``<label folder>/<clip stem>``.

    Raises:
        DatasetError: for label folders not in the label set, or no clips at all.
    """
    r = Path(root).expanduser()
    if not r.is_dir():
        raise DatasetError(f"dataset folder not found: {r}")
    ls = get_label_set(label_set)
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in (extensions or MEDIA_EXTENSIONS)}
    problems = _Problems(r)
    samples = []
    for d in sorted(x for x in r.iterdir() if x.is_dir() and not x.name.startswith(".")):
        try:
            ls.index(d.name)
        except ConfigError:
            problems.add(f"folder {d.name}/", f"not a label of {ls.id} {list(ls.labels)} (or an alias)")
            continue
        for f in sorted(x for x in d.iterdir() if x.is_file() and x.suffix.lower() in exts):
            sub = f.with_suffix(".txt")
            why = f.with_name(f.stem + ".reason.txt")
            samples.append(
                Sample(
                    id=f"{d.name}/{f.stem}",
                    label=d.name,
                    media=f,
                    subtitle=sub.read_text(encoding="utf-8").strip() if sub.is_file() else "",
                    reason=why.read_text(encoding="utf-8").strip() if why.is_file() else "",
                    grain="fine" if why.is_file() else "coarse",
                )
            )
    if not samples and not problems.items:
        problems.add("folder", f"no clips ({', '.join(sorted(exts))}) in any <label>/ sub-folder")
    problems.raise_if_any()
    path = write_manifest(out, samples, ls, name=f"folder:{r.name}")
    return read_manifest(path, ls)
