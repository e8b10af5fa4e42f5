"""``emo-stream make-synthetic-set``: a small labelled audio-visual set any machine can generate.

It exists to prove that the trainer learns end to end (media -> stream
features -> projector/LoRA -> label scoring -> streaming engine), **not** to
claim real-world accuracy. What carries the label, honestly:

* **speech** (espeak-ng, Debian): a sentence with emotional wording per label
  ("What a great day!" / "I miss her so much."), spoken with label-typical
  prosody -- espeak-ng's pitch (``-p``), rate (``-s``) and amplitude (``-a``)
  set per label (happy: high and fast; sad: low, slow and quiet; angry: loud
  and fast ...), jittered per clip, in one of several voices. The sentence is
  also the sample's ``subtitle``. Formant-synthesised speech is far from
  acted emotional speech.
* **face track**: real face photographs -- scikit-image's astronaut portrait
  (Eileen Collins, smiling, colour) and a few of the 25x25 grey LFW faces in
  ``skimage.data.lfw_subset()`` (upscaled, so blurry) -- with **expression-like
  transforms**, not real expressions: image warps that bend the lower face up
  (happy) or down (sad), lower the brows (angry), stretch the face vertically
  (surprise, fear), tilt the head (doubt) ..., label-typical colour casts
  (warm, dark/blue, red, pale ...) and motion (nodding, shaking, trembling,
  drifting). A recognizer trained on this learns these cues, which real faces
  do not follow.
* ``reason``: a templated explanation naming the clues above (for the
  ``reason`` task and EMER-style overlap).

Clips are muxed with FFmpeg's libraries through PyAV (in-process: an ``ffmpeg``
process per clip costs ~0.2 s on a small machine), MPEG-4 video + AAC audio
(16 kHz mono), into ``out/clips/``; ``out/train.jsonl`` and ``out/test.jsonl`` are manifests
(:mod:`.dataset`) split per label; ``out/synthetic.json`` records every
generation parameter.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emo_stream.errors import ConfigError, EmoStreamError
from emo_stream.labels import get_label_set
from emo_stream.outputs import make_dir, write_error, write_text, writing
from emo_stream.train.dataset import Sample, write_manifest


class SyntheticSetError(EmoStreamError):
    """A tool the generator needs (espeak-ng, ffmpeg, scikit-image, OpenCV) is missing or failed."""


@dataclass(frozen=True)
class LabelStyle:
    sentences: tuple[str, ...]
    pitch: int  # espeak-ng -p, 0..99
    speed: int  # espeak-ng -s, words per minute
    amplitude: int  # espeak-ng -a, 0..200
    reason: str
    # face: (curve of the lower face: + up / - down, brow: + lowered centre / - raised centre,
    #        vertical stretch, tilt degrees, BGR gain, brightness, saturation, motion)
    mouth: float = 0.0
    brow: float = 0.0
    stretch: float = 1.0
    tilt: float = 0.0
    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    brightness: float = 1.0
    saturation: float = 1.0
    motion: str = "still"


STYLES: dict[str, LabelStyle] = {
    "happy": LabelStyle(
        ("What a great day!", "I love this, it is wonderful!", "Yes, we did it!", "That is fantastic news!", "I am so happy right now!"),
        pitch=74,
        speed=185,
        amplitude=140,
        mouth=+1.0,
        gain=(0.9, 1.0, 1.15),
        brightness=1.1,
        motion="nod",
        reason="the face is smiling and the voice sounds high and fast, so the person seems positive",
    ),
    "sad": LabelStyle(
        ("I miss her so much.", "Nothing ever works out.", "I feel so alone today.", "It is all over now.", "I lost everything."),
        pitch=26,
        speed=112,
        amplitude=75,
        mouth=-1.0,
        gain=(1.15, 0.95, 0.85),
        brightness=0.72,
        saturation=0.5,
        motion="droop",
        reason="the mouth corners are low and the voice is quiet, low and slow, so the person seems negative",
    ),
    "neutral": LabelStyle(
        ("The meeting is at three.", "Please close the door.", "The box is on the table.", "I will take the bus.", "It is a normal day."),
        pitch=48,
        speed=160,
        amplitude=100,
        motion="still",
        reason="the face is relaxed and the voice is calm and steady, so the person seems neutral",
    ),
    "angry": LabelStyle(
        ("Stop doing that right now!", "This is unacceptable!", "Get out of my way!", "I told you a hundred times!", "How dare you!"),
        pitch=55,
        speed=205,
        amplitude=190,
        brow=+1.0,
        mouth=-0.3,
        gain=(0.8, 0.85, 1.3),
        brightness=1.0,
        saturation=1.3,
        motion="shake",
        reason="the eyebrows are low and tense and the voice is loud and fast, which sounds like shouting",
    ),
    "worried": LabelStyle(
        ("What if something goes wrong?", "I hope they are okay.", "I am not sure this is safe.", "Did I forget something?", "This could go badly."),
        pitch=64,
        speed=148,
        amplitude=88,
        brow=-1.0,
        mouth=-0.3,
        gain=(1.1, 1.05, 0.9),
        saturation=0.8,
        motion="tremble",
        reason="the eyebrows are raised and the voice is soft and trembling, so the person seems tense",
    ),
    "surprise": LabelStyle(
        ("Oh wow, really?", "I can not believe it!", "What, you are here?", "No way, that is amazing!", "Whoa, look at that!"),
        pitch=90,
        speed=172,
        amplitude=150,
        brow=-0.7,
        stretch=1.15,
        brightness=1.15,
        motion="zoom",
        reason="the eyes and mouth are open with raised eyebrows and the voice has a high pitch",
    ),
    "fear": LabelStyle(
        ("Please, do not hurt me!", "Something is in the dark.", "Help, somebody help!", "I am so scared."),
        pitch=82,
        speed=212,
        amplitude=70,
        brow=-1.0,
        stretch=1.1,
        brightness=1.15,
        saturation=0.3,
        motion="tremble",
        reason="the face is pale with raised eyebrows and the voice is high, fast and trembling",
    ),
    "disgust": LabelStyle(
        ("Ugh, that smells awful.", "That is revolting.", "Get that away from me, gross."),
        pitch=35,
        speed=130,
        amplitude=120,
        mouth=-0.6,
        brow=+0.5,
        gain=(0.85, 1.2, 0.85),
        motion="recoil",
        reason="the face frowns and the voice is low and slow, which suggests a negative feeling",
    ),
    "contempt": LabelStyle(
        ("Oh please, how pathetic.", "You call that work?", "Whatever, I expected nothing."),
        pitch=40,
        speed=140,
        amplitude=110,
        mouth=+0.5,
        tilt=-6.0,
        gain=(0.85, 1.05, 1.1),
        motion="still",
        reason="one mouth corner is raised and the voice is low and slow, which suggests a negative state",
    ),
    "doubt": LabelStyle(
        ("Hmm, are you sure about that?", "I do not really believe it.", "That seems unlikely to me."),
        pitch=50,
        speed=125,
        amplitude=95,
        tilt=9.0,
        saturation=0.7,
        motion="sway",
        reason="the head is tilted and the voice is slow and soft, so the person seems not sure",
    ),
}
#: Aliases in dataset label sets (MELD "joy" ...) use their canonical style.
VOICES = ("en-us+m3", "en-us+f3", "en-gb+m1", "en-gb+f2", "en-us+m7", "en-us+f4")

#: Bounds of make_synthetic_set's arguments: a learnability set of small clips; beyond these
#: a value is a typo (``--fps 0`` used to divide by zero, ``--size 100000`` to exhaust memory).
MAX_SIZE = 1024
MAX_FPS = 120.0
MAX_SECONDS = 30.0
MAX_PER_LABEL = 10_000


def _check_tools() -> str:
    esp = shutil.which("espeak-ng")
    if esp is None:
        raise SyntheticSetError("make-synthetic-set needs espeak-ng (Debian: apt-get install espeak-ng)")
    return esp


def _mux(path: Path, frames: np.ndarray, fps: float, wav: Path, seconds: float) -> None:
    """MPEG-4 video + AAC 16 kHz mono audio into ``path`` with FFmpeg's libraries (PyAV), in-process."""
    import fractions

    import av

    with av.open(str(wav)) as src:
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=16000)
        chunks = []
        for fr in src.decode(audio=0):
            for out in resampler.resample(fr):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    audio = np.concatenate(chunks).astype(np.float32)[: int(round(seconds * 16000))]
    tmp = path.with_name(path.name + ".partial.mp4")
    with av.open(str(tmp), "w") as c:
        vs = c.add_stream("mpeg4", rate=fractions.Fraction(fps).limit_denominator(1000))
        vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        vs.options = {"qscale": "3"}
        aus = c.add_stream("aac", rate=16000)
        aus.layout = "mono"
        for f in frames:
            for pkt in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="bgr24")):
                c.mux(pkt)
        for pkt in vs.encode():
            c.mux(pkt)
        for i in range(0, audio.size, 1024):
            fr = av.AudioFrame.from_ndarray(audio[None, i : i + 1024], format="fltp", layout="mono")
            fr.sample_rate = 16000
            for pkt in aus.encode(fr):
                c.mux(pkt)
        for pkt in aus.encode():
            c.mux(pkt)
    tmp.replace(path)


def _faces(n_lfw: int, size: int) -> list[tuple[str, np.ndarray]]:
    """(name, BGR uint8 face, size x size): the astronaut portrait and ``n_lfw`` LFW faces."""
    try:
        import cv2
        from skimage import data
    except ImportError as exc:
        raise SyntheticSetError(f"make-synthetic-set needs scikit-image and OpenCV ({exc}); pip install scikit-image opencv-python-headless") from None
    astro = data.astronaut()[20:230, 145:330]  # her face, RGB
    out = [("astronaut", cv2.resize(astro[:, :, ::-1], (size, size), interpolation=cv2.INTER_AREA))]
    lfw = data.lfw_subset()[:100]  # the first 100 are faces (25x25 grey, float 0..1)
    for i in np.linspace(0, 99, num=max(0, n_lfw)).astype(int) if n_lfw else []:
        g = (np.clip(lfw[i], 0, 1) * 255).astype(np.uint8)
        g = cv2.resize(g, (size, size), interpolation=cv2.INTER_CUBIC)
        out.append((f"lfw{i:03d}", np.stack([g, g, g], axis=-1)))
    return out


def _expression(face: np.ndarray, st: LabelStyle, strength: float) -> np.ndarray:
    """Apply the style's warp (mouth curve, brow, stretch, tilt) and colour to a face."""
    import cv2

    h, w = face.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (xx - (w - 1) / 2) / (w / 2)  # -1..1 across
    v = yy / (h - 1)  # 0 top .. 1 bottom
    dy = np.zeros_like(xx)
    lower = np.clip((v - 0.55) / 0.45, 0, 1)
    dy += strength * st.mouth * 0.09 * h * (u**2) * np.sin(math.pi * lower)  # corners up (+) / down (-): sample lower
    upper = np.clip(1 - np.abs(v - 0.33) / 0.15, 0, 1)
    dy += -strength * st.brow * 0.06 * h * (1 - np.abs(u)) * upper  # + lowers the centre of the brows
    map_y = yy + dy
    cy = (h - 1) / 2
    map_y = cy + (map_y - cy) / (1 + (st.stretch - 1) * strength)
    warped = cv2.remap(face, xx, map_y.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if st.tilt:
        m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), st.tilt * strength, 1.0)
        warped = cv2.warpAffine(warped, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    img = warped.astype(np.float32)
    grey = img.mean(axis=2, keepdims=True)
    sat = 1 + (st.saturation - 1) * strength
    img = grey + (img - grey) * sat
    gain = 1 + (np.asarray(st.gain, dtype=np.float32) - 1) * strength
    img = img * gain * (1 + (st.brightness - 1) * strength)
    return np.clip(img, 0, 255).astype(np.uint8)


def _motion(kind: str, t: float, rng_phase: float) -> tuple[float, float, float]:
    """(dx, dy, scale) of the face at time ``t`` (pixels at 64 px)."""
    if kind == "nod":
        return 0.0, 1.5 * math.sin(2 * math.pi * 2.0 * t + rng_phase), 1.0
    if kind == "droop":
        return 0.0, min(3.0, 2.0 * t), 1.0
    if kind == "shake":
        return 2.5 * math.sin(2 * math.pi * 6.0 * t + rng_phase), 0.0, 1.0
    if kind == "tremble":
        return 0.8 * math.sin(2 * math.pi * 11.0 * t + rng_phase), 0.8 * math.sin(2 * math.pi * 13.0 * t), 1.0
    if kind == "zoom":
        return 0.0, 0.0, 1.0 + 0.12 * min(1.0, t / 0.3)
    if kind == "recoil":
        return -min(3.0, 4.0 * t), -min(1.5, 2.0 * t), 1.0
    if kind == "sway":
        return 2.0 * math.sin(2 * math.pi * 0.8 * t + rng_phase), 0.0, 1.0
    return 0.0, 0.0, 1.0


def _render_frames(face: np.ndarray, st: LabelStyle, n: int, fps: float, size: int, background: tuple[int, int, int], phase: float) -> np.ndarray:
    import cv2

    side = int(round(size * 0.88))
    frames = np.empty((n, size, size, 3), dtype=np.uint8)
    for k in range(n):
        t = k / fps
        onset = min(1.0, 0.35 + t / 0.4)  # the expression builds up over the first 0.4 s
        expr = _expression(cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA), st, onset)
        dx, dy, scale = _motion(st.motion, t, phase)
        m = np.array([[scale, 0, (size - side * scale) / 2 + dx], [0, scale, (size - side * scale) / 2 + dy]], dtype=np.float32)
        canvas = np.empty((size, size, 3), dtype=np.uint8)
        canvas[:] = background
        frames[k] = cv2.warpAffine(expr, m, (size, size), dst=canvas, borderMode=cv2.BORDER_TRANSPARENT)
    return frames


def _wav_duration(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / float(w.getframerate())


@dataclass(frozen=True)
class SyntheticSet:
    root: Path
    train: Path
    test: Path
    n_clips: int
    labels: tuple[str, ...]


def make_synthetic_set(
    out: str | Path,
    *,
    label_set: str = "mer2023",
    labels: Sequence[str] | None = None,
    per_label: int = 10,
    test_fraction: float = 0.3,
    seed: int = 0,
    size: int = 64,
    fps: float = 15.0,
    max_seconds: float = 2.0,
    lfw_faces: int = 6,
    progress: bool = True,
    overwrite: bool = False,
) -> SyntheticSet:
    """Generate the set (see module docstring) into ``out``.

    Args:
        label_set: the label set the manifests use.
        labels: a subset of its labels (default: all).
        per_label: clips per label; ``test_fraction`` of them (at least one) go to ``test.jsonl``.
        seed: everything random (sentence, voice, jitter, face, background) derives from it.
        size, fps: video frame size (square) and rate.
        max_seconds: clips are cut to this length (sentences are 1-2 s).
        lfw_faces: LFW identities besides the astronaut.
    """
    esp = _check_tools()
    ls = get_label_set(label_set)
    chosen = list(labels) if labels else list(ls.labels)
    for lab in chosen:
        ls.index(lab)
    from emo_stream.labels import canonical

    styles = {}
    for lab in chosen:
        c = canonical(lab)
        if c not in STYLES:
            raise ConfigError(f"no synthetic style for emotion {c!r}; available: {sorted(STYLES)}")
        styles[lab] = STYLES[c]
    if per_label < 2:
        raise ConfigError("per_label must be >= 2 (one train and one test clip at least)")
    if not 0 < test_fraction < 1:
        raise ConfigError("test_fraction must be in (0, 1)")
    if size < 16 or size % 2 or size > MAX_SIZE:
        raise ConfigError(f"size must be an even number in [16, {MAX_SIZE}], got {size}")
    if not (math.isfinite(fps) and 1 <= fps <= MAX_FPS):
        raise ConfigError(f"fps must be a number in [1, {MAX_FPS:g}], got {fps}")
    if not (math.isfinite(max_seconds) and 0.2 <= max_seconds <= MAX_SECONDS):
        raise ConfigError(f"max_seconds must be a number in [0.2, {MAX_SECONDS:g}], got {max_seconds}")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    if per_label > MAX_PER_LABEL:
        raise ConfigError(f"per_label must be <= {MAX_PER_LABEL}, got {per_label}")
    root = Path(out).expanduser()
    if (root / "train.jsonl").exists() and not overwrite:
        raise ConfigError(f"{root} already holds a synthetic set; pass --overwrite to regenerate it")
    clips = root / "clips"
    if clips.exists() and overwrite:
        with writing(clips):
            shutil.rmtree(clips)
    make_dir(clips)
    faces = _faces(lfw_faces, 128)
    rng = np.random.default_rng(seed)
    n_test = max(1, int(round(per_label * test_fraction)))
    train: list[Sample] = []
    test: list[Sample] = []
    params: list[dict[str, object]] = []
    from emo_stream.progress import progress_bar

    bar = progress_bar(per_label * len(chosen), 0, "synthesize", progress, unit="clip")
    with tempfile.TemporaryDirectory(prefix="emo-synth-") as tmpd:
        tmp = Path(tmpd)
        try:
            for lab in chosen:
                st = styles[lab]
                for k in range(per_label):
                    sid = f"{canonical(lab)}_{k:03d}"
                    sentence = st.sentences[int(rng.integers(len(st.sentences)))]
                    voice = VOICES[int(rng.integers(len(VOICES)))]
                    pitch = int(np.clip(st.pitch + rng.integers(-6, 7), 0, 99))
                    speed = int(np.clip(st.speed + rng.integers(-12, 13), 80, 450))
                    amp = int(np.clip(st.amplitude + rng.integers(-10, 11), 10, 200))
                    face_name, face = faces[int(rng.integers(len(faces)))]
                    bg = tuple(int(x) for x in rng.integers(30, 226, size=3))
                    phase = float(rng.uniform(0, 2 * math.pi))
                    wav = tmp / f"{sid}.wav"
                    r = subprocess.run(
                        [esp, "-v", voice, "-p", str(pitch), "-s", str(speed), "-a", str(amp), "-w", str(wav), sentence], capture_output=True, text=True
                    )
                    if r.returncode != 0 or not wav.is_file():
                        raise SyntheticSetError(f"espeak-ng failed for {sid}: {r.stderr.strip()[:200]}")
                    dur = min(max_seconds, _wav_duration(wav))
                    n = max(2, int(math.ceil(dur * fps)))
                    frames = _render_frames(face, st, n, fps, size, bg, phase)  # type: ignore[arg-type]
                    mp4 = clips / f"{sid}.mp4"
                    try:
                        _mux(mp4, frames, fps, wav, dur)
                    except OSError as exc:  # full disk, read-only folder (PyAV's errors are OSErrors)
                        raise write_error(mp4, exc) from None
                    except Exception as exc:
                        raise SyntheticSetError(f"muxing {sid} with FFmpeg (PyAV) failed: {exc}") from None
                    meta = {"voice": voice, "pitch": pitch, "speed": speed, "amplitude": amp, "face": face_name, "motion": st.motion, "seconds": round(dur, 3)}
                    s = Sample(id=sid, label=lab, media=mp4, subtitle=sentence, reason=st.reason, grain="fine", meta=meta)
                    (test if k >= per_label - n_test else train).append(s)
                    params.append({"id": sid, "label": lab, "sentence": sentence, **meta})
                    bar.update(1)
        finally:
            bar.close()
    train_p = write_manifest(root / "train.jsonl", train, ls, name="synthetic-train")
    test_p = write_manifest(root / "test.jsonl", test, ls, name="synthetic-test")
    info = {
        "what": "emo_stream synthetic learnability set: espeak-ng speech with emotional wording and label-typical prosody, "
        "real face photos (scikit-image astronaut + LFW subset) with expression-LIKE warps, colour casts and motion. "
        "It proves the trainer learns end to end; it says nothing about real-world accuracy.",
        "label_set": ls.id,
        "labels": chosen,
        "per_label": per_label,
        "test_per_label": n_test,
        "seed": seed,
        "size": size,
        "fps": fps,
        "max_seconds": max_seconds,
        "voices": list(VOICES),
        "styles": {lab: {k: v for k, v in styles[lab].__dict__.items() if k != "sentences"} | {"sentences": list(styles[lab].sentences)} for lab in chosen},
        "clips": params,
    }
    write_text(root / "synthetic.json", json.dumps(info, indent=2, default=list))
    return SyntheticSet(root, train_p, test_p, len(params), tuple(chosen))
