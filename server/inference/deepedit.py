"""Interactive segmentation, DeepEdit style: the image plus one guidance channel per label.

The network sees ``1 + len(labels)`` channels: the image, then for every label (``background`` first)
a Gaussian around each of its clicks, built by MONAI's ``AddGuidanceSignalDeepEditd``, the transform
the trainer (:mod:`server.training.deepedit`) uses on simulated clicks. With no clicks the guidance is
zero and the model segments automatically, as DeepEdit does. Clicks arrive in the input file's voxel
grid (:mod:`server.inference.clicks`) and are carried into the network's grid through the affines, so
orientation and resampling change nothing for the client.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import torch
from monai.apps.deepedit.transforms import AddGuidanceSignalDeepEditd
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference

from server.errors import BadRequest
from server.inference.clicks import BACKGROUND, Clicks, parse_clicks, to_grid
from server.inference.request import InferRequest, InferResult
from server.inference.segmentation import SegmentationConfig, SegmentationTask, _predictor
from server.inference.task import Data, tensor_input

GUIDANCE_SIGMA = 3  # voxels of the network's grid, MONAI's default for DeepEdit


def with_background(labels: dict[str, int]) -> dict[str, int]:
    """DeepEdit's label map: ``background`` is label 0 and has clicks of its own."""
    return {BACKGROUND: 0, **{k: v for k, v in labels.items() if k != BACKGROUND}}


def guidance_channels(image: np.ndarray, guidance: dict[str, Any]) -> np.ndarray:
    """``image`` (C, X, Y, Z) with its first channel kept and one guidance channel per entry of
    ``guidance`` (label name to points ``[i, j, k]``, or MONAI's ``[d, i, j, k]``), in its order."""
    step = AddGuidanceSignalDeepEditd(keys="image", guidance="guidance", sigma=GUIDANCE_SIGMA)
    item: dict[Any, Any] = {"image": np.asarray(image, dtype=np.float32), "guidance": guidance}
    out = step(item)["image"]
    return np.asarray(out, dtype=np.float32)


class DeepEditTask(SegmentationTask):
    """``labels`` without ``background``; it is added as label 0. ``/info/`` lists the model as
    ``deepedit`` with all labels, which is what makes 3D Slicer's SmartEdit section and the OHIF panel's
    Point Prompts offer it (and send one click list per label)."""

    type: ClassVar[str] = "deepedit"

    def __init__(
        self, labels: dict[str, int], config: SegmentationConfig | None = None, description: str = ""
    ) -> None:
        names = with_background(labels)
        base = config or SegmentationConfig()
        super().__init__(names, replace(base, in_channels=1 + len(names)), description)
        self.names = [n for n, _ in sorted(names.items(), key=lambda item: item[1])]

    def clicks(self, params: dict[str, Any], shape: Sequence[int] | None = None) -> Clicks:
        return parse_clicks(params, self.names, shape if shape is not None else (2**31,) * 3)

    def check_params(self, params: dict[str, Any], input_ext: str) -> None:
        super().check_params(params, input_ext)
        self.clicks(params)

    def inferer(
        self, data: Data, networks: Sequence[torch.nn.Module], device: torch.device, request: InferRequest
    ) -> Data:
        image = data["image"]
        meta = image.meta if isinstance(image, MetaTensor) else {}
        shape = [int(v) for v in np.asarray(meta.get("spatial_shape", image.shape[1:]))]
        clicks = self.clicks(request.params, shape)
        source = np.asarray(meta.get("original_affine", np.eye(4)), dtype=np.float64)
        target = np.asarray(image.affine if isinstance(image, MetaTensor) else np.eye(4), dtype=np.float64)
        grid = tuple(image.shape[1:])
        guidance = {name: to_grid(clicks.points[name], source, target, grid) for name in self.names}
        plain = tensor_input(data)
        if plain.shape[0] != 1:
            raise BadRequest(f"the model takes a single-channel image; the image has {plain.shape[0]}")
        x = torch.from_numpy(guidance_channels(plain.numpy(), guidance))[None].to(device)
        c = self.config
        with torch.inference_mode():
            scores = sliding_window_inference(
                x, c.roi_size, c.sw_batch_size, _predictor(networks), overlap=c.overlap, mode="constant"
            )
        assert isinstance(scores, torch.Tensor)
        data["pred"] = MetaTensor(scores[0].cpu())
        data["clicks"] = clicks
        return data

    def writer(self, data: Data, request: InferRequest) -> InferResult:
        result = super().writer(data, request)
        clicks = data.get("clicks")
        if isinstance(clicks, Clicks):
            result.params["clicks"] = clicks.count
            result.clicks, result.clicked_label = clicks.points, clicks.label
        return result

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "interactive": {"guidance": "clicks per label", "sigma": GUIDANCE_SIGMA},
        }
