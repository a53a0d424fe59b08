from __future__ import annotations

import torch
from monai.transforms import RandFlip, RandRotate90
from torch import nn

from strategies.tta import TTA, TTAScoring, augmented_probabilities, default_augmentations


def pointwise(dims: int) -> nn.Module:
    """A 1x1 convolution: equivariant to every flip and rotation."""
    torch.manual_seed(0)
    return (nn.Conv2d if dims == 2 else nn.Conv3d)(1, 2, 1)


class Ramp(nn.Module):
    """Not equivariant: adds a left-to-right gradient to the foreground logit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-3.0, 3.0, x.shape[-1]).expand_as(x)
        return torch.cat([torch.zeros_like(x), x + ramp], dim=1)


def test_inverted_predictions_agree_for_an_equivariant_network_2d() -> None:
    image = torch.rand(2, 1, 16, 12)  # not square: rot90 changes the shape and must be undone
    with torch.no_grad():
        probs = augmented_probabilities(pointwise(2), image, default_augmentations(2))
    assert probs.shape == (6, 2, 2, 16, 12)
    assert (probs - probs[0]).abs().max().item() < 1e-6
    # without the inversion the flipped predictions would not line up with the plain one
    assert (torch.flip(probs[0], dims=[-1]) - probs[0]).abs().max().item() > 0.01


def test_inverted_predictions_agree_for_an_equivariant_network_3d() -> None:
    image = torch.rand(1, 1, 8, 10, 12)
    with torch.no_grad():
        probs = augmented_probabilities(pointwise(3), image, default_augmentations(3))
    assert probs.shape[0] == 6 and probs.shape[-3:] == (8, 10, 12)
    assert (probs - probs[0]).abs().max().item() < 1e-6


def test_equivariant_network_scores_zero_and_non_equivariant_positive() -> None:
    image = torch.rand(1, 1, 16, 16)
    equivariant = TTAScoring(spatial_dims=2).score(pointwise(2), image)
    ramp = TTAScoring(spatial_dims=2).score(Ramp(), image)
    assert next(iter(equivariant)) == "variance"
    assert equivariant["variance"] < 1e-10
    assert ramp["variance"] > 1e-3


def test_random_transforms_record_their_draw_and_invert() -> None:
    flip, rot = RandFlip(prob=0.5, spatial_axis=1), RandRotate90(prob=1.0, max_k=3)
    flip.set_random_state(3)
    rot.set_random_state(3)
    image = torch.rand(1, 1, 12, 12)
    with torch.no_grad():
        probs = augmented_probabilities(pointwise(2), image, [flip, rot, flip, rot, rot])
    assert (probs - probs[0]).abs().max().item() < 1e-6


def test_tta_strategy_ranks_by_tta_scores(make_pool, context) -> None:
    pool = make_pool(["a", "b"], {"tta": {"a": 0.2, "b": 0.1}})
    assert [p.image_id for p in TTA().select(pool, 1, context())] == ["a"]
