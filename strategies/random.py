"""``random``: as MONAI Label, never-served studies first, then the least recently served."""

from __future__ import annotations

from strategies.base import CandidatePool, Selection, SelectionContext, Strategy


class Random(Strategy):
    name = "random"
    description = "Random unlabelled study; never-served first, then least recently served"

    def select(self, pool: CandidatePool, k: int, context: SelectionContext) -> list[Selection]:
        out = []
        for c in pool.least_recently_served(k):
            # MONAI Label's weight: seconds since last served (never served: since the epoch).
            out.append(Selection(c.image_id, {"weight": round(context.now - c.last_served_ts, 3)}))
        return out
