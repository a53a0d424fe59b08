from __future__ import annotations

import random
from collections import Counter

from strategies.stratified import StratifiedRandom, size_strata, stratified_order


def pool_ids() -> dict[str, str]:
    """40 common, 8 uncommon and 2 rare studies."""
    strata = {f"c{i:02d}": "common" for i in range(40)}
    strata.update({f"u{i}": "uncommon" for i in range(8)})
    strata.update({"r0": "rare", "r1": "rare"})
    return strata


def test_first_cycle_covers_every_stratum() -> None:
    strata = pool_ids()
    picks = stratified_order(list(strata.items()), 3, random.Random(0))
    assert {s for _, s in picks} == {"common", "uncommon", "rare"}
    six = stratified_order(list(strata.items()), 6, random.Random(1))
    assert Counter(s for _, s in six) == {"common": 2, "uncommon": 2, "rare": 2}


def test_exhausted_strata_are_skipped_and_nothing_repeats() -> None:
    strata = pool_ids()
    picks = stratified_order(list(strata.items()), 100, random.Random(0))
    assert len(picks) == len(strata) == len({i for i, _ in picks})
    assert Counter(s for _, s in picks[:13])["rare"] == 2


def test_order_depends_on_the_seed_not_on_candidate_order() -> None:
    items = list(pool_ids().items())
    a = stratified_order(items, 10, random.Random(5))
    b = stratified_order(list(reversed(items)), 10, random.Random(5))
    assert a == b
    assert a != stratified_order(items, 10, random.Random(6))


def test_size_strata_are_equal_count_bins() -> None:
    values = {f"s{i}": float(i % 10) for i in range(40)}
    bins = size_strata(values, 4)
    assert Counter(bins.values()) == {0: 10, 1: 10, 2: 10, 3: 10}
    assert bins["s0"] == 0 and bins["s9"] == 3


def test_strategy_reads_strata_from_params_and_falls_back_to_random(make_pool, context) -> None:
    strata = pool_ids()
    pool = make_pool(list(strata))
    picks = StratifiedRandom().select(pool, 3, context({"strata": strata}))
    assert {p.fields["stratum"] for p in picks} == {"common", "uncommon", "rare"}
    plain = StratifiedRandom().select(pool, 5, context())
    assert len({p.image_id for p in plain}) == 5
    # studies the server gave no stratum form one stratum of their own
    partial = StratifiedRandom().select(pool, 2, context({"strata": {"r0": "rare"}}))
    assert {p.fields["stratum"] for p in partial} == {"rare", None}


def test_strategy_bins_stored_foreground_fractions_when_no_strata_are_given(make_pool, context) -> None:
    ids = [f"s{i:02d}" for i in range(40)]
    fractions = {i: n / 100 for n, i in enumerate(ids[:36])}  # s36..s39: never scored
    pool = make_pool(ids, {"entropy.foreground_fraction": fractions})
    picks = StratifiedRandom().select(pool, 5, context())
    # four equal-count bins of the stored values, and the unscored as a stratum of their own
    assert sorted((p.fields["stratum"] for p in picks), key=repr) == [0, 1, 2, 3, None]
    assert {p.fields["strata"] for p in picks} == {"entropy.foreground_fraction"}
    # bins follow the stored values: stratum b holds the b-th quarter of the scored candidates
    for p in picks:
        n = int(p.image_id[1:])
        assert p.fields["stratum"] == (n // 9 if n < 36 else None)
    # request params win over stored values
    given = StratifiedRandom().select(pool, 2, context({"strata": {"s00": "x", "s01": "y"}}))
    assert {p.fields["strata"] for p in given} == {"params"}
    # another stored value and bin count
    two = StratifiedRandom(method="size", n_bins=2).select(
        make_pool(ids, {"size": {i: float(n) for n, i in enumerate(ids)}}), 2, context()
    )
    assert {p.fields["stratum"] for p in two} == {0, 1}
    assert "'size'" in StratifiedRandom(method="size").description
