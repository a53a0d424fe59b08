"""``MemoryPool``'s stored-data reads: what strategies see of scores and embeddings without a server."""

from __future__ import annotations

import random

from strategies.memory_pool import MemoryPool


def test_score_values_are_per_method_and_only_for_open_requested_ids() -> None:
    scores = {
        "entropy": {"a": 0.5, "b": 0.7},
        "entropy.foreground_fraction": {"a": 0.1, "c": 0.3, "gone": 0.9},
    }
    pool = MemoryPool(["a", "b", "c"], scores, random.Random(0))
    assert pool.score_values("entropy.foreground_fraction", ["a", "b", "c"]) == {"a": 0.1, "c": 0.3}
    assert pool.score_values("entropy", ["b"]) == {"b": 0.7}
    # "gone" has a value but is no longer a candidate (labelled, or leased to someone else)
    assert pool.score_values("entropy.foreground_fraction", ["gone", "c"]) == {"c": 0.3}
    assert pool.score_values("tta", ["a", "b"]) == {}


def test_embeddings_are_copies_for_open_requested_ids() -> None:
    pool = MemoryPool(["a", "b"], embeddings={"a": (1, 2), "b": [3.0, 4.0], "gone": [5.0, 6.0]})
    got = pool.embeddings(["a", "b", "gone", "unknown"])
    assert got == {"a": [1.0, 2.0], "b": [3.0, 4.0]}
    got["a"].append(99.0)
    assert pool.embeddings(["a"]) == {"a": [1.0, 2.0]}
    assert MemoryPool(["a"]).embeddings(["a"]) == {}
