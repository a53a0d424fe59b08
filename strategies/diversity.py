"""``hybrid``: uncertainty first, then diversity, so one batch is not k near-copies of one hard case.

- :func:`k_center_greedy`: the greedy core-set of Sener & Savarese (ICLR 2018): repeatedly take the
  embedding farthest from its nearest chosen (or already labelled) one. A cluster of near-duplicates
  gets one pick before any point of it gets a second.
- :func:`hybrid_select`: the ``candidate_factor * k`` highest-scored candidates, then k-center among
  them, starting from the highest-scored one.
- :func:`pooled_features`: embeddings as the global average of a chosen module's output (an encoder
  stage or the bottleneck), captured with a forward hook.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from strategies.base import CandidatePool, Selection, SelectionContext, Strategy
from strategies.ranked import as_selections, fill_unscored
from strategies.scoring import evaluating

Embeddings = np.ndarray | torch.Tensor | Sequence[Sequence[float]]


def _matrix(x: Embeddings) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    m = np.asarray(x, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {m.shape}")
    return m


def _distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Euclidean distances (len(x), len(y))."""
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.sqrt(np.maximum(sq, 0.0))


def k_center_greedy(
    embeddings: Embeddings, k: int, labelled: Embeddings | None = None, first: int | None = None
) -> list[int]:
    """Indices of ``k`` rows chosen by greedy k-center, in the order chosen.

    Distances start from the ``labelled`` embeddings when given. ``first`` forces the first pick; with
    neither, the first pick is row 0 (callers pass rows best-first).
    """
    x = _matrix(embeddings)
    n = len(x)
    k = min(k, n)
    if k <= 0:
        return []
    nearest = np.full(n, np.inf)
    if labelled is not None:
        lab = _matrix(labelled)
        if len(lab):
            nearest = _distances(x, lab).min(axis=1)
    chosen: list[int] = []
    if first is None and not np.isfinite(nearest).any():
        first = 0
    while len(chosen) < k:
        i = first if first is not None and not chosen else int(np.argmax(nearest))
        chosen.append(i)
        nearest = np.minimum(nearest, _distances(x, x[i : i + 1])[:, 0])
        nearest[chosen] = -np.inf  # never chosen twice, even among exact duplicates
    return chosen


def hybrid_select(
    scores: Sequence[float] | np.ndarray,
    embeddings: Embeddings,
    k: int,
    candidate_factor: int = 4,
    labelled: Embeddings | None = None,
) -> list[int]:
    """Top ``candidate_factor * k`` by score, then k-center among them from the highest-scored one."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[: max(k, candidate_factor * k)]
    picks = k_center_greedy(_matrix(embeddings)[order], k, labelled=labelled, first=0)
    return [int(order[i]) for i in picks]


def forward_with_features(
    network: torch.nn.Module, module: torch.nn.Module, image: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and the globally average-pooled output of ``module`` (B, C_module), in eval mode."""
    captured: list[Any] = []
    handle = module.register_forward_hook(lambda _m, _inputs, output: captured.append(output))
    try:
        with evaluating(network):
            logits = network(image)
    finally:
        handle.remove()
    if not captured:
        raise ValueError("the hooked module did not run in the forward pass")
    feat = captured[-1]
    if isinstance(feat, (tuple, list)):
        feat = feat[0]
    return logits, feat.flatten(2).mean(dim=2)


def pooled_features(network: torch.nn.Module, module: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """(B, C_module) embeddings: the global average of ``module``'s output on ``image``."""
    return forward_with_features(network, module, image)[1]


class Hybrid(Strategy):
    """Top ``candidate_factor * k`` by a stored score, then k-center on ``params["embeddings"]``.

    ``params["embeddings"]`` maps image id to a vector (as the scoring job or client provides them);
    without a vector for every candidate the strategy falls back to the plain top ``k``.
    """

    name = "hybrid"
    description = "Most uncertain candidates, then k-center on their embeddings for a diverse batch"
    method = "entropy"
    candidate_factor = 4

    def __init__(self, method: str | None = None, candidate_factor: int | None = None) -> None:
        if method is not None:
            self.method = method
        if candidate_factor is not None:
            if candidate_factor < 1:
                raise ValueError("candidate_factor must be at least 1")
            self.candidate_factor = candidate_factor

    def select(self, pool: CandidatePool, k: int, context: SelectionContext) -> list[Selection]:
        candidates = pool.top_scored(self.method, k * self.candidate_factor)
        vectors = context.params.get("embeddings")
        if (
            len(candidates) > k
            and isinstance(vectors, Mapping)
            and all(c.image_id in vectors for c in candidates)
        ):
            rows = np.asarray([vectors[c.image_id] for c in candidates], dtype=np.float64)
            chosen = [candidates[i] for i in k_center_greedy(rows, k, first=0)]
        else:
            chosen = candidates[:k]
        return as_selections(fill_unscored(pool, chosen, k), self.method)
