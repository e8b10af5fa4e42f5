"""Message <-> numpy/EmotionState conversions, in-process (no DDS), on real media."""

from __future__ import annotations

import math

import numpy as np
import pytest
from emo_msgs.msg import AudioDataStamped
from emo_msgs.msg import EmotionState as EmotionStateMsg
from rclpy.serialization import deserialize_message, serialize_message
from ros_helpers import read_rgb_astronaut
from sensor_msgs.msg import CompressedImage, Image

from emo_stream.labels import get_label_set
from emo_stream.state import EmotionState
from emo_stream.stream.samples import AudioChunk, VideoFrame
from emo_stream.stream.sources.media_file import read_audio
from emo_stream.stream.sources.push import PushSource
from emo_stream_ros import bag
from emo_stream_ros.conversions import (
    MalformedInput,
    array_to_audio,
    audio_to_array,
    bgr_to_compressed,
    bgr_to_image,
    compressed_to_bgr,
    image_to_bgr,
    msg_to_state,
    ns_to_stamp,
    stamp_to_ns,
    state_to_msg,
)
from emo_stream_ros.inputs import InputCounters, StampOrigin, TopicInput

pytestmark = pytest.mark.ros  # rclpy: runs in .venv-ros (scripts/ros_test.sh)


@pytest.fixture
def astronaut(media):
    return read_rgb_astronaut(media)


def _raw(img_bytes: bytes, w: int, h: int, enc: str, step: int, big: int = 0) -> Image:
    m = Image()
    m.width, m.height, m.encoding, m.step, m.is_bigendian = w, h, enc, step, big
    m.data = img_bytes
    return m


# -- images ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["bgr8", "rgb8"])
def test_image_round_trip_is_exact(astronaut, encoding):
    msg = bgr_to_image(astronaut, stamp_ns=1_700_000_000_123_456_789, frame_id="cam", encoding=encoding)
    msg = deserialize_message(serialize_message(msg), Image)  # through CDR, as on the wire
    assert msg.encoding == encoding and msg.step == 512 * 3 and stamp_to_ns(msg.header.stamp) == 1_700_000_000_123_456_789
    out = image_to_bgr(msg)
    assert out.dtype == np.uint8 and out.shape == (512, 512, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, astronaut)


def test_image_other_encodings_padding_and_16_bit(astronaut):
    h, w = 64, 48
    img = np.ascontiguousarray(astronaut[:h, :w])
    # bgra8 / rgba8 with alpha, and row padding (step > row)
    bgra = np.concatenate([img, np.full((h, w, 1), 7, np.uint8)], axis=2)
    padded = np.zeros((h, w * 4 + 12), np.uint8)
    padded[:, : w * 4] = bgra.reshape(h, -1)
    np.testing.assert_array_equal(image_to_bgr(_raw(padded.tobytes(), w, h, "bgra8", w * 4 + 12)), img)
    rgba = bgra[:, :, [2, 1, 0, 3]]
    np.testing.assert_array_equal(image_to_bgr(_raw(rgba.tobytes(), w, h, "rgba8", w * 4)), img)
    # mono8 -> 3 equal channels
    grey = img[:, :, 1].copy()
    out = image_to_bgr(_raw(grey.tobytes(), w, h, "mono8", w))
    assert out.shape == (h, w, 3) and (out == grey[:, :, None]).all()
    # mono16 little and big endian -> high byte
    g16 = grey.astype(np.uint16) * 256 + 3
    np.testing.assert_array_equal(image_to_bgr(_raw(g16.astype("<u2").tobytes(), w, h, "mono16", w * 2))[:, :, 0], grey)
    np.testing.assert_array_equal(image_to_bgr(_raw(g16.astype(">u2").tobytes(), w, h, "16UC1", w * 2, big=1))[:, :, 0], grey)


def test_malformed_images_are_rejected_with_a_reason(astronaut):
    good = bgr_to_image(astronaut[:8, :8])
    cases = {
        "encoding": _raw(bytes(good.data), 8, 8, "yuv422_yuy2", 24),
        "size": _raw(bytes(good.data)[:-1], 8, 8, "bgr8", 24),  # one byte short
        "size ": _raw(bytes(good.data), 8, 8, "bgr8", 16),  # step smaller than a row
        "empty": _raw(b"", 8, 8, "bgr8", 24),
        "empty ": _raw(bytes(good.data), 0, 8, "bgr8", 24),
    }
    for reason, msg in cases.items():
        with pytest.raises(MalformedInput) as exc:
            image_to_bgr(msg)
        assert exc.value.reason == reason.strip(), (reason, exc.value)


def test_compressed_round_trip_and_garbage(astronaut):
    png = bgr_to_compressed(astronaut, 5, fmt="png")
    assert png.format == "png"
    np.testing.assert_array_equal(compressed_to_bgr(deserialize_message(serialize_message(png), CompressedImage)), astronaut)
    jpg = compressed_to_bgr(bgr_to_compressed(astronaut, fmt="jpeg", quality=95))
    assert jpg.shape == astronaut.shape and np.abs(jpg.astype(int) - astronaut).mean() < 4
    bad = CompressedImage(format="jpeg", data=b"not a jpeg at all")
    with pytest.raises(MalformedInput) as exc:
        compressed_to_bgr(bad)
    assert exc.value.reason == "encoding"
    with pytest.raises(MalformedInput) as exc:
        compressed_to_bgr(CompressedImage(format="jpeg"))
    assert exc.value.reason == "empty"


# -- audio ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt,tol", [("S16LE", 1 / 32767), ("F32LE", 0), ("S32LE", 1e-7), ("U8", 1 / 127)])
def test_audio_round_trip(media, fmt, tol):
    speech = read_audio(media / "librivox_0870.wav", 16000)[:1600]
    msg = deserialize_message(serialize_message(array_to_audio(speech, 16000, 42, "mic", fmt)), AudioDataStamped)
    assert msg.info.sample_format == fmt and msg.info.channels == 1 and msg.info.sample_rate == 16000
    pcm, rate, ch = audio_to_array(msg)
    assert rate == 16000 and ch == 1 and pcm.shape == (1600, 1)
    from emo_stream.stream.sources.audio_convert import to_float

    back = to_float(pcm[:, 0]) if fmt != "U8" else (pcm[:, 0].astype(np.float32) - 128) / 128
    assert np.max(np.abs(back - speech)) <= tol + 1e-6


def test_malformed_audio_is_rejected_with_a_reason():
    ok = array_to_audio(np.zeros(160, np.float32), 16000)
    bad_fmt = array_to_audio(np.zeros(160, np.float32), 16000)
    bad_fmt.info.sample_format = "S24LE"
    odd = array_to_audio(np.zeros(160, np.float32), 16000)
    odd.audio.data = bytes(odd.audio.data)[:-1]
    empty = array_to_audio(np.zeros(0, np.float32), 16000)
    no_rate = array_to_audio(np.zeros(160, np.float32), 16000)
    no_rate.info.sample_rate = 0
    audio_to_array(ok)
    for msg, reason in ((bad_fmt, "encoding"), (odd, "size"), (empty, "empty"), (no_rate, "encoding")):
        with pytest.raises(MalformedInput) as exc:
            audio_to_array(msg)
        assert exc.value.reason == reason


# -- topic input: stamps, order, resampling ------------------------------------------------------------
def test_topic_input_stamps_order_and_resampling(media, astronaut):
    """44.1 kHz stereo speech in 1024-frame chunks -> 16 kHz mono with continuous stamps; out-of-order skipped."""
    import av

    push = PushSource({"video", "audio"}, clock="ros")
    push.open()
    counters = InputCounters()
    origin = StampOrigin()
    ti = TopicInput(push, origin, 16000, counters, max_frame_side=128)
    t0 = 1_795_000_000_250_000_000  # an epoch-sized stamp: relative seconds must stay exact
    with av.open(str(media / "speech_stereo_44k.wav")) as c:
        pcm = np.concatenate([f.to_ndarray().reshape(-1, 2) for f in c.decode(audio=0)])
    assert pcm.dtype == np.int16
    n = 0
    for i in range(0, 44100, 1024):  # the first second
        chunk = pcm[i : i + 1024]
        m = AudioDataStamped()
        m.header.stamp = ns_to_stamp(t0 + int(round(i * 1e9 / 44100)))
        m.info.channels, m.info.sample_rate, m.info.sample_format, m.info.coding_format = 2, 44100, "S16LE", "raw"
        m.audio.data = chunk.astype("<i2").tobytes()
        ti.on_audio(m)
        n += 1
    ti.on_image(bgr_to_image(astronaut, t0 + 500_000_000, "cam"))
    ti.on_image(bgr_to_image(astronaut, t0 + 400_000_000, "cam"))  # older than the previous: skipped
    late = AudioDataStamped()
    late.header.stamp = ns_to_stamp(t0)
    late.info.channels, late.info.sample_rate, late.info.sample_format = 1, 16000, "S16LE"
    late.audio.data = b"\x00\x00" * 16
    ti.on_audio(late)
    push.end()
    samples = list(push.samples())
    audio = [s for s in samples if isinstance(s, AudioChunk)]
    frames = [s for s in samples if isinstance(s, VideoFrame)]
    assert counters.audio_chunks == n and counters.images == 1
    assert counters.malformed == {"image_out_of_order": 1, "audio_out_of_order": 1}
    assert origin.origin_ns == 1_795_000_000_000_000_000
    assert frames[0].t == pytest.approx(0.75, abs=1e-9) and frames[0].image.shape == (128, 128, 3)
    # continuous 16 kHz mono: each chunk starts where the previous ended
    assert audio[0].t == pytest.approx(0.25, abs=1e-9)
    for a, b in zip(audio, audio[1:]):
        assert b.t == pytest.approx(a.end, abs=1e-6)
    total = sum(a.samples.size for a in audio)
    assert abs(total - (n * 1024) * 16000 / 44100) < 64  # the resampler holds back a few samples
    assert origin.to_ns(frames[0].t) == t0 + 500_000_000


# -- EmotionState -------------------------------------------------------------------------------------
def _state(**kw) -> EmotionState:
    args = dict(
        label_set=get_label_set("mer2023"),
        probabilities=[0.1, 0.2, 0.4, 0.1, 0.1, 0.1],
        window_start=0.5,
        window_end=2.5,
        sequence=4,
        model_id="test-model",
        valence=0.3,
        arousal=-0.2,
        modalities=["video", "audio", "face"],
        rationale="smiling, calm voice",
        rationale_age_s=0.0,
        latency_ms={"engine": 12.5, "pipeline": 13.0},
        flags=["audio_gap"],
        signals={"motion_energy": 0.01},
        clock="ros",
        transcript="hello there",
        person_id="p2",
    )
    args.update(kw)
    return EmotionState.build(**args)


def test_state_message_round_trip_carries_every_field():
    origin = 1_795_000_000_000_000_000
    st = _state()
    msg = state_to_msg(
        st, window_start_ns=origin + 500_000_000, window_end_ns=origin + 2_500_000_000, frame_id="cam", publish_rationale=True, publish_transcript=True
    )
    msg = deserialize_message(serialize_message(msg), EmotionStateMsg)
    assert msg.schema_version == EmotionStateMsg.SCHEMA_VERSION == 1
    assert stamp_to_ns(msg.header.stamp) == stamp_to_ns(msg.window_end) == origin + 2_500_000_000
    assert msg.header.frame_id == "cam" and msg.source_clock == "ros"
    back = msg_to_state(msg)
    for field in (
        "sequence",
        "label_set",
        "labels",
        "top_label",
        "modalities",
        "rationale",
        "rationale_age_s",
        "model_id",
        "flags",
        "transcript",
        "clock",
        "person_id",
    ):
        assert getattr(back, field) == getattr(st, field), field
    assert back.probabilities == pytest.approx(st.probabilities)
    assert back.confidence == pytest.approx(st.confidence)
    assert back.valence == pytest.approx(0.3, abs=1e-6) and back.arousal == pytest.approx(-0.2, abs=1e-6)
    assert back.latency_ms == st.latency_ms and back.signals == pytest.approx(st.signals)
    assert back.window_end == pytest.approx(origin / 1e9 + 2.5, abs=1e-6)
    # every Python field has a home in the message
    names = set(EmotionStateMsg.get_fields_and_field_types())
    py_to_msg = {"stamp": "header", "clock": "source_clock"}
    for field in EmotionState.__dataclass_fields__:
        assert py_to_msg.get(field, field) in names, field


def test_state_message_optional_fields_and_privacy():
    st = _state(valence=None, arousal=None, rationale_age_s=None, clock="media")
    msg = state_to_msg(st, window_start_ns=10_500_000_000, window_end_ns=12_500_000_000, source_offset_s=10.0)
    assert math.isnan(msg.valence) and math.isnan(msg.arousal) and msg.rationale_age_s == -1.0
    assert msg.rationale == "" and msg.transcript == ""  # not opted in
    back = msg_to_state(msg, source_time=True)
    assert back.valence is None and back.arousal is None and back.rationale_age_s is None
    assert back.clock == "media" and back.window_start == pytest.approx(0.5) and back.window_end == pytest.approx(2.5)


def test_state_message_person_id_default_and_malformed():
    """No tracker: person_id "" both ways (the primary person, as before); an id that
    is no ROS name token is refused by the state's own check (a ValueError the
    consumer catches), never a crash deeper down."""
    msg = state_to_msg(_state(person_id=""), window_start_ns=0, window_end_ns=2_000_000_000)
    assert msg.person_id == "" and msg_to_state(msg).person_id == ""
    msg.person_id = "p 1/x"
    with pytest.raises(ValueError, match="person_id"):
        msg_to_state(msg)


def test_rosbags_typestore_agrees_with_the_generated_messages():
    """The .msg files rosbags reads and the C-generated types agree on the wire format
    (compared field by field: CDR padding bytes are not defined)."""
    store = bag.typestore()
    st = _state()
    msg = state_to_msg(st, window_start_ns=1, window_end_ns=2_000_000_001, publish_rationale=True, publish_transcript=True)
    raw = serialize_message(msg)
    other = store.deserialize_cdr(raw, "emo_msgs/msg/EmotionState")
    assert deserialize_message(bytes(store.serialize_cdr(other, "emo_msgs/msg/EmotionState")), EmotionStateMsg) == deserialize_message(raw, EmotionStateMsg)
    assert msg_to_state(other).labels == st.labels
    audio = array_to_audio(np.linspace(-1, 1, 320, dtype=np.float32), 16000, 7)
    raw = serialize_message(audio)
    other = store.deserialize_cdr(raw, "emo_msgs/msg/AudioDataStamped")
    assert deserialize_message(bytes(store.serialize_cdr(other, "emo_msgs/msg/AudioDataStamped")), AudioDataStamped) == audio
