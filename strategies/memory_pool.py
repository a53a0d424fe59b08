"""``MemoryPool``: a ``CandidatePool`` over a list of ids and their scores, for running strategies
without a server (unit tests, the label-efficiency benchmark's simulated campaign)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from strategies.base import Candidate


class MemoryPool:
    """Candidates in a list; scores per method and embeddings per id in dicts (one model version)."""

    def __init__(
        self,
        ids: list[str],
        scores: Mapping[str, Mapping[str, float]] | None = None,
        rng: random.Random | None = None,
        embeddings: Mapping[str, Sequence[float]] | None = None,
        taken: Sequence[Sequence[float]] = (),
        skipped: Sequence[Sequence[float]] = (),
    ) -> None:
        self.ids, self.scores = list(ids), dict(scores or {})
        self.taken_vectors = [[float(x) for x in v] for v in taken]  # what the team already holds
        self.skipped_vectors = [[float(x) for x in v] for v in skipped]  # set aside as unreadable
        self.vectors = {i: [float(x) for x in v] for i, v in (embeddings or {}).items()}
        self.rng = rng if rng is not None else random.Random(0)

    def count(self) -> int:
        return len(self.ids)

    def least_recently_served(self, k: int) -> list[Candidate]:
        ids = list(self.ids)
        self.rng.shuffle(ids)
        return [Candidate(i) for i in ids[:k]]

    def by_id(self, k: int, descending: bool = False) -> list[Candidate]:
        return [Candidate(i) for i in sorted(self.ids, reverse=descending)[:k]]

    def score_version(self, method: str) -> str | None:
        return None  # one version: every lookup takes all of it

    def top_scored(self, method: str, k: int, model_version: str | None = None) -> list[Candidate]:
        values = self.scores.get(method, {})
        ranked = sorted((i for i in self.ids if i in values), key=lambda i: (-values[i], i))
        return [Candidate(i, score=values[i]) for i in ranked[:k]]

    def score_values(
        self, method: str, ids: Sequence[str], model_version: str | None = None
    ) -> dict[str, float]:
        values, open_ids = self.scores.get(method, {}), set(self.ids)
        return {i: float(values[i]) for i in ids if i in values and i in open_ids}

    def embeddings(self, ids: Sequence[str], model_version: str | None = None) -> dict[str, list[float]]:
        open_ids = set(self.ids)
        return {i: list(self.vectors[i]) for i in ids if i in self.vectors and i in open_ids}

    def taken(self, model_version: str | None = None) -> list[list[float]]:
        return [list(v) for v in self.taken_vectors]

    def skipped(self, model_version: str | None = None) -> list[list[float]]:
        return [list(v) for v in self.skipped_vectors]
