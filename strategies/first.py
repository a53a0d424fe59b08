"""``first``: the lexicographically first unlabelled study (deterministic, a baseline)."""

from __future__ import annotations

from strategies.base import CandidatePool, Selection, SelectionContext, Strategy


class First(Strategy):
    name = "first"
    description = "First unlabelled study by id"

    def select(self, pool: CandidatePool, k: int, context: SelectionContext) -> list[Selection]:
        return [Selection(c.image_id) for c in pool.by_id(k)]
