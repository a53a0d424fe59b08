"""Synthetic pools for active-learning benchmarks (see ``/work/shared/data.md``), 2D or 3D.

A heterogeneous pool mixes four kinds of study:

- ``easy`` (60 %): jittered copies (shift, intensity scale, light noise) of a few base images with
  large, bright objects: near-duplicates, one label teaches the rest;
- ``hard`` (25 %): medium objects, contrast 0.3-0.7 and Gaussian noise (sigma 0.1-0.25) drawn per
  study, blur, under one of four confounders (``HARD_LOOKS``): unlabelled bars of the objects'
  intensity, dark objects, a strong bias field, or soft bright blobs that are not objects. The
  former single hard kind (small objects, contrast 0.2-0.3, noise 0.2-0.3) was limited by its noise:
  the full pool scored no better on it than 4 random labels, so labels had nothing to add there;
- ``rare`` (10 %): one of four other appearances (``RARE_LOOKS``: inverted contrast, an intensity
  offset, bright rims around dark centres, a coarse textured background), with other object counts
  (one or two large objects, or many medium ones): a long tail, each look 2.5 % of the pool;
- ``trap`` (5 %): objects under noise so strong (sigma 3 against contrast 0.3) that no model learns
  them; a strategy that chases noise picks these.

The test set is drawn i.i.d. from the same mixture (the same easy bases). The homogeneous control
pool draws every study from one moderate distribution, with no duplicates and no rare kind; there no
strategy should beat random.

The hard and rare kinds (and ``Config.iters`` in ``label_efficiency.py``) were chosen with
``benchmarks/pool_headroom.py`` on random labels and the full pool only, never a strategy; the
committed ``benchmarks/results/pool_headroom_2d.json`` says which of its criteria this pool meets.

Objects come from ``monai.data.create_test_image_2d/3d`` (a binary mask); intensities, noise, blur
and bias field are applied here with numpy and MONAI intensity transforms, all from one seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from monai.data import create_test_image_2d, create_test_image_3d
from monai.transforms import GaussianSmooth, RandBiasField
from scipy import ndimage

KINDS = ("easy", "hard", "rare", "trap")
MIXTURE = {"easy": 0.60, "hard": 0.25, "rare": 0.10, "trap": 0.05}
BACKGROUND = 0.5
HARD_CONTRAST = (0.3, 0.7)
HARD_NOISE = (0.1, 0.25)
HARD_BIAS = (0.02, 0.05)
HARD_LOOKS = ("bars", "dark", "bias", "blobs")
HARD_STRONG_BIAS = (0.15, 0.25)
RARE_LOOKS = ("inverted", "offset", "ring", "textured")


@dataclass(frozen=True)
class Geometry:
    """Object sizes per variant (radii in voxels)."""

    dims: int
    size: int
    large: tuple[int, int]
    small: tuple[int, int]
    medium: tuple[int, int]
    jitter: int
    bar: tuple[int, int]  # bar thickness, [low, high)


GEOMETRY = {
    2: Geometry(2, 128, large=(12, 24), small=(3, 7), medium=(6, 14), jitter=4, bar=(4, 8)),
    3: Geometry(3, 48, large=(6, 11), small=(2, 4), medium=(3, 7), jitter=2, bar=(2, 4)),
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


def bars(g: Geometry, num: int, rs: np.random.RandomState) -> np.ndarray:
    """A binary mask (*spatial) of ``num`` thin axis-aligned bars (rods in 3D): long in one axis."""
    out = np.zeros((g.size,) * g.dims, dtype=np.uint8)
    for _ in range(num):
        axis = int(rs.randint(g.dims))
        window = []
        for d in range(g.dims):
            extent = int(rs.randint(g.size // 4, g.size // 2)) if d == axis else int(rs.randint(*g.bar))
            start = int(rs.randint(0, g.size - extent))
            window.append(slice(start, start + extent))
        out[tuple(window)] = 1
    return out


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
        """Medium objects under one of four confounders (each 1/4 of the hard share), with contrast and
        noise drawn per study: ``bars`` of the same intensity that are not labelled, ``dark`` objects
        (negative contrast), a strong ``bias`` field, or soft bright ``blobs`` that are not objects.
        What a model taught on easy studies gets wrong differs per confounder, so one hard label does
        not teach the others."""
        rs, g = self.rs, self.g
        look = HARD_LOOKS[rs.randint(len(HARD_LOOKS))]
        mask = objects(g, int(rs.randint(3, 7)), g.medium, rs)
        m = mask.astype(np.float64)
        contrast = rs.uniform(*HARD_CONTRAST)
        if look == "bars":
            image = BACKGROUND + contrast * np.maximum(m, bars(g, int(rs.randint(2, 5)), rs))
        elif look == "dark":
            image = BACKGROUND + 0.5 - contrast * m
        elif look == "bias":
            image = _bias(BACKGROUND + contrast * m, rs.uniform(*HARD_STRONG_BIAS), rs)
        else:  # "blobs": smooth bright regions, as bright as the objects at their centre
            seeds = np.zeros(mask.shape)
            seeds[tuple(rs.randint(0, g.size, (g.dims, int(rs.randint(3, 7)))))] = 1.0
            blobs = _blur(seeds, g.size / 16)
            blobs = blobs / (blobs.max() + 1e-6)
            image = BACKGROUND + contrast * np.maximum(m, blobs)
        image = _blur(image, rs.uniform(0.5, 1.0))
        if look != "bias":
            image = _bias(image, rs.uniform(*HARD_BIAS), rs)
        return _study(image + _noise(mask.shape, rs.uniform(*HARD_NOISE), rs), mask, "hard")

    def rare(self) -> Study:
        """One of four other appearances (a long tail: each is 1/4 of the rare share)."""
        rs, g = self.rs, self.g
        look = RARE_LOOKS[rs.randint(len(RARE_LOOKS))]
        if rs.rand() < 0.5:
            mask = objects(g, int(rs.randint(1, 3)), g.large, rs)
        else:
            mask = objects(g, int(rs.randint(6, 11)), g.medium, rs)
        contrast = rs.uniform(0.5, 0.8)
        m = mask.astype(np.float64)
        if look == "inverted":  # dark objects on a bright background
            image = 1.5 - contrast * m
        elif look == "offset":  # everything 1.2 brighter
            image = BACKGROUND + 1.2 + contrast * m
        elif look == "ring":  # a bright rim around a background-dark centre (ring enhancement)
            core = ndimage.binary_erosion(mask, iterations=2)
            image = BACKGROUND + contrast * (m - core)
        else:  # "textured": a coarse random texture on the background, objects flat
            texture = _blur(_noise(mask.shape, 1.0, rs), 3.0)
            texture = 0.5 * texture / (np.abs(texture).max() + 1e-6)
            image = BACKGROUND + contrast * m + texture * (1 - m)
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
