"""A generated demo studies folder: synthetic CT-like volumes, so the server runs with nothing given."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.data import create_test_image_3d


def make_volume(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like volume (Hounsfield-ish intensities) and its label (0 background, 1 organ, 2 lesion)."""
    image, label = create_test_image_3d(
        size,
        size,
        size,
        num_objs=6,
        rad_max=max(3, size // 6),
        rad_min=2,
        num_seg_classes=2,
        random_state=np.random.RandomState(seed),
    )
    rng = np.random.default_rng(seed)
    hu = -1000.0 + 1060.0 * (image > 0) + 80.0 * (label == 2) + rng.normal(0, 25, image.shape)
    return hu.astype(np.int16), label.astype(np.uint8)


def generate(
    folder: Path, count: int = 12, size: int = 64, progress: Callable[[int, int], None] | None = None
) -> int:
    """Write ``count`` volumes ``demo_NNN.nii.gz`` into ``folder`` (existing ones are kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    written = 0
    for i in range(count):
        path = folder / f"demo_{i:03d}.nii.gz"
        if not path.exists():
            image, _ = make_volume(size, seed=i)
            tmp = folder / f".tmp-demo-{i}.nii.gz"
            nib.save(nib.Nifti1Image(image, affine), str(tmp))
            tmp.rename(path)
            written += 1
        if progress:
            progress(i + 1, count)
    return written
