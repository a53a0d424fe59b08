"""``epistemic``: Monte Carlo dropout (Gal & Ghahramani 2016) with only the Dropout modules sampling.

MONAI Label calls ``model.train()`` for MC dropout, which also puts BatchNorm in training mode: every
scoring pass then normalises with batch statistics and overwrites the running mean and variance the
model was trained with. :func:`enable_mc_dropout` puts the model in ``eval()`` and switches only the
dropout modules to training mode, and restores every module's flag afterwards, so normalisation
layers keep their running statistics untouched.

Values per image, from ``T`` stochastic passes with probabilities ``p_t``:

- ``mutual_information`` (BALD, Houlsby et al. 2011): ``H(mean_t p_t) - mean_t H(p_t)``, averaged over
  voxels; what the passes disagree on, the ranking value;
- ``variance``: the variance across passes of each class probability, averaged over classes and voxels;
- ``entropy``: the predictive entropy ``H(mean_t p_t)`` averaged over voxels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from strategies.entropy import voxel_entropy
from strategies.ranked import TopScored
from strategies.scoring import ScoringMethod, first_item, predict_logits, preserved_modes, to_probabilities

DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)


@contextmanager
def enable_mc_dropout(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` with only its dropout modules in training mode; all modes restored on exit."""
    dropouts = [m for m in model.modules() if isinstance(m, DROPOUT_TYPES)]
    if not dropouts:
        raise ValueError("MC dropout needs a network with at least one Dropout module")
    with preserved_modes(model):
        model.eval()
        for module in dropouts:
            module.train()
        yield model


def mc_dropout_probabilities(
    model: nn.Module,
    image: torch.Tensor,
    n_samples: int = 8,
    roi_size: Sequence[int] | None = None,
    seed: int | None = 0,
) -> torch.Tensor:
    """(T, B, C, *spatial) softmax probabilities from ``n_samples`` dropout passes.

    With ``seed`` the dropout masks are reproducible and the global torch RNG is left as it was.
    """
    if n_samples < 2:
        raise ValueError("MC dropout needs at least two samples")
    with (
        enable_mc_dropout(model),
        torch.no_grad(),
        torch.random.fork_rng(devices=[], enabled=seed is not None),
    ):
        if seed is not None:
            torch.manual_seed(seed)
        samples = [to_probabilities(predict_logits(model, image, roi_size)) for _ in range(n_samples)]
    return torch.stack(samples)


def epistemic_scores(samples: torch.Tensor) -> dict[str, torch.Tensor]:
    """(T, B, C, *spatial) probabilities -> ``mutual_information``, ``variance``, ``entropy``, each (B,)."""
    t, b = samples.shape[:2]
    predictive = voxel_entropy(samples.mean(dim=0)).flatten(1)
    expected = voxel_entropy(samples.flatten(0, 1)).reshape(t, b, -1).mean(dim=0)
    variance = samples.var(dim=0, unbiased=False).flatten(1).mean(dim=1)
    return {
        "mutual_information": (predictive - expected).clamp_min(0.0).mean(dim=1),
        "variance": variance,
        "entropy": predictive.mean(dim=1),
    }


class MCDropoutScoring(ScoringMethod):
    name = "epistemic"
    description = "MC dropout (dropout layers only): mutual information (BALD), variance, entropy"

    def __init__(self, n_samples: int = 8, roi_size: Sequence[int] | None = None, seed: int | None = 0):
        self.n_samples, self.roi_size, self.seed = n_samples, roi_size, seed

    def score(self, network: torch.nn.Module, image: torch.Tensor) -> dict[str, float]:
        samples = mc_dropout_probabilities(network, image, self.n_samples, self.roi_size, self.seed)
        return first_item(epistemic_scores(samples))


class Epistemic(TopScored):
    name = "epistemic"
    description = "Highest MC-dropout mutual information (BALD) under the current model"
    method = "epistemic"
