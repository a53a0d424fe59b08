"""``stratified_random``: random within strata, round-robin across them (a foreground-aware random).

A stratum is any key per study: an attribute (site, scanner, protocol) or a binned prediction such
as the predicted foreground size (:func:`size_strata`). Each round visits the strata in one random
order and takes one random study from each, so a batch covers the strata before it repeats one; a
rare stratum is not outnumbered by a common one. nnActive (2025) found such a random hard to beat.

The server passes the strata as ``params["strata"]`` (image id -> key); without them the strategy is
plain random over the least recently served candidates.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Mapping, Sequence

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
    name = "stratified_random"
    description = "Random within strata (params['strata']: id -> key), round-robin across strata"
    candidate_limit = 1000

    def select(self, pool: CandidatePool, k: int, context: SelectionContext) -> list[Selection]:
        strata = context.params.get("strata")
        if not isinstance(strata, Mapping) or not strata:
            return [Selection(c.image_id) for c in pool.least_recently_served(k)]
        candidates = pool.least_recently_served(max(k, self.candidate_limit))
        pairs = [(c.image_id, _key(strata.get(c.image_id))) for c in candidates]
        return [Selection(i, {"stratum": s}) for i, s in stratified_order(pairs, k, context.rng)]
