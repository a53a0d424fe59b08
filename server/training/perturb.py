"""The student's view of an unlabelled batch: Gaussian noise (the default), a strong view, or copy-paste.

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

Copy-paste follows BCP (bidirectional copy-paste, Bai et al. 2023): each unlabelled study is mixed with
a labelled one through a box of 2/3 of every side, in one direction or the other (the unlabelled study
around a labelled core, or a labelled study around an unlabelled core), and the target is mixed alike:
the true label on the labelled part (weight 1), the teacher's prediction on the unlabelled part (weight
1/2 times the confidence mask). Labelled and unlabelled studies so share every input, which is how BCP
brings their distributions together. Segmentation only. BCP's values (2/3, 1/2), not tuned here.
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

CUTMIX_AREA = (0.25, 0.5)
COPY_PASTE_SIDE = 2.0 / 3.0  # BCP: the pasted box's side, as a share of each spatial side
COPY_PASTE_PSEUDO_WEIGHT = 0.5  # BCP's alpha: the weight of the teacher's part against the true label's


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


class CopyPaste:
    """Bidirectional copy-paste between a labelled and an unlabelled batch, reproducible from ``seed``."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.calls = 0

    def box(self, spatial: tuple[int, ...]) -> tuple[slice, ...]:
        """A box of ``COPY_PASTE_SIDE`` of every side of ``spatial``, at a random place."""
        sides = [max(1, round(s * COPY_PASTE_SIDE)) for s in spatial]
        starts = [int(self.rng.integers(0, s - side + 1)) for s, side in zip(spatial, sides, strict=True)]
        return tuple(slice(a, a + side) for a, side in zip(starts, sides, strict=True))

    def __call__(
        self,
        image: torch.Tensor,
        onehot: torch.Tensor,
        unlabelled: torch.Tensor,
        probs: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mixed inputs, targets and per-voxel weights, one per unlabelled study.

        ``image`` ``(n, C, *S)`` and ``onehot`` ``(n, K, *S)``: the labelled batch and its one-hot labels;
        ``unlabelled`` ``(m, C, *S)``, the teacher's ``probs`` ``(m, K, *S)`` and confidence ``mask``
        ``(m, *S)``. Unlabelled study ``i`` pairs with labelled study ``i mod n``; the direction alternates
        over the batch and from call to call, so a batch of one still gets both.
        """
        spatial = tuple(unlabelled.shape[2:])
        if tuple(image.shape[2:]) != spatial or tuple(onehot.shape[2:]) != spatial or not spatial:
            raise ValueError(
                f"copy_paste needs segmentation crops of one shape: labelled {list(image.shape)}, "
                f"label {list(onehot.shape)}, unlabelled {list(unlabelled.shape)}"
            )
        pseudo_weight = COPY_PASTE_PSEUDO_WEIGHT * mask.to(probs.dtype)
        true_weight = torch.ones_like(pseudo_weight[0])
        views, targets, weights = [], [], []
        for i in range(unlabelled.shape[0]):
            j = i % image.shape[0]
            labelled = (image[j], onehot[j].to(probs.dtype), true_weight)
            teacher = (unlabelled[i], probs[i], pseudo_weight[i])
            outer, inner = (teacher, labelled) if (i + self.calls) % 2 == 0 else (labelled, teacher)
            window = self.box(spatial)
            mixed = []
            for out, core in zip(outer, inner, strict=True):
                lead = (slice(None),) * (out.dim() - len(spatial))
                out = out.clone()
                out[(*lead, *window)] = core[(*lead, *window)]
                mixed.append(out)
            views.append(mixed[0])
            targets.append(mixed[1])
            weights.append(mixed[2])
        self.calls += 1
        return torch.stack(views), torch.stack(targets), torch.stack(weights)


def box_share(window: tuple[slice, ...], spatial: tuple[int, ...]) -> float:
    """The share of ``spatial`` that ``window`` covers (for tests and logs)."""
    inside = math.prod(int(w.stop) - int(w.start) for w in window)
    return inside / math.prod(spatial)
