"""``hybrid``: uncertainty first, then diversity, so one batch is not k near-copies of one hard case.

- :func:`k_center_greedy`: the greedy core-set of Sener & Savarese (ICLR 2018): repeatedly take the
  embedding farthest from its nearest chosen (or already labelled) one. A cluster of near-duplicates
  gets one pick before any point of it gets a second.
- :func:`hybrid_select`: the ``candidate_factor * k`` highest-scored candidates, then k-center among
  them, starting from the highest-scored one.
- :func:`like_unreadable`: what skips teach: a candidate whose nearest labelled-or-skipped study is a
  skipped one is set aside (``hybrid`` does so while enough other candidates remain).
- :func:`pooled_features`: embeddings as the global average of a chosen module's output (an encoder
  stage or the bottleneck), captured with a forward hook.
- :class:`Bottleneck`: the same without naming the module: the coarsest feature map of any network
  (what the ``entropy`` scoring method stores as each study's embedding).

In the server, ``hybrid`` reads the embeddings the scoring job stored (``pool.embeddings``) unless the
request brings its own in ``params["embeddings"]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any
from weakref import WeakKeyDictionary

import numpy as np
import torch

from strategies.base import CandidatePool, Selection, SelectionContext, Strategy
from strategies.ranked import as_selections, fill_unscored
from strategies.scoring import evaluating

Embeddings = np.ndarray | torch.Tensor | Sequence[Sequence[float]]
MAX_TEAM = 64  # annotators' leases that widen hybrid's candidate set


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
    distances: np.ndarray = np.sqrt(np.maximum(sq, 0.0))
    return distances


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


def like_unreadable(
    candidates: np.ndarray, readable: Sequence[Sequence[float]], skipped: Sequence[Sequence[float]]
) -> np.ndarray:
    """Which candidates look like a study an annotator skipped as unreadable: their nearest neighbour
    among the labelled studies and the skipped ones (by embedding) is a skipped one. One nearest
    neighbour, no threshold to tune; nothing is flagged without a skip."""
    if not len(skipped) or not len(candidates):
        return np.zeros(len(candidates), dtype=bool)
    to_skipped = _distances(candidates, _matrix(skipped)).min(axis=1)
    if not len(readable):
        return np.ones(len(candidates), dtype=bool)
    return np.asarray(to_skipped < _distances(candidates, _matrix(readable)).min(axis=1))


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


class FeatureCapture:
    """Inside ``with``: forward hooks keep the global average of each hooked module's output.

    Only tensor outputs shaped like feature maps of the input (``ndim`` dimensions: batch, channels,
    space) count; a module whose output shape changes between calls (one module used twice) is dropped.
    Every call adds rows (one per batch item), so sliding windows each contribute one.
    """

    def __init__(self, modules: Iterable[torch.nn.Module], ndim: int) -> None:
        self.modules, self.ndim = list(modules), ndim
        self.shapes: dict[torch.nn.Module, tuple[int, int]] = {}  # (voxels per channel, channels)
        self.pooled: dict[torch.nn.Module, list[torch.Tensor]] = {}
        self.mixed: set[torch.nn.Module] = set()
        self._handles: list[Any] = []

    def _hook(self, module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        if not isinstance(output, torch.Tensor) or output.ndim != self.ndim or module in self.mixed:
            return
        shape = (int(output[0, 0].numel()), int(output.shape[1]))
        if self.shapes.setdefault(module, shape) != shape:
            self.mixed.add(module)
            return
        self.pooled.setdefault(module, []).append(output.detach().flatten(2).mean(dim=2).float().cpu())

    def __enter__(self) -> FeatureCapture:
        self._handles = [m.register_forward_hook(self._hook) for m in self.modules]
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def coarsest(self) -> torch.nn.Module | None:
        """The module with the fewest voxels per channel, then the most channels (the last to finish
        among equals); None unless it is coarser than the finest map seen (no down-sampling)."""
        usable = [(m, shape) for m, shape in self.shapes.items() if m not in self.mixed]
        if not usable:
            return None
        finest = max(voxels for _, (voxels, _) in usable)
        ranked = [((-voxels, channels, n), m) for n, (m, (voxels, channels)) in enumerate(usable)]
        (neg_voxels, _, _), best = max(ranked, key=lambda item: item[0])
        return best if -neg_voxels < finest else None

    def vector(self, module: torch.nn.Module) -> list[float] | None:
        """``module``'s pooled output averaged over every call and batch item, or None if it never ran."""
        rows = self.pooled.get(module)
        if not rows or module in self.mixed:
            return None
        return [float(x) for x in torch.cat(rows).mean(dim=0)]


class Bottleneck:
    """Embeddings from a network's bottleneck, found without naming it: the coarsest feature map.

    For MONAI's ``UNet`` that is the innermost skip connection's output (the deepest block's features
    next to the last encoder stage's). The first forward pass of a network hooks every module to find
    it; later ones hook only that module (remembered per network object).
    """

    def __init__(self) -> None:
        self._found: WeakKeyDictionary[torch.nn.Module, torch.nn.Module | None] = WeakKeyDictionary()

    def capture(self, network: torch.nn.Module, image: torch.Tensor) -> FeatureCapture:
        """Hooks for ``network``'s passes on ``image`` (batch first); use as ``with ... as capture``."""
        if network in self._found:
            module = self._found[network]
            return FeatureCapture([] if module is None else [module], image.ndim)
        return FeatureCapture(network.modules(), image.ndim)

    def vector(self, network: torch.nn.Module, capture: FeatureCapture) -> list[float] | None:
        """The embedding from a finished ``capture``; None when the network has no coarser feature map."""
        if network not in self._found:
            self._found[network] = capture.coarsest()
        module = self._found[network]
        return None if module is None else capture.vector(module)


class Hybrid(Strategy):
    """Top ``candidate_factor * k`` by a stored score, then k-center on their embeddings.

    The embeddings are ``params["embeddings"]`` (image id -> vector) when the request brings them, else
    the ones the scoring job stored with the scores it ranks by (``pool.embeddings`` of the scores' model
    version, so another model's newer vectors are never mixed in). Without a vector
    for every candidate the strategy falls back to the plain top ``k``. Each reply says which it did:
    ``embeddings`` is ``"params"``, ``"stored"`` or None (top ``k`` by score alone).
    """

    name = "hybrid"
    description = (
        "Most uncertain candidates (stored 'entropy' scores), then k-center on their embeddings for a"
        " diverse batch: the bottleneck features the scoring job stored, or params['embeddings']"
    )
    method = "entropy"
    candidate_factor = 4

    def __init__(self, method: str | None = None, candidate_factor: int | None = None) -> None:
        if method is not None:
            self.method = method
            self.description = self.description.replace("'entropy'", repr(method))
        if candidate_factor is not None:
            if candidate_factor < 1:
                raise ValueError("candidate_factor must be at least 1")
            self.candidate_factor = candidate_factor

    def needs(self) -> tuple[str, ...]:
        return (self.method,)

    def select(self, pool: CandidatePool, k: int, context: SelectionContext) -> list[Selection]:
        """The team's picks count: the studies leased to other annotators (and the labelled ones) are
        already-chosen centres, and the candidates grow with them, so annotators asking one study each
        get as diverse a set as one request for the whole batch would."""
        version = pool.score_version(self.method)
        taken = pool.taken(version)
        held = len(taken)
        candidates = pool.top_scored(self.method, (k + min(held, MAX_TEAM)) * self.candidate_factor, version)
        given = context.params.get("embeddings")
        source: str | None = "params"
        vectors: Mapping[str, Any]
        if isinstance(given, Mapping):
            vectors = given
        elif len(candidates) > k:
            vectors, source = pool.embeddings([c.image_id for c in candidates], version), "stored"
        else:
            vectors = {}
        like_skipped: set[str] = set()
        if len(candidates) > k and all(c.image_id in vectors for c in candidates):
            rows = np.asarray([vectors[c.image_id] for c in candidates], dtype=np.float64)
            usable = [t for t in taken if len(t) == rows.shape[1]] if source == "stored" else []
            skipped = (
                [v for v in pool.skipped(version) if len(v) == rows.shape[1]] if source == "stored" else []
            )
            unreadable = like_unreadable(rows, usable, skipped)
            if unreadable.any() and (~unreadable).sum() >= k:
                like_skipped = {c.image_id for c, u in zip(candidates, unreadable, strict=True) if u}
                keep = [i for i, u in enumerate(unreadable) if not u]
                candidates, rows = [candidates[i] for i in keep], rows[keep]
            first = None if usable else 0  # with nothing chosen yet: the most uncertain first
            order = k_center_greedy(rows, k, labelled=np.asarray(usable) if usable else None, first=first)
            chosen = [candidates[i] for i in order]
        else:
            chosen, source = candidates[:k], None
        picks = as_selections(fill_unscored(pool, chosen, k), self.method)
        fields = {"embeddings": source, "set_aside_like_skipped": len(like_skipped)}
        return [Selection(p.image_id, {**p.fields, **fields}) for p in picks]
