"""Agreement between two label volumes: Dice per label and the mean symmetric surface distance.

Pure functions of arrays (the review service loads the files). The surface distance is computed only
where it is cheap: volumes up to :data:`SURFACE_MAX_VOXELS` voxels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SURFACE_MAX_VOXELS = 256**3


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """2|A∩B| / (|A|+|B|) of two boolean masks; 1.0 when both are empty."""
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def surface_distance(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> float | None:
    """The mean symmetric distance (mm) between the two masks' surfaces; None when either is empty."""
    if not a.any() or not b.any():
        return None
    surface_a, surface_b = _surface(a), _surface(b)
    from scipy import ndimage  # here, not at import: the web process starts without scipy

    to_b = ndimage.distance_transform_edt(~surface_b, sampling=spacing)
    to_a = ndimage.distance_transform_edt(~surface_a, sampling=spacing)
    distances = np.concatenate([to_b[surface_a], to_a[surface_b]])
    return float(distances.mean())


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    surface: np.ndarray = np.logical_and(mask, ~ndimage.binary_erosion(mask))
    return surface


def per_label(
    a: np.ndarray, b: np.ndarray, spacing: Sequence[float]
) -> dict[int, tuple[float, float | None]]:
    """``{label: (dice, surface_mm)}`` for every label index (not 0) present in either volume."""
    if a.shape != b.shape:
        raise ValueError(f"label shapes differ: {list(a.shape)} and {list(b.shape)}")
    labels = sorted((set(np.unique(a).tolist()) | set(np.unique(b).tolist())) - {0})
    cheap = a.size <= SURFACE_MAX_VOXELS
    out: dict[int, tuple[float, float | None]] = {}
    for value in labels:
        mask_a, mask_b = a == value, b == value
        out[int(value)] = (dice(mask_a, mask_b), surface_distance(mask_a, mask_b, spacing) if cheap else None)
    return out


def majority(volumes: Sequence[np.ndarray]) -> np.ndarray:
    """A voxelwise vote of label volumes: each voxel takes the label more than half of them give it,
    else background (with two readers: the labels both gave)."""
    stack = np.stack([np.asarray(v) for v in volumes])
    out = np.zeros(stack.shape[1:], dtype=np.uint8)
    need = len(volumes) // 2 + 1
    for value in sorted(set(np.unique(stack).tolist()) - {0}):
        out[(stack == value).sum(axis=0) >= need] = value
    return out
