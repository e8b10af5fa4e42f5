"""Converting timm-style ViT checkpoints (EVA, MAE, VideoMAE) onto transformers modules.

The encoders Emotion-LLaMA reads were trained with code built on timm's
``VisionTransformer`` blocks, so their checkpoints share one layout per block
(``blocks.{i}.norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1/fc2``)
and differ only in the attention bias (a full ``qkv.bias`` in timm/MAE,
``q_bias`` + ``v_bias`` with no k bias in EVA and VideoMAE -- exactly a zero k
bias), optional layer scale (``gamma_1/2``), the embeddings and what surrounds
the encoder (MAE's decoder, VideoMAE's ``encoder.`` prefix). This module maps
one block at a time onto whichever spelling the installed transformers uses
(``layers.{i}.attention.q_proj`` in newer ViT/ViTMAE, ``encoder.layer.{i}...query``
elsewhere), so a converter only lists its own extra keys.

Conversions print one progress line to stderr (what was read, how many tensors
were mapped and which were skipped on purpose): a 1.2 GB checkpoint takes a
while, and the skipped keys are what a user checks first when features differ.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from emo_stream.errors import ModelFileError

#: The per-block tensors every timm-style ViT checkpoint has.
BLOCK_PARTS = (
    "norm1.weight",
    "norm1.bias",
    "attn.qkv.weight",
    "attn.proj.weight",
    "attn.proj.bias",
    "norm2.weight",
    "norm2.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
)
_STATE_KEYS = ("model", "module", "state_dict")


def read_torch_checkpoint(path: str | Path, what: str, how: str) -> dict[str, Tensor]:
    """The tensors of a ``.pth`` checkpoint, read with ``weights_only=True``.

    Unwraps the training-loop dict (``{'model': sd, 'optimizer': ...}`` as MAE,
    VideoMAE and MiniGPT runners save it, or ``module`` / ``state_dict``).
    Raises one ModelFileError for a missing file, a file that needs code to
    unpickle, or something that is not a dict of tensors.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"{what} checkpoint {p} not found. {how}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ModelFileError(f"{what} checkpoint {p} cannot be read as plain tensors ({type(exc).__name__}: {first})") from None
    if isinstance(obj, Mapping):
        for key in _STATE_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        kind = type(obj).__name__ if not isinstance(obj, Mapping) else f"a dict with keys {sorted(map(str, obj))[:6]}"
        raise ModelFileError(f"{what} checkpoint {p} is not a state dict of tensors (found {kind}). {how}")
    return {str(k): v for k, v in obj.items()}


def strip_prefix(sd: Mapping[str, Tensor], prefixes: Iterable[str]) -> dict[str, Tensor]:
    """Drop the first matching wrapper prefix (``module.``, ``encoder.``, ...) from every key that has it."""
    out: dict[str, Tensor] = {}
    prefixes = tuple(prefixes)
    for k, v in sd.items():
        for pre in prefixes:
            if k.startswith(pre):
                k = k[len(pre) :]
                break
        out[k] = v
    return out


def report_conversion(what: str, source: Any, mapped: int, ignored: Mapping[str, str]) -> None:
    """One progress line on stderr: ``emo-stream: <what>: converted N tensors from SRC (skipped M: reason (e.g. key), ...)``."""
    src = f" from {source}" if isinstance(source, (str, Path)) else ""
    by_reason: dict[str, list[str]] = {}
    for key, why in ignored.items():
        by_reason.setdefault(why, []).append(key)
    skipped = "; ".join(f"{len(keys)} {why} (e.g. {keys[0]})" for why, keys in by_reason.items())
    tail = f"; skipped {sum(map(len, by_reason.values()))}: {skipped}" if by_reason else ""
    print(f"emo-stream: {what}: converted {mapped} tensors{src}{tail}", file=sys.stderr, flush=True)


def pick(target_keys: Any, *candidates: str) -> str:
    """The first of ``candidates`` that the target module has (transformers renamed ViT keys across versions)."""
    for c in candidates:
        if c in target_keys:
            return c
    raise ModelFileError(f"none of {candidates} exists in this transformers model (unsupported transformers version?)")


def missing_block_keys(sd: Mapping[str, Tensor], depth: int) -> list[str]:
    return [f"blocks.{i}.{part}" for i in range(depth) for part in BLOCK_PARTS if f"blocks.{i}.{part}" not in sd]


def resize_grid_pos_embed(pos: Tensor, n_extra: int, grid: tuple[int, ...], old_grid: tuple[int, ...] | None = None) -> Tensor:
    """Resize learned/sinusoid position embeddings bicubically to a new spatial grid (``interpolate_pos_embed``).

    ``pos`` is (1, n_extra + prod(old_grid), D); ``grid`` is (H, W) or (T, H, W)
    (a temporal axis, as VideoMAE's, is kept and only H, W are resized).
    Extra tokens (CLS) are kept as they are.
    """
    d = pos.shape[-1]
    extra, rest = pos[:, :n_extra], pos[:, n_extra:]
    if old_grid is None:
        side = int(round(math.sqrt(rest.shape[1] / (grid[0] if len(grid) == 3 else 1))))
        old_grid = ((grid[0],) if len(grid) == 3 else ()) + (side, side)
    if tuple(old_grid) == tuple(grid):
        return pos
    t = grid[0] if len(grid) == 3 else 1
    x = rest.reshape(t, old_grid[-2], old_grid[-1], d).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=tuple(grid[-2:]), mode="bicubic", align_corners=False)
    x = x.permute(0, 2, 3, 1).reshape(1, t * grid[-2] * grid[-1], d)
    return torch.cat([extra, x], dim=1)


def convert_block(sd: Mapping[str, Tensor], i: int, target_keys: Any, d: int, src: str | None = None) -> dict[str, Tensor]:
    """Map timm-style block ``i`` (``src`` prefix, default ``blocks.{i}.``) onto transformers ViT/ViTMAE/VideoMAE layer ``i``.

    * ``attn.qkv.weight`` is split into q/k/v;
    * the bias is ``attn.qkv.bias`` (split) or ``attn.q_bias`` / ``attn.v_bias``
      with a zero k bias (EVA, VideoMAE); a target without a k bias (transformers'
      VideoMAE) requires that zero;
    * layer scale ``gamma_1``/``gamma_2`` is folded into the output projections:
      ``gamma * (W x + b) == (gamma W) x + gamma b``.
    """
    b = src if src is not None else f"blocks.{i}."
    tk = set(target_keys)
    new = f"layers.{i}." if f"layers.{i}.layernorm_before.weight" in tk else f"encoder.layer.{i}."
    att = new + "attention." if f"{new}attention.q_proj.weight" in tk else new + "attention.attention."
    q_w, k_w, v_w = sd[b + "attn.qkv.weight"].float().chunk(3, dim=0)
    zeros = torch.zeros(d)
    if b + "attn.qkv.bias" in sd:
        q_b, k_b, v_b = sd[b + "attn.qkv.bias"].float().chunk(3, dim=0)
    else:
        q_b = sd.get(b + "attn.q_bias", zeros).float()
        v_b = sd.get(b + "attn.v_bias", zeros).float()
        k_b = zeros.clone()
    proj_w, proj_b = sd[b + "attn.proj.weight"].float(), sd[b + "attn.proj.bias"].float()
    fc2_w, fc2_b = sd[b + "mlp.fc2.weight"].float(), sd[b + "mlp.fc2.bias"].float()
    if b + "gamma_1" in sd:
        g1 = sd[b + "gamma_1"].float()
        proj_w, proj_b = proj_w * g1[:, None], proj_b * g1
    if b + "gamma_2" in sd:
        g2 = sd[b + "gamma_2"].float()
        fc2_w, fc2_b = fc2_w * g2[:, None], fc2_b * g2
    out: dict[str, Tensor] = {}
    # (weight name, weight, bias, other spelling of the bias: older transformers' VideoMAE has q_bias/v_bias parameters)
    linears = (
        (pick(tk, att + "q_proj.weight", att + "query.weight"), q_w, q_b, att + "q_bias"),
        (pick(tk, att + "k_proj.weight", att + "key.weight"), k_w, k_b, None),
        (pick(tk, att + "v_proj.weight", att + "value.weight"), v_w, v_b, att + "v_bias"),
        (pick(tk, new + "attention.o_proj.weight", new + "attention.output.dense.weight"), proj_w, proj_b, None),
        (pick(tk, new + "mlp.fc1.weight", new + "intermediate.dense.weight"), sd[b + "mlp.fc1.weight"].float(), sd[b + "mlp.fc1.bias"].float(), None),
        (pick(tk, new + "mlp.fc2.weight", new + "output.dense.weight"), fc2_w, fc2_b, None),
    )
    for name, w, bias, alt in linears:
        out[name] = w
        bias_name = name[: -len("weight")] + "bias"
        if bias_name in tk:
            out[bias_name] = bias
        elif alt is not None and alt in tk:
            out[alt] = bias
        elif bias.abs().max() > 0:
            raise ModelFileError(f"{b}: this transformers model has no {bias_name} for a non-zero bias")
    for ours, theirs in (("layernorm_before", "norm1"), ("layernorm_after", "norm2")):
        out[new + ours + ".weight"] = sd[b + theirs + ".weight"].float()
        out[new + ours + ".bias"] = sd[b + theirs + ".bias"].float()
    return out


def check_complete(out: Mapping[str, Tensor], target_keys: Any, what: str) -> None:
    """Raise one ModelFileError naming target tensors the conversion did not produce, or keys the target lacks."""
    tk = set(target_keys)
    unknown = sorted(set(out) - tk)
    if unknown:
        raise ModelFileError(f"{what} conversion produced keys this transformers model does not have: {unknown[:5]}")
    missing = sorted(tk - set(out))
    if missing:
        raise ModelFileError(f"{what} conversion left {len(missing)} tensor(s) unset: {', '.join(missing[:6])}")
