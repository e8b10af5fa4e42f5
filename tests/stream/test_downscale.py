"""emo_stream.stream.downscale: the one max_frame_side implementation (issue 15)."""

import numpy as np

from emo_stream.stream.downscale import downscale, scaled_size


def test_scaled_size_keeps_aspect_and_never_enlarges():
    assert scaled_size(1920, 1080, 640) == (640, 360)
    assert scaled_size(1080, 1920, 640) == (360, 640)
    assert scaled_size(320, 240, 640) == (320, 240)
    assert scaled_size(320, 240, None) == (320, 240)
    assert scaled_size(5000, 1, 16) == (16, 1)  # the short side never rounds to 0


def test_downscale_resizes_only_frames_over_the_limit():
    img = np.zeros((480, 640, 3), np.uint8)
    img[:, 320:] = 200
    small = downscale(img, 320)
    assert small.shape == (240, 320, 3) and small.dtype == np.uint8
    assert small[:, :150].max() == 0 and small[:, 170:].min() == 200  # area averaging, edges kept
    assert downscale(img, 640) is img and downscale(img, None) is img
