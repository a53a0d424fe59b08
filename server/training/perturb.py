"""The student's view of an unlabelled batch: Gaussian noise (the default) or a strong view.

The strong view follows FixMatch (Sohn et al. 2020) and UniMatch (Yang et al. 2023) for segmentation:
the teacher predicts the clean batch, the student sees it under random intensity transforms and CutMix,
and the teacher's probabilities and confidence mask are mixed the same way, so every target stays on
its voxel. The intensity transforms are MONAI's, per study, each with its own probability:

- scale (x 1 +- 0.3) and shift (+- 0.3) of the intensities, p 0.5 each;
- gamma contrast (0.5 - 2.0), p 0.5; a histogram shift (5 - 10 control points), p 0.3;
- Gaussian blur (sigma 0.5 - 1.5), p 0.3; Gaussian noise (std up to 0.1), p 0.5.

CutMix pastes a box of 25 - 50 % of the volume from the next study of the batch (rolled by one). It
only applies to segmentation (targets with the input's spatial shape), and needs two studies or more.
These settings were fixed before any benchmark run and are not tuned to one.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandAdjustContrast,
    RandGaussianNoise,
    RandGaussianSmooth,
    RandHistogramShift,
    RandScaleIntensity,
    RandShiftIntensity,
)
from monai.utils import convert_to_tensor

PERTURBATIONS = ("noise", "strong")
CUTMIX_AREA = (0.25, 0.5)


def intensity_transforms(seed: int) -> Compose:
    """The strong view's intensity transforms, for one channel-first study, seeded."""
    sigma = (0.5, 1.5)
    chain = Compose(
        [
            RandScaleIntensity(factors=0.3, prob=0.5),
            RandShiftIntensity(offsets=0.3, prob=0.5),
            RandAdjustContrast(gamma=(0.5, 2.0), prob=0.5),
            RandHistogramShift(num_control_points=(5, 10), prob=0.3),
            RandGaussianSmooth(sigma_x=sigma, sigma_y=sigma, sigma_z=sigma, prob=0.3),
            RandGaussianNoise(std=0.1, prob=0.5),
        ]
    )
    chain.set_random_state(seed=seed)
    return chain


class StrongView:
    """Strong views of batches, reproducible from ``seed``."""

    def __init__(self, seed: int = 0, cutmix: bool = True) -> None:
        self.intensity = intensity_transforms(seed)
        self.cutmix = cutmix
        self.rng = np.random.default_rng(seed + 1)

    def images(self, batch: torch.Tensor) -> torch.Tensor:
        """Each study of ``(B, C, *spatial)`` through the intensity transforms (on its own device)."""
        out = [self.intensity(x) for x in batch]  # MONAI returns MetaTensors: plain tensors go on
        return torch.stack([convert_to_tensor(y, batch.dtype, batch.device, track_meta=False) for y in out])

    def box(self, spatial: tuple[int, ...]) -> tuple[slice, ...]:
        """A random box covering ``CUTMIX_AREA`` of ``spatial`` (the same share along every axis)."""
        share = float(self.rng.uniform(*CUTMIX_AREA)) ** (1.0 / len(spatial))
        sides = [max(1, round(s * share)) for s in spatial]
        starts = [int(self.rng.integers(0, s - side + 1)) for s, side in zip(spatial, sides, strict=True)]
        return tuple(slice(a, a + side) for a, side in zip(starts, sides, strict=True))

    def __call__(self, batch: torch.Tensor, *targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``batch`` under the intensity transforms, then CutMix of the batch and of every target alike.

        A target is ``(B, ...)`` whose trailing dims are the batch's spatial shape (probabilities
        ``(B, K, *spatial)``, a mask ``(B, *spatial)``); with any other shape (classification) or a
        single study there is no CutMix.
        """
        out = [self.images(batch), *targets]
        spatial = tuple(batch.shape[2:])
        mixable = all(t.dim() > len(spatial) and tuple(t.shape[-len(spatial) :]) == spatial for t in targets)
        if not self.cutmix or batch.shape[0] < 2 or not spatial or not mixable:
            return tuple(out)
        window = self.box(spatial)
        mixed = []
        for t in out:
            lead = (slice(None),) * (t.dim() - len(spatial))
            t = t.clone()
            t[(*lead, *window)] = torch.roll(t, 1, dims=0)[(*lead, *window)]
            mixed.append(t)
        return tuple(mixed)


def box_share(window: tuple[slice, ...], spatial: tuple[int, ...]) -> float:
    """The share of ``spatial`` that ``window`` covers (for tests and logs)."""
    inside = math.prod((w.stop - w.start) for w in window)
    return inside / math.prod(spatial)
