import time

from emo_stream.perception.face import FaceDetectorConfig, make_face_detector, select_primary
from emo_stream.stream.samples import VideoFrame
from emo_stream.stream.sources.media_file import MediaFileSource

dets = {side: make_face_detector(FaceDetectorConfig(max_side=side)) for side in (8192, 480, 320)}
for clip in ("megamind.avi", "astronaut_speech.mp4", "astronaut_3s_noaudio.mp4"):
    src = MediaFileSource(f".cache/media/{clip}")
    src.open()
    frames = [s for s in src.samples() if isinstance(s, VideoFrame)]
    src.close()
    out = {}
    for side, d in dets.items():
        t = time.perf_counter()
        found = 0
        boxes = []
        for f in frames:
            b = select_primary(d.detect(f.image), f.image.shape)
            found += b is not None
            boxes.append(b)
        out[side] = (found, (time.perf_counter() - t) / len(frames) * 1e3, boxes)
    full = out[8192][2]

    def iou(a, b):
        x1, y1 = max(a.x, b.x), max(a.y, b.y)
        x2, y2 = min(a.x + a.w, b.x + b.w), min(a.y + a.h, b.y + b.h)
        i = max(0, x2 - x1) * max(0, y2 - y1)
        return i / (a.w * a.h + b.w * b.h - i)

    for side, (found, ms, boxes) in out.items():
        both = [(a, b) for a, b in zip(full, boxes) if a is not None and b is not None]
        lost = sum(a is not None and b is None for a, b in zip(full, boxes))
        miou = sum(iou(a, b) for a, b in both) / max(1, len(both))
        print(
            f"{clip} {frames[0].image.shape[1]}x{frames[0].image.shape[0]} side={side}: primary face in {found}/{len(frames)} frames, lost vs full {lost}, mean IoU vs full {miou:.3f}, {ms:.1f} ms/frame (loaded machine)"
        )
