"""Clicks for interactive models, as the viewer plugins send them, and where they land in the network's grid.

Two forms reach ``POST /infer/{model}`` (read from the MONAI Label plugins in the ``monailabel`` wheel):

- DeepGrow form (3D Slicer for a ``deepgrow`` model, the OHIF panel for anything but ``deepedit``):
  ``{"label": "liver", "foreground": [[i, j, k], ...], "background": [[i, j, k], ...]}``.
- DeepEdit form (3D Slicer's multi-label mode and the OHIF panel for a ``deepedit`` model): one list
  per label name, ``{"liver": [[i, j, k], ...], "background": [...], "label": "liver"}``; background
  clicks are the ``background`` label's.

Points are voxel indices ``[i, j, k]`` of the image file as the client loaded it (Slicer's IJK,
OHIF's ``worldToIndex``), which is the array MONAI's readers return. A point outside the image is a
400, not a silent clamp: the client and the server disagree about the volume.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from server.errors import BadRequest

BACKGROUND = "background"
MAX_CLICKS = 1000  # per request: each click is a Gaussian in one guidance channel


@dataclass(frozen=True)
class Clicks:
    """Voxel indices per label name (``background`` included), and the label the user was working on."""

    points: dict[str, list[list[int]]]
    label: str | None = None

    @property
    def count(self) -> int:
        return sum(len(p) for p in self.points.values())

    def as_json(self) -> dict[str, Any]:
        return {"label": self.label, "points": {k: v for k, v in self.points.items() if v}}


def parse_clicks(params: dict[str, Any], names: Sequence[str], shape: Sequence[int]) -> Clicks:
    """The request's clicks for a model whose labels are ``names`` (``background`` among them), checked
    against the image's voxel ``shape``. No clicks at all is valid: the model runs automatically."""
    label = params.get("label")
    if label is not None and not isinstance(label, str):
        raise BadRequest("param 'label': expected a label name")
    foreground = params.get("foreground")
    points: dict[str, list[list[int]]] = {name: [] for name in names}
    if foreground not in (None, []):
        # DeepGrow form: the foreground clicks are for ``label`` (the only label when there is one).
        target = label or _only_label(names)
        if target not in points or target == BACKGROUND:
            choices = ", ".join(n for n in names if n != BACKGROUND)
            raise BadRequest(f"param 'label': {label!r} is not a label of this model (it has: {choices})")
        points[target] = _points("foreground", foreground, shape)
    for name in names:
        if name in params and params[name] is not None and not points[name]:
            points[name] = _points(name, params[name], shape)
    total = sum(len(p) for p in points.values())
    if total > MAX_CLICKS:
        raise BadRequest(f"{total} clicks in one request; at most {MAX_CLICKS}")
    return Clicks(points, label if label in points else None)


def _only_label(names: Sequence[str]) -> str | None:
    named = [n for n in names if n != BACKGROUND]
    return named[0] if len(named) == 1 else None


def _points(key: str, value: Any, shape: Sequence[int]) -> list[list[int]]:
    if not isinstance(value, list):
        raise BadRequest(f"param {key!r}: expected a list of [i, j, k] voxel indices")
    out: list[list[int]] = []
    for point in value:
        if (
            not isinstance(point, list)
            or len(point) != 3
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in point)
            or not all(math.isfinite(v) for v in point)
        ):
            raise BadRequest(f"param {key!r}: {point!r} is not an [i, j, k] voxel index")
        ijk = [round(v) for v in point]
        if any(not 0 <= v < n for v, n in zip(ijk, shape[:3], strict=False)):
            raise BadRequest(f"param {key!r}: point {ijk} is outside the image (shape {list(shape[:3])})")
        out.append(ijk)
    return out


def to_grid(
    points: list[list[int]], source_affine: np.ndarray, target_affine: np.ndarray, shape: Sequence[int]
) -> list[list[int]]:
    """Voxel indices of one grid (``source_affine``, voxel to world) in another (``target_affine``): the
    input file's indices in the network's grid after orientation, resampling and cropping."""
    if not points:
        return []
    ijk1 = np.concatenate([np.asarray(points, dtype=np.float64), np.ones((len(points), 1))], axis=1)
    mapped = (np.linalg.inv(target_affine) @ source_affine @ ijk1.T).T[:, :3]
    top = np.asarray(shape[:3]) - 1
    grid: list[list[int]] = np.clip(np.rint(mapped), 0, top).astype(int).tolist()
    return grid
