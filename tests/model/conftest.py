"""Fixtures for the torch model tests.

``one_torch_thread`` pins torch's intra-op thread pool to one thread while a
module that asks for it runs (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): the
tiny models do microseconds of work per op, and on a small shared CI machine
the pool's synchronisation made a tiny forward pass ~30x slower (measured:
340 ms vs 11 ms per v2 fusion call with 2 threads on a loaded 2-core box).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
