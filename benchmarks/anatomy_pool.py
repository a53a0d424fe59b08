"""The anatomy pool of the label-efficiency issue, built exactly as that issue fixed it before any result.

- Source: the MNI152 2009 template in the ``nilearn`` wheel (``nilearn/datasets/data/``): T1, grey- and
  white-matter probability maps at 1 mm. Read with nibabel; nilearn itself is never imported (its
  dependencies are not needed: ``pip install --no-deps nilearn``).
- Each study: MONAI ``Rand3DElasticd`` at 1 mm on T1 and both maps jointly: rotation +-10 deg, scale
  0.9-1.1, translation +-8 mm, elastic sigma 8-12 voxels, magnitude 100-300 (the registered fallback,
  150-450, with ``--fallback``); then 2 mm isotropic, cropped or padded to 96x112x96. Labels on the
  warped maps: 1 grey matter, 2 white matter (the larger probability, where it is >= 0.5), 0 elsewhere.
  3D variant: that volume at 3 mm, 64x80x64. 2D variant: one axial slice of the 2 mm volume at a random
  height within the central 40 %, resized to 128x128.
- Acquisition: site A (70 %): a bias field (MONAI ``RandBiasField``, coefficient up to 0.3) and Gaussian
  noise of sigma 0.02-0.06 of the intensity range; site B (20 %): contrast inverted inside the brain (a
  T2-like look) and the same noise; site C (10 %, the rare one): through-plane resolution halved and a
  Gaussian blur of sigma 1.5 voxels; traps (5 %, out of site A's share): noise of sigma 0.5.
- Pools: 150 studies (2D) or 60 (3D), a test set of 60 (2D) or 20 (3D) drawn i.i.d. from the same
  mixture, and a control pool and test set of site A only, without traps.

The warp at 1 mm is the cost: about 8 s per study on two CPU threads here (46 s for a first call on one
thread), so the 2D mixture pool and test set (210 studies) take about half an hour, the control sets as
much again; ``--device cuda`` runs the warp on a GPU. Studies are cached one file each under
``--cache`` (keyed by the recipe), so a pool is built once and every benchmark reads the same one.
``--smoke`` shrinks the template 4x before the warp (sigma and magnitude scaled alike) for a CI-sized
run; a smoke pool is never a result.

    .venv/bin/python benchmarks/anatomy_pool.py --variant 2d --workers 2     # the 2D pools, cached
    .venv/bin/python benchmarks/anatomy_pool.py --variant 2d --smoke --pool 8 --test 4
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import GaussianSmooth, Rand3DElasticd, RandBiasField, ResizeWithPadOrCrop

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "benchmarks" / ".cache" / "anatomy"
TEMPLATE = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
SITES = (("A", 0.65), ("B", 0.20), ("C", 0.10), ("trap", 0.05))  # traps come out of site A's 70 %
SIZES = {"2d": {"pool": 150, "test": 60}, "3d": {"pool": 60, "test": 20}}
POOL_SEED = 2026  # the pool is fixed: one generation seed; campaigns vary their own seeds


@dataclass(frozen=True)
class Recipe:
    """What a study is made with; its hash names the cache."""

    variant: str = "2d"
    magnitude: tuple[float, float] = (100.0, 300.0)  # the registered fallback: (150, 450)
    sigma: tuple[float, float] = (8.0, 12.0)
    rotate_deg: float = 10.0
    scale: float = 0.1
    translate_mm: float = 8.0
    shrink: int = 1  # smoke only: the template downsampled this many times before the warp

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class Study:
    image: np.ndarray  # (1, *spatial) float32
    label: np.ndarray  # (1, *spatial) uint8: 0 background, 1 grey matter, 2 white matter
    kind: str  # A, B, C or trap


def template_dir() -> Path:
    spec = importlib.util.find_spec("nilearn")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the MNI152 template ships in the nilearn wheel: pip install --no-deps nilearn")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def load_template(shrink: int = 1) -> dict[str, np.ndarray]:
    folder = template_dir()
    out = {}
    for key, name in TEMPLATE.items():
        volume = np.asarray(nib.load(str(folder / name)).dataobj, dtype=np.float32)
        if key == "t1":
            volume = (volume - volume.min()) / (volume.max() - volume.min())  # intensity range [0, 1]
        if shrink > 1:
            t = torch.from_numpy(volume)[None, None]
            volume = F.avg_pool3d(t, shrink, ceil_mode=True)[0, 0].numpy()
        out[key] = volume[None]
    return out


def warp(template: dict[str, np.ndarray], recipe: Recipe, seed: int, device: str) -> dict[str, np.ndarray]:
    s = recipe.shrink
    elastic = Rand3DElasticd(
        keys=list(template),
        sigma_range=(recipe.sigma[0] / s, recipe.sigma[1] / s),
        magnitude_range=(recipe.magnitude[0] / s, recipe.magnitude[1] / s),
        prob=1.0,
        rotate_range=[float(np.deg2rad(recipe.rotate_deg))] * 3,
        scale_range=[recipe.scale] * 3,
        translate_range=[recipe.translate_mm / s] * 3,
        mode="bilinear",
        padding_mode="zeros",
        device=torch.device(device),
    )
    elastic.set_random_state(seed)
    warped = elastic({k: torch.from_numpy(v) for k, v in template.items()})
    return {k: np.asarray(torch.as_tensor(v).cpu(), dtype=np.float32) for k, v in warped.items()}


def resample(volume: np.ndarray, factor: float, shape: tuple[int, ...]) -> np.ndarray:
    """``volume`` (1, X, Y, Z) with voxels ``factor`` times larger (trilinear), then cropped or padded
    to ``shape``."""
    size = [max(1, round(n / factor)) for n in volume.shape[1:]]
    t = F.interpolate(torch.from_numpy(volume)[None], size=size, mode="trilinear", align_corners=False)[0]
    return np.asarray(ResizeWithPadOrCrop(shape)(t), dtype=np.float32)


def labels_of(gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    label = np.zeros(gm.shape, np.uint8)
    tissue = np.maximum(gm, wm) >= 0.5
    label[tissue & (gm >= wm)] = 1
    label[tissue & (wm > gm)] = 2
    return label


def acquire(image: np.ndarray, brain: np.ndarray, kind: str, rs: np.random.RandomState) -> np.ndarray:
    """The site's look on a (1, *spatial) image in [0, 1]; the last axis is through-plane."""
    if kind == "trap":
        return image + rs.normal(0.0, 0.5, image.shape).astype(np.float32)
    if kind == "C":
        halved = image.copy()
        z = halved.shape[-1] - halved.shape[-1] % 2
        pairs = 0.5 * (halved[..., 0:z:2] + halved[..., 1:z:2])
        halved[..., 0:z:2], halved[..., 1:z:2] = pairs, pairs
        return np.asarray(GaussianSmooth(1.5)(halved), dtype=np.float32)
    if kind == "A":
        field = RandBiasField(degree=3, coeff_range=(0.0, 0.3), prob=1.0)
        field.set_random_state(int(rs.randint(2**31 - 1)))
        image = np.asarray(field(image), dtype=np.float32)
    if kind == "B":
        image = np.where(brain, 1.0 - image, image).astype(np.float32)
    return image + rs.normal(0.0, rs.uniform(0.02, 0.06), image.shape).astype(np.float32)


def make_study(template: dict[str, np.ndarray], recipe: Recipe, index: int, kind: str, device: str) -> Study:
    rs = np.random.RandomState(POOL_SEED * 100_003 + index)
    warped = warp(template, recipe, int(rs.randint(2**31 - 1)), device)
    factor = 2.0 / recipe.shrink  # 1 mm voxels (shrink: larger) to 2 mm
    at2 = {k: resample(v, factor, (96, 112, 96)) for k, v in warped.items()}
    brain = (at2["gm"] + at2["wm"]) >= 0.5
    image = acquire(at2["t1"], brain, kind, rs)
    if recipe.variant == "3d":
        image = resample(image, 1.5, (64, 80, 64))
        gm, wm = resample(at2["gm"], 1.5, (64, 80, 64)), resample(at2["wm"], 1.5, (64, 80, 64))
        return Study(image, labels_of(gm, wm), kind)
    z = int(rs.randint(round(96 * 0.3), round(96 * 0.7)))
    planes = [v[..., z] for v in (image, at2["gm"], at2["wm"])]
    image2, gm2, wm2 = (
        F.interpolate(torch.from_numpy(p)[None], size=(128, 128), mode="bilinear", align_corners=False)[
            0
        ].numpy()
        for p in planes
    )
    return Study(image2.astype(np.float32), labels_of(gm2, wm2), kind)


def kinds_for(n: int, control: bool, rs: np.random.RandomState) -> list[str]:
    if control:
        return ["A"] * n
    names = [k for k, _ in SITES]
    return list(rs.choice(names, size=n, p=[p for _, p in SITES]))


def _build(args: tuple[Recipe, int, str, str, str]) -> str:
    recipe, index, kind, device, path = args
    target = Path(path)
    if not target.is_file():
        study = make_study(load_template(recipe.shrink), recipe, index, kind, device)
        tmp = target.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, image=study.image, label=study.label, kind=study.kind)
        tmp.replace(target)
    return path


SETS = ("pool", "test", "control_pool", "control_test")


def make_pools(
    recipe: Recipe,
    sizes: dict[str, int],
    cache: Path = CACHE,
    device: str = "cpu",
    workers: int = 1,
    sets: tuple[str, ...] = SETS,
) -> dict[str, list[Study]]:
    """``pool`` and ``test`` (the mixture) and ``control_pool`` and ``control_test`` (site A only), or the
    ``sets`` asked for, built or read from the cache. Study ``i`` of a set is the same study in every run
    of the same recipe, whichever sets are asked for."""
    folder = cache / f"{recipe.variant}-{recipe.key()}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.json").write_text(json.dumps(asdict(recipe), indent=2))
    rs = np.random.RandomState(POOL_SEED)
    plan: dict[str, list[tuple[int, str]]] = {}
    offset = 0
    for name, n, control in (
        ("pool", sizes["pool"], False),
        ("test", sizes["test"], False),
        ("control_pool", sizes["pool"], True),
        ("control_test", sizes["test"], True),
    ):
        plan[name] = [(offset + i, kind) for i, kind in enumerate(kinds_for(n, control, rs))]
        offset += 10_000
    plan = {name: items for name, items in plan.items() if name in sets}
    jobs = [
        (recipe, index, kind, device, str(folder / f"{index:05d}.npz"))
        for items in plan.values()
        for index, kind in items
    ]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_build, jobs))
    else:
        for job in jobs:
            _build(job)
    out: dict[str, list[Study]] = {}
    for name, items in plan.items():
        out[name] = []
        for index, _ in items:
            with np.load(folder / f"{index:05d}.npz") as f:
                out[name].append(Study(f["image"], f["label"], str(f["kind"])))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", choices=("2d", "3d"), default="2d")
    ap.add_argument("--fallback", action="store_true", help="the registered fallback: magnitude 150-450")
    ap.add_argument("--smoke", action="store_true", help="template shrunk 4x: CI-sized, never a result")
    ap.add_argument("--pool", type=int, default=None)
    ap.add_argument("--test", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=CACHE)
    args = ap.parse_args(argv)
    recipe = Recipe(
        variant=args.variant,
        magnitude=(150.0, 450.0) if args.fallback else (100.0, 300.0),
        shrink=4 if args.smoke else 1,
    )
    sizes = dict(SIZES[args.variant])
    sizes.update({k: v for k, v in (("pool", args.pool), ("test", args.test)) if v is not None})
    torch.set_num_threads(1 if args.workers > 1 else 2)
    start = time.perf_counter()
    pools = make_pools(recipe, sizes, args.cache, args.device, args.workers)
    summary: dict[str, Any] = {
        "recipe": asdict(recipe),
        "seconds": round(time.perf_counter() - start, 1),
        "sets": {
            name: {
                "studies": len(studies),
                "kinds": {k: sum(1 for s in studies if s.kind == k) for k, _ in SITES},
                "shape": list(studies[0].image.shape) if studies else None,
                "label_fractions": (
                    np.bincount(np.concatenate([s.label.ravel() for s in studies]), minlength=3)
                    / sum(s.label.size for s in studies)
                )
                .round(4)
                .tolist()
                if studies
                else None,
            }
            for name, studies in pools.items()
        },
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
