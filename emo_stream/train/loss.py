"""The training objective: Emotion-LLaMA's answer-token cross-entropy under its prompt template.

One ``nn.Module`` so DDP/FSDP can wrap it. Split from the trainer (issue 15).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class AnswerLoss(nn.Module):
    """Summed answer-token cross-entropy of a micro-batch (what DDP/FSDP wrap)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, encoded: dict[str, Any], prompts: Sequence[str], answers: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
        from emo_stream.model.projectors import SlotTokens

        m = self.model
        llm = m.llm
        proj = m.project(encoded)
        rows, targets, lengths = [], [], []
        for i, (prompt, ans) in enumerate(zip(prompts, answers)):
            slots = {k: SlotTokens(v.tokens[i : i + 1], v.mask[i : i + 1]) for k, v in proj.slots.items()}
            prefix = llm.build_prefix(prompt, slots).embeds[0]
            ans_t = torch.tensor(list(ans), dtype=torch.long, device=prefix.device)
            rows.append(torch.cat([prefix, llm.embed_ids(ans_t[:-1]).to(prefix.dtype)], dim=0))
            targets.append(ans_t)
            lengths.append(prefix.shape[0])
        b, t = len(rows), max(r.shape[0] for r in rows)
        h = rows[0].shape[-1]
        x = rows[0].new_zeros(b, t, h)
        mask = torch.zeros(b, t, dtype=torch.long, device=x.device)
        bi, pi, tgt = [], [], []
        for i, r in enumerate(rows):
            x[i, : r.shape[0]] = r
            mask[i, : r.shape[0]] = 1
            n_ans = targets[i].shape[0]
            pos = torch.arange(lengths[i] - 1, lengths[i] - 1 + n_ans, device=x.device)
            bi.append(torch.full_like(pos, i))
            pi.append(pos)
            tgt.append(targets[i])
        pos_ids = torch.arange(t, device=x.device).unsqueeze(0).expand(b, t)
        base = llm.base_llama()
        hidden = base.model(inputs_embeds=x, attention_mask=mask, position_ids=pos_ids, use_cache=False).last_hidden_state
        sel = hidden[torch.cat(bi), torch.cat(pi)]
        logits = base.lm_head(sel).float()
        target = torch.cat(tgt)
        losses = F.cross_entropy(logits, target, reduction="none")
        return losses, target
