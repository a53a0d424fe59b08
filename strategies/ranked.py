"""``TopScored``: the shared selection for score-based strategies (highest stored score first).

Scores come from a scoring method (see :mod:`strategies.scoring`) run by the server's scoring job;
selection only reads them through ``pool.top_scored``. Studies that have no score yet (new uploads,
or no scoring run so far) are served after the scored ones, least recently served first, so a
strategy never answers "nothing left" while unlabelled studies remain.
"""

from __future__ import annotations

from typing import Any

from strategies.base import Candidate, CandidatePool, Selection, SelectionContext, Strategy


def fill_unscored(pool: CandidatePool, chosen: list[Candidate], k: int) -> list[Candidate]:
    """``chosen`` then least-recently-served candidates not in it, up to ``k``."""
    if len(chosen) >= k:
        return chosen[:k]
    seen = {c.image_id for c in chosen}
    extra = [c for c in pool.least_recently_served(k + len(seen)) if c.image_id not in seen]
    return chosen + extra[: k - len(chosen)]


def as_selections(candidates: list[Candidate], method: str) -> list[Selection]:
    """Reply fields: ``score`` and, as MONAI Label names its score keys, ``<method>``. An unscored pick
    says so: ``score`` None, ``score_reason`` why, ``fallback`` what chose it instead."""
    out = []
    for c in candidates:
        fields: dict[str, Any] = {"score": c.score, method: c.score}
        if c.score is None:
            fields["score_reason"] = f"no {method!r} score of the current model version for this study yet"
            fields["fallback"] = "least_recently_served"
        out.append(Selection(c.image_id, fields))
    return out


class TopScored(Strategy):
    """The ``k`` unlabelled studies with the highest ``method`` score under the current model."""

    method: str = ""

    def __init__(self, method: str | None = None) -> None:
        if method is not None:
            self.method = method
        if not self.method:
            raise ValueError("a score-based strategy needs a scoring method name")

    def needs(self) -> tuple[str, ...]:
        return (self.method,)

    def select(self, pool: CandidatePool, k: int, context: SelectionContext) -> list[Selection]:
        return as_selections(fill_unscored(pool, pool.top_scored(self.method, k), k), self.method)
