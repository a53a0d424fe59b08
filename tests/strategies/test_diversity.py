from __future__ import annotations

import random

import numpy as np
import torch
from monai.networks.layers import SkipConnection
from monai.networks.nets import UNet

from strategies.diversity import (
    Bottleneck,
    Hybrid,
    forward_with_features,
    hybrid_select,
    k_center_greedy,
    pooled_features,
)
from strategies.memory_pool import MemoryPool


def clustered(
    n_clusters: int = 5, copies: int = 10, dim: int = 8, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Near-duplicate clusters (spread 1e-3) around far-apart centres, rows shuffled; returns (x, cluster)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 10.0, (n_clusters, dim))
    labels = np.repeat(np.arange(n_clusters), copies)
    x = centres[labels] + rng.normal(0.0, 1e-3, (len(labels), dim))
    order = rng.permutation(len(labels))
    return x[order], labels[order]


def test_k_center_takes_one_per_cluster_before_any_duplicate() -> None:
    x, cluster = clustered()
    picks = k_center_greedy(x, 5)
    assert sorted(cluster[picks]) == [0, 1, 2, 3, 4]
    more = k_center_greedy(x, 8)
    assert len(set(more)) == 8
    assert sorted(cluster[more[:5]]) == [0, 1, 2, 3, 4]


def test_k_center_starts_from_labelled_clusters() -> None:
    x, cluster = clustered()
    labelled = np.concatenate([x[cluster == 0][:1], x[cluster == 1][:1]])
    picks = k_center_greedy(torch.as_tensor(x), 3, labelled=labelled)
    assert sorted(cluster[picks]) == [2, 3, 4]


def test_exact_duplicates_are_never_chosen_twice() -> None:
    x = np.zeros((4, 3))
    assert sorted(k_center_greedy(x, 4)) == [0, 1, 2, 3]
    assert k_center_greedy(x, 0) == []
    assert len(k_center_greedy(x, 10)) == 4


def test_hybrid_spreads_the_batch_over_uncertain_clusters() -> None:
    x, cluster = clustered(copies=4)
    scores = np.select([cluster == 0, cluster == 1, cluster == 2], [1.0, 0.9, 0.8], 0.0) + 1e-3 * np.arange(
        len(x)
    )
    top = np.argsort(-scores)[:3]
    assert set(cluster[top]) == {0}  # plain top-k: three near-copies of the most uncertain case
    picks = hybrid_select(scores, x, 3, candidate_factor=4)
    assert picks[0] == int(top[0])
    assert len(set(cluster[picks])) == 3
    assert all(i in set(np.argsort(-scores)[:12]) for i in picks)  # only among the top 4k


def test_pooled_features_hook_gives_one_vector_per_image_and_is_removed() -> None:
    torch.manual_seed(0)
    net = UNet(2, 1, 2, (4, 8, 16), (2, 2))
    bottleneck = net.model[1].submodule[1].submodule  # the deepest block
    logits, feats = forward_with_features(net, bottleneck, torch.rand(3, 1, 16, 16))
    assert logits.shape == (3, 2, 16, 16)
    assert feats.shape == (3, 16)
    assert not bottleneck._forward_hooks
    assert pooled_features(net, bottleneck, torch.rand(1, 1, 16, 16)).shape == (1, 16)


def test_hybrid_strategy_uses_embeddings_when_given(make_pool, context) -> None:
    ids = [f"s{i:02d}" for i in range(12)]
    scores = {i: 1.0 - n / 100 for n, i in enumerate(ids)}
    # the four most uncertain studies are copies of one; s04.. differ
    vectors = {i: [0.0, 0.0] if n < 4 else [float(n), float(-n)] for n, i in enumerate(ids)}
    pool = make_pool(ids, {"entropy": scores})
    plain = Hybrid().select(pool, 3, context())
    assert [p.image_id for p in plain] == ["s00", "s01", "s02"]
    diverse = Hybrid().select(pool, 3, context({"embeddings": vectors}))
    chosen = [p.image_id for p in diverse]
    assert chosen[0] == "s00"
    assert sum(c in {"s00", "s01", "s02", "s03"} for c in chosen) == 1
    assert Hybrid(method="epistemic").select(pool, 2, context())  # unscored: falls back to random


def test_hybrid_reads_stored_embeddings_from_the_pool(context) -> None:
    ids = [f"s{i:02d}" for i in range(12)]
    scores = {i: 1.0 - n / 100 for n, i in enumerate(ids)}
    stored = {i: [0.0, 0.0] if n < 4 else [float(n), float(-n)] for n, i in enumerate(ids)}
    pool = MemoryPool(ids, {"entropy": scores}, random.Random(0), embeddings=stored)
    picks = Hybrid().select(pool, 3, context())
    chosen = [p.image_id for p in picks]
    assert chosen[0] == "s00" and sum(c in {"s00", "s01", "s02", "s03"} for c in chosen) == 1
    assert {p.fields["embeddings"] for p in picks} == {"stored"}
    # request params win: here they make every candidate alike, so k-center takes the top ones in order
    same = {i: [1.0, 1.0] for i in ids}
    given = Hybrid().select(pool, 3, context({"embeddings": same}))
    assert {p.fields["embeddings"] for p in given} == {"params"}
    # a candidate without a stored vector: plain top k, and the reply says so
    partial = MemoryPool(ids, {"entropy": scores}, random.Random(0), embeddings={"s00": [0.0, 0.0]})
    plain = Hybrid().select(partial, 3, context())
    assert [p.image_id for p in plain] == ["s00", "s01", "s02"]
    assert {p.fields["embeddings"] for p in plain} == {None}


def test_bottleneck_is_the_coarsest_feature_map_and_hooks_are_removed() -> None:
    torch.manual_seed(0)
    net = UNet(3, 1, 2, (4, 8, 16), (2, 2), num_res_units=0)
    innermost = [m for m in net.modules() if isinstance(m, SkipConnection)][-1]
    finder = Bottleneck()
    image = torch.rand(1, 1, 16, 16, 16)
    with finder.capture(net, image) as capture:
        logits = net(image)
    vector = finder.vector(net, capture)
    assert capture.coarsest() is innermost  # 4^3 voxels; 8 + 16 channels after the skip concat
    assert vector is not None and len(vector) == 24
    assert all(not m._forward_hooks for m in net.modules())
    with finder.capture(net, image) as again:  # now only the bottleneck is hooked
        assert again.modules == [innermost]
        assert torch.equal(net(image), logits)
    assert finder.vector(net, again) == vector
    flat = torch.nn.Conv3d(1, 2, 3, padding=1)  # no down-sampling: no bottleneck, no embedding
    with finder.capture(flat, image) as none:
        flat(image)
    assert finder.vector(flat, none) is None
