"""Offline trainer and evaluation for the Emotion-LLaMA family.

The path from labelled clips to a model the stream runs::

    clips + labels ──► manifest (.jsonl)        emo_stream.train.dataset   (+ MERR / folder converters)
                   ──► feature cache            emo_stream.train.features  (`emo-stream features`)
                   ──► stages of tuning         emo_stream.train.trainer   (`emo-stream train`)
                   ──► RUN/model/               EmotionLlama.save_pretrained
                   ──► metrics, predictions     emo_stream.train.evaluate  (`emo-stream eval`)
                   ──► `emo-stream run --engine emotion-llama --weights RUN/model`, `emo-stream export`

* :mod:`.dataset` -- the manifest format (one JSON object per clip: media or
  precomputed features, start/end, subtitle, label, reason), its reader with
  line-numbered errors, and converters from Emotion-LLaMA's MERR layout and
  from ``root/<label>/<clip>`` folders.
* :mod:`.features` -- runs the frozen encoders once per clip *through the
  streaming engine itself* (same sources, scheduler, frame selection, face view
  and preprocessing as ``emo-stream run``) into a sharded safetensors cache with
  an index; resumable; fingerprinted by the encoders' weights.
* :mod:`.trainer` -- Emotion-LLaMA's instruction tuning on the cached features:
  answer-token loss under Emotion-LLaMA's prompt template and task pools;
  stages (projector only, then LoRA + projector) with Emotion-LLaMAv2's
  perception-to-cognition curriculum; AdamW, cosine LR with warmup, mixed
  precision where available, gradient accumulation; atomic checkpoints with
  optimizer/scheduler/RNG state and exact ``--resume``; torchrun DDP or FSDP.
* :mod:`.evaluate` / :mod:`.metrics` -- weighted F1 (MER2023, as Emotion-LLaMA
  computes it), accuracy = WAR, UAR (DFEW), confusion matrix PNG, per-sample
  predictions, MER-UniBench-style open-label hit rate.
* :mod:`.judge` -- EMER-style clue/label overlap by a local judge (llama.cpp
  GGUF or lexical), an approximation of EMER's ChatGPT scoring.
* :mod:`.synthetic` -- ``emo-stream make-synthetic-set``: espeak-ng speech and
  real face photos with expression-like transforms, to prove the trainer
  learns end to end on any machine (not a claim of real-world accuracy).
* :mod:`.cli` -- the ``features``, ``train``, ``eval``, ``make-synthetic-set``
  and ``dataset`` sub-commands.

The tiny test model (``model.tiny``) has random, frozen, seeded encoders and
LLM: the features it caches carry the synthetic set's cues through random
projections, and only the projector and LoRA learn. See
``configs/train/README.md`` for the commands and measured numbers.
"""
