"""``MemoryPool``: a ``CandidatePool`` over a list of ids and their scores, for running strategies
without a server (unit tests, the label-efficiency benchmark's simulated campaign)."""

from __future__ import annotations

import random
from collections.abc import Mapping

from strategies.base import Candidate


class MemoryPool:
    """Candidates in a list; scores per method in a dict (one model version)."""

    def __init__(
        self,
        ids: list[str],
        scores: Mapping[str, Mapping[str, float]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.ids, self.scores = list(ids), dict(scores or {})
        self.rng = rng if rng is not None else random.Random(0)

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
