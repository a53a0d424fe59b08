"""``entropy``: predictive entropy of the softmax, averaged over voxels (one forward pass).

Two values per image:

- ``entropy``: the mean voxel entropy over the whole image. On images that are mostly background it
  is dominated by object boundaries, so it also grows with the amount of foreground.
- ``foreground_entropy``: the mean voxel entropy over the voxels whose predicted foreground
  probability (``1 - p(background)``, channel 0 is background) exceeds ``threshold`` (0.05 by
  default): the background the model is sure about is left out, so small uncertain objects are not
  averaged away by a large empty field. An image with no such voxel scores 0.

A third, ``foreground_fraction`` (the mean predicted foreground probability), is stored as
``entropy.foreground_fraction``: ``stratified_random`` bins it into strata. The same forward pass
gives each image's embedding: the network's bottleneck features, globally average-pooled
(:class:`strategies.diversity.Bottleneck`), which ``hybrid`` spreads its batch over.

Entropy is in nats; divide by ``log(C)`` for [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from strategies.diversity import Bottleneck
from strategies.ranked import TopScored
from strategies.scoring import ScoringMethod, evaluating, first_item, predict_logits, to_probabilities

EPS = 1e-12


def voxel_entropy(probs: torch.Tensor) -> torch.Tensor:
    """(B, C, *spatial) probabilities -> (B, *spatial) entropy over the channel axis."""
    return -(probs * torch.log(probs.clamp_min(EPS))).sum(dim=1)


def mean_entropy(probs: torch.Tensor) -> torch.Tensor:
    """(B, C, *spatial) -> (B,) mean voxel entropy."""
    return voxel_entropy(probs).flatten(1).mean(dim=1)


def foreground_entropy(probs: torch.Tensor, threshold: float = 0.05) -> torch.Tensor:
    """(B, C, *spatial) -> (B,) mean entropy over voxels with foreground probability > ``threshold``."""
    ent = voxel_entropy(probs).flatten(1)
    mask = ((1.0 - probs[:, 0]).flatten(1) > threshold).to(ent.dtype)
    count = mask.sum(dim=1)
    return (ent * mask).sum(dim=1) / count.clamp_min(1.0)


def entropy_scores(probs: torch.Tensor, threshold: float = 0.05) -> dict[str, torch.Tensor]:
    """Batch values, each (B,): ``entropy``, ``foreground_entropy`` and ``foreground_fraction``."""
    return {
        "entropy": mean_entropy(probs),
        "foreground_entropy": foreground_entropy(probs, threshold),
        "foreground_fraction": (1.0 - probs[:, 0]).flatten(1).mean(dim=1),
    }


class EntropyScoring(ScoringMethod):
    name = "entropy"
    description = "Mean voxel entropy of the softmax (one forward pass)"
    key = "entropy"

    embeds = True

    def __init__(self, roi_size: Sequence[int] | None = None, threshold: float = 0.05) -> None:
        self.roi_size, self.threshold = roi_size, threshold
        self.bottleneck = Bottleneck()

    def _values(self, probs: torch.Tensor) -> dict[str, float]:
        values = entropy_scores(probs, self.threshold)
        return first_item({self.key: values.pop(self.key), **values})

    def score(self, network: torch.nn.Module, image: torch.Tensor) -> dict[str, float]:
        with evaluating(network):
            probs = to_probabilities(predict_logits(network, image, self.roi_size))
        return self._values(probs)

    def score_and_embed(
        self, network: torch.nn.Module, image: torch.Tensor
    ) -> tuple[dict[str, float], list[float] | None]:
        with evaluating(network), self.bottleneck.capture(network, image) as capture:
            probs = to_probabilities(predict_logits(network, image, self.roi_size))
        return self._values(probs), self.bottleneck.vector(network, capture)


class ForegroundEntropyScoring(EntropyScoring):
    name = "foreground_entropy"
    description = "Mean voxel entropy where the predicted foreground probability exceeds a threshold"
    key = "foreground_entropy"


class Entropy(TopScored):
    name = "entropy"
    description = "Highest mean predictive entropy under the current model"
    method = "entropy"
