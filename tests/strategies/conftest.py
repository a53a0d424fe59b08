"""An in-memory ``CandidatePool`` for selection tests, and a seeded context."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import torch

from strategies.base import SelectionContext
from strategies.memory_pool import MemoryPool


def make_memory_pool(
    ids: list[str], scores: Mapping[str, Mapping[str, float]] | None = None, seed: int = 0
) -> MemoryPool:
    return MemoryPool(ids, scores, random.Random(seed))


@pytest.fixture
def make_pool() -> Callable[..., MemoryPool]:
    return make_memory_pool


@pytest.fixture
def context() -> Callable[..., SelectionContext]:
    def build(params: dict[str, Any] | None = None, seed: int = 0) -> SelectionContext:
        return SelectionContext("test", None, params or {}, 1000.0, random.Random(seed))

    return build


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)
