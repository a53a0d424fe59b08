"""``novelty``: autoencoder reconstruction error, to surface out-of-distribution studies.

A small MONAI ``AutoEncoder`` fitted on the pool (or on the labelled studies) reconstructs what it has
seen often well and what looks unlike it badly: a study from another scanner, an inverted contrast, a
corrupted series. The score is the mean squared reconstruction error per image. High novelty is not
the same as informative: pure-noise studies score high too, so use it to flag studies for review or
as one stratum, not alone to choose what to label.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import AutoEncoder

from strategies.ranked import TopScored
from strategies.scoring import ScoringMethod, evaluating, first_item


def make_autoencoder(
    spatial_dims: int = 3,
    in_channels: int = 1,
    channels: Sequence[int] = (4, 8, 8),
    strides: Sequence[int] = (2, 2, 2),
) -> AutoEncoder:
    """A small convolutional autoencoder; the default squeezes 8x per axis into 8 channels."""
    return AutoEncoder(spatial_dims, in_channels, in_channels, channels, strides)


def fit_autoencoder(
    model: torch.nn.Module,
    images: torch.Tensor,
    iters: int = 200,
    batch_size: int = 8,
    lr: float = 3e-3,
    seed: int = 0,
) -> list[float]:
    """Fit ``model`` to reconstruct ``images`` (N, C, *spatial) with MSE; returns the loss per step.

    Deterministic for a given ``seed``; the global torch RNG is left as it was. The model ends in
    ``eval()`` mode.
    """
    if images.ndim < 3 or len(images) == 0:
        raise ValueError("images must be a non-empty (N, C, *spatial) tensor")
    losses: list[float] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        for _ in range(iters):
            idx = torch.randint(len(images), (min(batch_size, len(images)),))
            batch = images[idx]
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(batch), batch)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    model.eval()
    return losses


def reconstruction_error(model: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """(B, C, *spatial) -> (B,) mean squared reconstruction error, in eval mode without gradients."""
    with evaluating(model):
        recon = model(image)
    error: torch.Tensor = ((recon - image) ** 2).flatten(1).mean(dim=1)
    return error


class NoveltyScoring(ScoringMethod):
    """Scores with ``autoencoder`` when given, else treats the ``network`` it is handed as one."""

    name = "novelty"
    description = "Autoencoder reconstruction error (out-of-distribution studies score high)"

    def __init__(self, autoencoder: torch.nn.Module | None = None) -> None:
        self.autoencoder = autoencoder

    def score(self, network: torch.nn.Module, image: torch.Tensor) -> dict[str, float]:
        model = self.autoencoder if self.autoencoder is not None else network
        return first_item({"reconstruction_error": reconstruction_error(model, image)})


class Novelty(TopScored):
    name = "novelty"
    description = "Highest autoencoder reconstruction error (most unlike the rest of the pool)"
    method = "novelty"
