"""``tta``: disagreement across test-time augmentations, each prediction inverted before comparing.

Each augmentation is a MONAI invertible transform. Applied to a ``MetaTensor``, it records what it
did (its parameters, including a random transform's draw) in ``applied_operations``; the network's
output gets that record and is mapped back with ``transform.inverse``, so every prediction is
compared in the original image's frame. A network that is equivariant to the augmentations then
scores (close to) zero, and what remains is the model's own inconsistency.

Values per image, over the ``A`` inverted predictions (the un-augmented one included):

- ``variance``: the variance across augmentations of each class probability, averaged over classes
  and voxels; the ranking value;
- ``mutual_information``: ``H(mean_a p_a) - mean_a H(p_a)`` averaged over voxels;
- ``entropy``: the entropy of the averaged prediction, averaged over voxels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.data import MetaTensor
from monai.transforms import Flip, InvertibleTransform, Rotate90

from strategies.epistemic import epistemic_scores
from strategies.ranked import TopScored
from strategies.scoring import ScoringMethod, evaluating, first_item, predict_logits, to_probabilities


def default_augmentations(spatial_dims: int) -> list[InvertibleTransform]:
    """Flips along each spatial axis and 90° rotations in the first plane (identity not included)."""
    flips: list[InvertibleTransform] = [Flip(spatial_axis=a) for a in range(spatial_dims)]
    if spatial_dims == 2:
        rotations: list[InvertibleTransform] = [Rotate90(k, spatial_axes=(0, 1)) for k in (1, 2, 3)]
    else:
        rotations = [Rotate90(1, spatial_axes=(0, 1)), Rotate90(3, spatial_axes=(0, 1))]
    return flips + rotations


def _as_channels(x: torch.Tensor) -> torch.Tensor:
    """(B, C, *spatial) -> a channel-first MetaTensor (B*C, *spatial) that MONAI transforms accept."""
    return MetaTensor(x.reshape(-1, *x.shape[2:]))


def augmented_probabilities(
    predict: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    augmentations: Sequence[InvertibleTransform],
) -> torch.Tensor:
    """(A, B, C, *spatial) probabilities: the plain prediction, then one per augmentation, inverted.

    ``predict`` maps (B, C_in, *spatial) to logits (B, C, *spatial) and may change the spatial shape
    only as the augmentation does (no cropping).
    """
    b = image.shape[0]
    outputs = [to_probabilities(predict(image))]
    for transform in augmentations:
        aug = transform(_as_channels(image))
        if not isinstance(aug, MetaTensor):
            raise TypeError(f"{type(transform).__name__} did not return a MetaTensor; enable meta tracking")
        probs = to_probabilities(predict(aug.as_tensor().reshape(b, -1, *aug.shape[1:])))
        record = MetaTensor(probs.reshape(-1, *probs.shape[2:]), applied_operations=aug.applied_operations)
        restored = transform.inverse(record)
        plain = restored.as_tensor() if isinstance(restored, MetaTensor) else restored
        outputs.append(plain.reshape(b, -1, *plain.shape[1:]))
    return torch.stack(outputs)


def tta_scores(probabilities: torch.Tensor) -> dict[str, torch.Tensor]:
    """(A, B, C, *spatial) -> ``variance``, ``mutual_information``, ``entropy``, each (B,)."""
    values = epistemic_scores(probabilities)
    return {"variance": values["variance"], **{k: v for k, v in values.items() if k != "variance"}}


class TTAScoring(ScoringMethod):
    name = "tta"
    description = "Variance across flips/rot90 test-time augmentations, each inverted before comparing"

    def __init__(
        self,
        spatial_dims: int = 3,
        augmentations: Sequence[InvertibleTransform] | None = None,
        roi_size: Sequence[int] | None = None,
    ) -> None:
        self.augmentations = (
            list(augmentations) if augmentations is not None else default_augmentations(spatial_dims)
        )
        self.roi_size = roi_size

    def score(self, network: torch.nn.Module, image: torch.Tensor) -> dict[str, float]:
        with evaluating(network):
            probs = augmented_probabilities(
                lambda x: predict_logits(network, x, self.roi_size), image, self.augmentations
            )
        return first_item(tta_scores(probs))


class TTA(TopScored):
    name = "tta"
    description = "Highest test-time-augmentation variance under the current model"
    method = "tta"
