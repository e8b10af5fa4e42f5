"""torchrun's process layout (RANK / WORLD_SIZE / LOCAL_RANK) and the two collectives the trainer uses.

With one process every helper is a no-op, so the loop reads the same either
way. Split from the trainer (issue 15).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from torch import Tensor


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    return DistInfo(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0")))


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def _all_reduce_sum(x: Tensor, info: DistInfo) -> Tensor:
    if info.world > 1:
        _dist().all_reduce(x, op=_dist().ReduceOp.SUM)
    return x


def _barrier(info: DistInfo) -> None:
    if info.world > 1:
        _dist().barrier()
