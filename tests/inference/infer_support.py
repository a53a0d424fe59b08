"""Helpers for the inference tests: CT-like volumes and a real labelloop server (a subprocess)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from tests.conftest import NO_WORKER, REPO, Server, free_port

APPS = REPO / "apps"
TEST_APPS = Path(__file__).resolve().parent / "apps"
# Non-identity voxel-to-world matrix: flipped x/y, anisotropic, offset (what a real CT header has).
CT_AFFINE = np.array([[-1.5, 0, 0, 10.0], [0, -1.5, 0, 20.0], [0, 0, 2.0, -30.0], [0, 0, 0, 1]])


def ct_volume(path: Path, seed: int = 0, shape: tuple[int, int, int] = (32, 32, 32)) -> Path:
    """Spheres in Hounsfield-like units (-1000 air, organ ~60, lesions ~150), saved as NIfTI."""
    from monai.data import create_test_image_3d

    image, _ = create_test_image_3d(
        *shape, num_objs=4, rad_max=6, rad_min=2, num_seg_classes=2, random_state=np.random.RandomState(seed)
    )
    rng = np.random.default_rng(seed)
    data = np.where(image > 0, 60.0 + 90.0 * (image > 0.75), -1000.0) + rng.normal(0, 10, shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.int16), CT_AFFINE), str(path))
    return path


class LiveServer(Server):
    """A real server for ``app`` with ``--conf`` settings and no job consumer (these tests never train)."""

    def __init__(
        self, app: Path, studies: Path, conf: dict[str, str] | None = None, env: dict[str, str] | None = None
    ) -> None:
        args = ["--app", str(app)]
        for key, value in (conf or {}).items():
            args += ["--conf", key, value]
        super().__init__(studies, free_port(), args=args, env={**NO_WORKER, **(env or {})})


ServerFactory = Callable[..., LiveServer]
