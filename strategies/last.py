"""``last``: the lexicographically last unlabelled study."""

from __future__ import annotations

from strategies.base import CandidatePool, Selection, SelectionContext, Strategy


class Last(Strategy):
    name = "last"
    description = "Last unlabelled study by id"

    def select(self, pool: CandidatePool, k: int, context: SelectionContext) -> list[Selection]:
        return [Selection(c.image_id) for c in pool.by_id(k, descending=True)]
