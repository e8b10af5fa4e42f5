"""Tiny re-statements of the original encoders' module definitions, for fidelity tests.

Written from the published architectures (timm's ``VisionTransformer`` blocks
as MAE's ``models_vit`` uses them, MiniGPT-v2's EVA ViT, VideoMAE's
``modeling_finetune``), not copied: parameter names are the originals' so a
module's ``state_dict()`` *is* a checkpoint in the original layout, and the
forward passes compute what the originals compute for Emotion-LLaMA's features:

* :class:`RefMAEViT` -- ``vit_large_patch16(global_pool=False)``: CLS token
  after the final ``norm``;
* :class:`RefEVAViT` -- EVA ViT (q/v bias, layer scale), all tokens, no final norm;
* :class:`RefVideoMAE` -- VideoMAE (Conv3d tubelets, fixed sinusoid positions,
  q/v bias, LayerNorm eps 1e-6), the mean of all tokens without ``fc_norm``,
  input (B, C, T, H, W) as the original takes it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RefAttention(nn.Module):
    def __init__(self, dim: int, heads: int, bias: str) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias == "qkv")
        if bias == "qv":  # EVA / VideoMAE: q and v biases, no k bias
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        self.bias = bias
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        if self.bias == "qv":
            qkv = F.linear(x, self.qkv.weight, torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias]))
        else:
            qkv = self.qkv(x)
        qkv = qkv.reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * (d // self.heads) ** -0.5, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class RefMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class RefBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, bias: str, layer_scale: bool = False, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = RefAttention(dim, heads, bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = RefMlp(dim, hidden)
        if layer_scale:
            self.gamma_1 = nn.Parameter(torch.ones(dim))
            self.gamma_2 = nn.Parameter(torch.ones(dim))
        self.layer_scale = layer_scale

    def forward(self, x: Tensor) -> Tensor:
        if self.layer_scale:
            x = x + self.gamma_1 * self.attn(self.norm1(x))
            return x + self.gamma_2 * self.mlp(self.norm2(x))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int, tubelet: int = 0) -> None:
        super().__init__()
        if tubelet:
            self.proj: nn.Module = nn.Conv3d(3, dim, (tubelet, patch, patch), stride=(tubelet, patch, patch))
        else:
            self.proj = nn.Conv2d(3, dim, patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class RefMAEViT(nn.Module):
    """timm-style ViT as MAE's ``models_vit.VisionTransformer(global_pool=False)``: feature = norm(x)[:, 0]."""

    def __init__(self, dim: int, depth: int, heads: int, hidden: int, image: int, patch: int, classes: int = 7) -> None:
        super().__init__()
        n = (image // patch) ** 2
        self.patch_embed = _PatchEmbed(dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + n, dim))
        self.blocks = nn.ModuleList(RefBlock(dim, heads, hidden, "qkv") for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward_features(self, x: Tensor) -> Tensor:
        t = self.patch_embed(x)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1) + self.pos_embed
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t)[:, 0]


class RefEVAViT(nn.Module):
    """MiniGPT-v2's EVA ViT: q/v bias, layer scale, learned positions; all tokens, no final norm."""

    def __init__(self, dim: int, depth: int, heads: int, hidden: int, image: int, patch: int) -> None:
        super().__init__()
        n = (image // patch) ** 2
        self.patch_embed = _PatchEmbed(dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + n, dim))
        self.blocks = nn.ModuleList(RefBlock(dim, heads, hidden, "qv", layer_scale=True) for _ in range(depth))

    def forward(self, x: Tensor) -> Tensor:
        t = self.patch_embed(x)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1) + self.pos_embed
        for blk in self.blocks:
            t = blk(t)
        return t


def ref_sinusoid_table(n_position: int, d_hid: int) -> Tensor:
    """VideoMAE's ``get_sinusoid_encoding_table`` formula, restated."""
    table = np.array([[p / np.power(10000, 2 * (j // 2) / d_hid) for j in range(d_hid)] for p in range(n_position)])
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.tensor(table, dtype=torch.float32).unsqueeze(0)


class RefVideoMAE(nn.Module):
    """VideoMAE encoder as MER2023 extracts with it: x (B, C, T, H, W) -> mean of all tokens, no fc_norm."""

    def __init__(self, dim: int, depth: int, heads: int, hidden: int, image: int, patch: int, frames: int, tubelet: int) -> None:
        super().__init__()
        n = (frames // tubelet) * (image // patch) ** 2
        self.patch_embed = _PatchEmbed(dim, patch, tubelet)
        self.register_buffer("pos_table", ref_sinusoid_table(n, dim), persistent=False)  # a plain tensor in the original
        self.blocks = nn.ModuleList(RefBlock(dim, heads, hidden, "qv", eps=1e-6) for _ in range(depth))
        self.fc_norm = nn.LayerNorm(dim, eps=1e-6)  # exists in the checkpoint, unused by the extraction
        self.head = nn.Linear(dim, 6)

    def forward(self, x: Tensor) -> Tensor:
        t = self.patch_embed(x) + self.pos_table
        for blk in self.blocks:
            t = blk(t)
        return t.mean(dim=1)


def randomize(module: nn.Module, seed: int, scale: float = 0.2) -> nn.Module:
    """Random weights everywhere (norms around 1) so no tensor is left at an init value that would hide a mapping bug."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g) * scale
            p.copy_(1.0 + noise if name.endswith(("norm1.weight", "norm2.weight", "norm.weight", "gamma_1", "gamma_2")) else noise)
    return module.eval()
