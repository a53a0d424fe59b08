"""An in-memory ``CandidatePool`` for selection tests, and a seeded context."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import torch

from strategies.base import Candidate, SelectionContext


class ListPool:
    """Candidates in a list; scores per method in a dict (one model version)."""

    def __init__(
        self, ids: list[str], scores: Mapping[str, Mapping[str, float]] | None = None, seed: int = 0
    ):
        self.ids, self.scores, self.rng = list(ids), dict(scores or {}), random.Random(seed)

    def count(self) -> int:
        return len(self.ids)

    def least_recently_served(self, k: int) -> list[Candidate]:
        ids = list(self.ids)
        self.rng.shuffle(ids)
        return [Candidate(i) for i in ids[:k]]

    def by_id(self, k: int, descending: bool = False) -> list[Candidate]:
        return [Candidate(i) for i in sorted(self.ids, reverse=descending)[:k]]

    def top_scored(self, method: str, k: int, model_version: str | None = None) -> list[Candidate]:
        values = self.scores.get(method, {})
        ranked = sorted((i for i in self.ids if i in values), key=lambda i: (-values[i], i))
        return [Candidate(i, score=values[i]) for i in ranked[:k]]


@pytest.fixture
def make_pool() -> Callable[..., ListPool]:
    return ListPool


@pytest.fixture
def context() -> Callable[..., SelectionContext]:
    def build(params: dict[str, Any] | None = None, seed: int = 0) -> SelectionContext:
        return SelectionContext("test", None, params or {}, 1000.0, random.Random(seed))

    return build


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)
