"""One colour per emotion, shared by the demo overlay and the report plots.

Colours are keyed by the *canonical* emotion (:func:`emo_stream.labels.canonical`),
so ``joy`` (MELD) and ``happy`` (MER2023) look the same everywhere. Pure Python:
no OpenCV or matplotlib import, so both the overlay and the report use it.
"""

from __future__ import annotations

#: canonical emotion -> RGB (0-255). Warm/bright for positive, cold/dark for negative.
EMOTION_RGB: dict[str, tuple[int, int, int]] = {
    "happy": (246, 190, 0),
    "surprise": (255, 127, 14),
    "neutral": (160, 160, 160),
    "sad": (31, 119, 180),
    "angry": (214, 39, 40),
    "fear": (148, 103, 189),
    "worried": (140, 86, 150),
    "disgust": (44, 160, 44),
    "contempt": (23, 190, 207),
    "doubt": (188, 189, 34),
}

#: For a label no label set knows (never expected; keeps drawing robust).
FALLBACK_RGB = (200, 200, 200)

#: Modality colours (overlay chips, report span shading).
MODALITY_RGB: dict[str, tuple[int, int, int]] = {
    "video": (120, 180, 255),
    "audio": (120, 220, 160),
    "face": (255, 160, 60),
    "voice": (80, 160, 255),
    "text": (220, 120, 220),
}


def emotion_rgb(label: str) -> tuple[int, int, int]:
    """RGB colour of an emotion label (any alias)."""
    from emo_stream.labels import canonical

    try:
        return EMOTION_RGB.get(canonical(label), FALLBACK_RGB)
    except Exception:
        return FALLBACK_RGB


def emotion_bgr(label: str) -> tuple[int, int, int]:
    """The same colour in OpenCV's BGR order."""
    r, g, b = emotion_rgb(label)
    return (b, g, r)


def emotion_mpl(label: str) -> tuple[float, float, float]:
    """The same colour as a matplotlib RGB tuple in [0, 1]."""
    r, g, b = emotion_rgb(label)
    return (r / 255.0, g / 255.0, b / 255.0)


def modality_bgr(modality: str) -> tuple[int, int, int]:
    r, g, b = MODALITY_RGB.get(modality, FALLBACK_RGB)
    return (b, g, r)


def modality_mpl(modality: str) -> tuple[float, float, float]:
    r, g, b = MODALITY_RGB.get(modality, FALLBACK_RGB)
    return (r / 255.0, g / 255.0, b / 255.0)
