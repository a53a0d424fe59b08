"""Synthetic pools for active-learning benchmarks (see ``/work/shared/data.md``), 2D or 3D.

A heterogeneous pool mixes four kinds of study:

- ``easy`` (60 %): jittered copies (shift, intensity scale, light noise) of a few base images with
  large, bright objects: near-duplicates, one label teaches the rest;
- ``hard`` (25 %): many small objects at low contrast (``HARD_CONTRAST`` 0.2-0.3), blur, a mild
  bias field (``HARD_BIAS`` coefficient 0.04-0.08: a multiplicative field of about 0.8-2.2; the
  former 0.2-0.4 gave fields up to 55x that hid the objects from any model) and Gaussian noise
  (``HARD_NOISE`` sigma 0.2-0.3);
- ``rare`` (10 %): another appearance: inverted contrast (dark objects on a bright background) or an
  intensity offset, and other object counts (one or two large objects, or many small ones);
- ``trap`` (5 %): objects under noise so strong (sigma 3 against contrast 0.3) that no model learns
  them; a strategy that chases noise picks these.

The test set is drawn i.i.d. from the same mixture (the same easy bases). The homogeneous control
pool draws every study from one moderate distribution, with no duplicates and no rare kind; there no
strategy should beat random.

The hard-kind parameters (and ``Config.iters`` in ``label_efficiency.py``) were calibrated with
``benchmarks/pool_headroom.py`` on random labels and the full pool only, never a strategy.

Objects come from ``monai.data.create_test_image_2d/3d`` (a binary mask); intensities, noise, blur
and bias field are applied here with numpy and MONAI intensity transforms, all from one seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from monai.data import create_test_image_2d, create_test_image_3d
from monai.transforms import GaussianSmooth, RandBiasField

KINDS = ("easy", "hard", "rare", "trap")
MIXTURE = {"easy": 0.60, "hard": 0.25, "rare": 0.10, "trap": 0.05}
BACKGROUND = 0.5
HARD_CONTRAST = (0.2, 0.3)
HARD_NOISE = (0.2, 0.3)
HARD_BIAS = (0.04, 0.08)


@dataclass(frozen=True)
class Geometry:
    """Object sizes per variant (radii in voxels)."""

    dims: int
    size: int
    large: tuple[int, int]
    small: tuple[int, int]
    medium: tuple[int, int]
    jitter: int


GEOMETRY = {
    2: Geometry(2, 128, large=(12, 24), small=(3, 7), medium=(6, 14), jitter=4),
    3: Geometry(3, 48, large=(6, 11), small=(2, 4), medium=(3, 7), jitter=2),
}


@dataclass
class Study:
    image: np.ndarray  # (1, *spatial) float32
    label: np.ndarray  # (1, *spatial) uint8, 1 = object
    kind: str


def objects(g: Geometry, num: int, radii: tuple[int, int], rs: np.random.RandomState) -> np.ndarray:
    """A binary mask (*spatial) of ``num`` discs/spheres with radius in ``[radii[0], radii[1])``."""
    if g.dims == 2:
        _, lab = create_test_image_2d(
            g.size, g.size, num, radii[1], radii[0], num_seg_classes=1, random_state=rs
        )
    else:
        _, lab = create_test_image_3d(
            g.size, g.size, g.size, num, radii[1], radii[0], num_seg_classes=1, random_state=rs
        )
    return (lab > 0).astype(np.uint8)


def _noise(shape: tuple[int, ...], sigma: float, rs: np.random.RandomState) -> np.ndarray:
    return rs.normal(0.0, sigma, shape)


def _bias(image: np.ndarray, coeff: float, rs: np.random.RandomState) -> np.ndarray:
    field = RandBiasField(degree=3, coeff_range=(coeff, coeff), prob=1.0)
    field.set_random_state(int(rs.randint(2**31 - 1)))
    return np.asarray(field(image[None]))[0]


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return np.asarray(GaussianSmooth(sigma)(image[None]))[0]


def _study(image: np.ndarray, mask: np.ndarray, kind: str) -> Study:
    return Study(image[None].astype(np.float32), mask[None].astype(np.uint8), kind)


class PoolGenerator:
    """Draws studies of each kind; the easy bases are fixed at construction (part of the distribution)."""

    def __init__(self, dims: int, seed: int, n_bases: int = 3) -> None:
        self.g = GEOMETRY[dims]
        self.rs = np.random.RandomState(seed)
        self.bases = [
            objects(self.g, int(self.rs.randint(3, 6)), self.g.large, self.rs) for _ in range(n_bases)
        ]

    def easy(self) -> Study:
        rs, g = self.rs, self.g
        base = self.bases[rs.randint(len(self.bases))]
        shift = tuple(int(s) for s in rs.randint(-g.jitter, g.jitter + 1, g.dims))
        mask = np.roll(base, shift, axis=tuple(range(g.dims)))
        contrast = 0.8 * rs.uniform(0.9, 1.1)
        image = BACKGROUND + contrast * mask + _noise(mask.shape, 0.05, rs)
        return _study(image, mask, "easy")

    def hard(self) -> Study:
        rs, g = self.rs, self.g
        mask = objects(g, int(rs.randint(6, 11)), g.small, rs)
        image = BACKGROUND + rs.uniform(HARD_CONTRAST[0], HARD_CONTRAST[1]) * mask.astype(np.float64)
        image = _blur(image, rs.uniform(0.5, 1.0))
        image = _bias(image, rs.uniform(*HARD_BIAS), rs)
        return _study(image + _noise(mask.shape, rs.uniform(*HARD_NOISE), rs), mask, "hard")

    def rare(self) -> Study:
        rs, g = self.rs, self.g
        if rs.rand() < 0.5:
            mask = objects(g, int(rs.randint(1, 3)), g.large, rs)
        else:
            mask = objects(g, int(rs.randint(15, 21)), g.small, rs)
        contrast = rs.uniform(0.5, 0.8)
        inverted = rs.rand() < 0.5  # dark objects on a bright background; else everything 1.2 brighter
        image = 1.5 - contrast * mask if inverted else BACKGROUND + 1.2 + contrast * mask
        return _study(image + _noise(mask.shape, 0.1, rs), mask, "rare")

    def trap(self) -> Study:
        rs, g = self.rs, self.g
        mask = objects(g, int(rs.randint(3, 7)), g.medium, rs)
        image = BACKGROUND + 0.3 * mask + _noise(mask.shape, 3.0, rs)
        return _study(image, mask, "trap")

    def homogeneous(self) -> Study:
        """The control distribution: moderate objects, contrast and noise; every study different."""
        rs, g = self.rs, self.g
        mask = objects(g, int(rs.randint(3, 8)), g.medium, rs)
        image = BACKGROUND + 0.35 * mask + _noise(mask.shape, 0.35, rs)
        return _study(image, mask, "homogeneous")

    def mixture(self, n: int, iid: bool = False) -> list[Study]:
        """``n`` studies: kinds drawn i.i.d. from the mixture, or (pools) in its exact proportions."""
        if iid:
            kinds = list(self.rs.choice(KINDS, size=n, p=[MIXTURE[k] for k in KINDS]))
        else:
            counts = {k: round(MIXTURE[k] * n) for k in KINDS}
            counts["easy"] += n - sum(counts.values())
            kinds = [k for k in KINDS for _ in range(counts[k])]
            self.rs.shuffle(kinds)
        return [getattr(self, str(k))() for k in kinds]

    def control(self, n: int) -> list[Study]:
        return [self.homogeneous() for _ in range(n)]


def make_pools(dims: int, seed: int, pool_size: int, test_size: int) -> dict[str, list[Study]]:
    """``pool``/``test`` (heterogeneous mixture) and ``control_pool``/``control_test`` for one seed."""
    gen = PoolGenerator(dims, seed)
    return {
        "pool": gen.mixture(pool_size),
        "test": gen.mixture(test_size, iid=True),
        "control_pool": gen.control(pool_size),
        "control_test": gen.control(test_size),
    }
