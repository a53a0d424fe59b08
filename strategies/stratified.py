"""``stratified_random``: random within strata, round-robin across them (a foreground-aware random).

A stratum is any key per study: an attribute (site, scanner, protocol) or a binned prediction such
as the predicted foreground size (:func:`size_strata`). Each round visits the strata in one random
order and takes one random study from each, so a batch covers the strata before it repeats one; a
rare stratum is not outnumbered by a common one. nnActive (2025) found such a random hard to beat.

Strata come from ``params["strata"]`` (image id -> key) when the request brings them. Otherwise they
are :func:`size_strata` bins, over the candidates, of a stored per-study value: by default
``entropy.foreground_fraction``, the predicted foreground fraction the ``entropy`` scoring method
stores. Candidates without that value form a stratum of their own (``None``); when no candidate has
one (no scoring run yet) the strategy is plain random over the least recently served candidates.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from strategies.base import CandidatePool, Selection, SelectionContext, Strategy


def stratified_order(
    candidates: Sequence[tuple[str, Hashable]], k: int, rng: random.Random
) -> list[tuple[str, Hashable]]:
    """Up to ``k`` ``(id, stratum)`` pairs: strata in a random order, one random pick each per cycle."""
    groups: dict[Hashable, list[str]] = {}
    for image_id, stratum in candidates:
        groups.setdefault(stratum, []).append(image_id)
    keys = sorted(groups, key=repr)  # independent of the candidates' order, then shuffled
    rng.shuffle(keys)
    for key in keys:
        members = sorted(groups[key])
        rng.shuffle(members)
        groups[key] = members
    out: list[tuple[str, Hashable]] = []
    while len(out) < k and any(groups.values()):
        for key in keys:
            if groups[key] and len(out) < k:
                out.append((groups[key].pop(), key))
    return out


def size_strata(values: Mapping[str, float], n_bins: int = 4) -> dict[str, int]:
    """Equal-count bins (0 .. n_bins-1) of a per-study value, e.g. the predicted foreground fraction."""
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    ranked = sorted(values, key=lambda i: (values[i], i))
    n = len(ranked)
    return {image_id: min(n_bins - 1, r * n_bins // max(n, 1)) for r, image_id in enumerate(ranked)}


def _key(value: object) -> Hashable:
    return value if isinstance(value, Hashable) else repr(value)


class StratifiedRandom(Strategy):
    """Replies carry ``stratum`` and ``strata`` (``"params"``, the stored method's name, or None)."""

    name = "stratified_random"

    def needs(self) -> tuple[str, ...]:
        return (self.method.split(".")[0],)  # "entropy.foreground_fraction" is the entropy method's

    description = (
        "Random within strata, round-robin across strata: params['strata'] (id -> key), else 4"
        " equal-count bins of the stored 'entropy.foreground_fraction' scores (predicted foreground size)"
    )
    candidate_limit = 1000
    method = "entropy.foreground_fraction"
    n_bins = 4

    def __init__(self, method: str | None = None, n_bins: int | None = None) -> None:
        if n_bins is not None:
            if n_bins < 1:
                raise ValueError("n_bins must be at least 1")
            self.n_bins = n_bins
        if method is not None:
            self.method = method
        if method is not None or n_bins is not None:
            self.description = (
                f"Random within strata, round-robin across strata: params['strata'] (id -> key), else"
                f" {self.n_bins} equal-count bins of the stored {self.method!r} scores"
            )

    def select(self, pool: CandidatePool, k: int, context: SelectionContext) -> list[Selection]:
        given = context.params.get("strata")
        candidates = pool.least_recently_served(max(k, self.candidate_limit))
        ids = [c.image_id for c in candidates]
        source: str = "params"
        strata: Mapping[str, Any]
        if isinstance(given, Mapping) and given:
            strata = given
        else:
            values = pool.score_values(self.method, ids)
            if not values:
                unscored = {
                    "stratum": None,
                    "strata": None,
                    "score_reason": f"no stored {self.method!r} values of the current model version yet",
                    "fallback": "least_recently_served",
                }
                return [Selection(i, dict(unscored)) for i in ids[:k]]
            strata, source = size_strata(values, self.n_bins), self.method
        pairs = [(i, _key(strata.get(i))) for i in ids]
        return [
            Selection(i, {"stratum": s, "strata": source}) for i, s in stratified_order(pairs, k, context.rng)
        ]
