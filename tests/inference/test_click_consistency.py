"""Click consistency on the network's grid: a click the network ignored relabels its region (what looks
like the clicked voxel, connected to it, within reach), and nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from server.inference.click_consistency import REACH, consistent_labels, smoothed_noise


def sphere(shape: tuple[int, int, int], centre: tuple[int, int, int], radius: float) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.fixture
def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A noisy volume with two blobs of the same look (a lesion and a look-alike far from it)."""
    rng = np.random.default_rng(0)
    shape = (48, 48, 48)
    lesion, twin = sphere(shape, (16, 24, 24), 5), sphere(shape, (36, 24, 24), 5)
    image = np.where(lesion | twin, 1.5, 1.0) + rng.normal(0, 0.2, shape)
    return image.astype(np.float32), lesion, twin


def test_the_noise_estimate_is_the_smoothed_images(scene: tuple[np.ndarray, ...]) -> None:
    rng = np.random.default_rng(1)
    flat = rng.normal(0, 0.2, (64, 64, 64)).astype(np.float32)
    smooth, noise = smoothed_noise(flat)
    assert noise == pytest.approx(float(smooth.std()), rel=0.1)


def test_a_missed_lesion_is_added_without_its_look_alike(scene: tuple[np.ndarray, ...]) -> None:
    image, lesion, twin = scene
    labels = np.zeros(image.shape, np.uint8)
    fixed, changed = consistent_labels(labels, image, [(2, [16, 24, 24])])
    assert fixed[16, 24, 24] == 2
    assert dice(fixed == 2, lesion) > 0.8
    assert not (fixed[twin] == 2).any()  # not connected to the click: unchanged
    assert (changed == (fixed != labels)).all()


def test_a_false_positive_is_removed_by_a_background_click(scene: tuple[np.ndarray, ...]) -> None:
    image, lesion, twin = scene
    labels = np.where(lesion | twin, 2, 0).astype(np.uint8)
    fixed, _ = consistent_labels(labels, image, [(0, [36, 24, 24])])
    assert fixed[36, 24, 24] == 0 and (fixed[twin] == 0).mean() > 0.8
    assert (fixed[lesion] == 2).all()


def test_agreeing_clicks_change_nothing_and_reach_is_bounded(scene: tuple[np.ndarray, ...]) -> None:
    image, lesion, _ = scene
    labels = np.where(lesion, 2, 0).astype(np.uint8)
    fixed, changed = consistent_labels(labels, image, [(2, [16, 24, 24]), (0, [40, 40, 40])])
    assert not changed.any() and (fixed == labels).all()
    # A click on a uniform background relabels at most its ball: the network's grid elsewhere is kept.
    fixed, changed = consistent_labels(labels, image, [(1, [40, 40, 40])])
    where = np.argwhere(changed)
    assert len(where) and (np.linalg.norm(where - [40, 40, 40], axis=1) <= REACH).all()
    assert (fixed[lesion] == 2).all()


def test_a_later_click_wins(scene: tuple[np.ndarray, ...]) -> None:
    image = scene[0]
    labels = np.zeros(image.shape, np.uint8)
    fixed, _ = consistent_labels(labels, image, [(2, [16, 24, 24]), (1, [16, 24, 24])])
    assert fixed[16, 24, 24] == 1
