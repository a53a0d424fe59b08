"""Scoring: turn a network's outputs on one image into named uncertainty values.

The server's scoring job calls :meth:`ScoringMethod.score` once per unlabelled image with a
batch-of-one tensor ``(1, C, *spatial)`` and stores the values keyed by model version; the first
key of the returned dict is the value that selection strategies rank by (``top_scored``), stored under
the method's name; every further key ``k`` is stored as ``<method>.<k>`` (e.g.
``entropy.foreground_fraction``, which ``stratified_random`` bins). A method that can also describe
the image as a vector (``embeds``) returns it from :meth:`ScoringMethod.score_and_embed`; the job stores
it per (image, model version) for ``hybrid``'s k-center step.
Scoring is separate from selection: the selection strategies never run a network.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from monai.inferers import sliding_window_inference

Predictor = Callable[[torch.Tensor], torch.Tensor]


class ScoringMethod(ABC):
    """Scores one image; ``score`` returns ``{ranking_value_name: value, ...more named values}``."""

    name: str = ""
    description: str = ""

    # True when ``score_and_embed`` returns an embedding (the job then also rescores studies without one).
    embeds: bool = False

    @abstractmethod
    def score(self, network: torch.nn.Module, image: torch.Tensor) -> dict[str, float]:
        """``image`` is ``(1, C, *spatial)``; the first key is the value to rank by (higher: ask first)."""

    def score_and_embed(
        self, network: torch.nn.Module, image: torch.Tensor
    ) -> tuple[dict[str, float], list[float] | None]:
        """``score``'s values and, from the same forward passes, an embedding of the image (or None)."""
        return self.score(network, image), None


@contextmanager
def preserved_modes(network: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Restore every submodule's ``training`` flag on exit, whatever the body switched."""
    modes = [(m, m.training) for m in network.modules()]
    try:
        yield network
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def evaluating(network: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``network.eval()`` and ``torch.no_grad()`` for the body; the previous modes come back afterwards."""
    with preserved_modes(network), torch.no_grad():
        network.eval()
        yield network


def predict_logits(
    network: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    roi_size: Sequence[int] | None = None,
    sw_batch_size: int = 4,
    overlap: float = 0.25,
) -> torch.Tensor:
    """Run ``network`` on ``image`` (B, C, *spatial), with sliding windows when it exceeds ``roi_size``.

    The caller chooses the network's mode (``eval()``, MC dropout) and the grad context.
    """
    spatial = image.shape[2:]
    if roi_size is not None and any(s > r for s, r in zip(spatial, roi_size, strict=True)):
        out = sliding_window_inference(image, tuple(roi_size), sw_batch_size, network, overlap=overlap)
        if not isinstance(out, torch.Tensor):
            raise TypeError("the network must return a single tensor")
        return out
    return network(image)


def to_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities (B, C, ...): softmax over channels; one channel is a sigmoid, made two-class."""
    if logits.shape[1] == 1:
        fg = torch.sigmoid(logits)
        return torch.cat([1.0 - fg, fg], dim=1)
    return torch.softmax(logits, dim=1)


def first_item(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """``{name: (1,) tensor}`` -> ``{name: float}`` for a batch of one."""
    out: dict[str, float] = {}
    for key, value in values.items():
        if value.numel() != 1:
            raise ValueError(f"{key}: expected one value for a batch of one, got shape {tuple(value.shape)}")
        out[key] = float(value.reshape(()))
    return out
