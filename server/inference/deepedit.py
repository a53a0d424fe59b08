"""Interactive segmentation, DeepEdit style: the image plus one guidance channel per label.

The network sees ``1 + len(labels)`` channels: the image, then for every label (``background`` first)
a Gaussian around each of its clicks, built by MONAI's ``AddGuidanceSignalDeepEditd``, the transform
the trainer (:mod:`server.training.deepedit`) uses on simulated clicks. With no clicks the guidance is
zero and the model segments automatically, as DeepEdit does. Clicks arrive in the input file's voxel
grid (:mod:`server.inference.clicks`) and are carried into the network's grid through the affines, so
orientation and resampling change nothing for the client. After the network, param ``click_bias``
(default :data:`CLICK_BIAS`) raises each click's label around it until it leads there
(:mod:`server.inference.click_bias`), and param ``click_consistency`` (off by default: measured, it
helps the first click and harms later ones) relabels each ignored click's region by the image
(:mod:`server.inference.click_consistency`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.networks.layers.convutils import gaussian_1d

from server.errors import BadRequest
from server.inference.click_bias import MARGIN, WIDTH, biased_probabilities, biased_scores
from server.inference.click_consistency import consistent_labels
from server.inference.clicks import BACKGROUND, Clicks, parse_clicks, to_grid
from server.inference.request import InferRequest, InferResult, param_flag
from server.inference.segmentation import SegmentationConfig, SegmentationTask, _predictor
from server.inference.task import Data, tensor_input
from server.inference.transforms import channel_argmax

GUIDANCE_SIGMA = 3.0  # voxels of the network's grid, MONAI's default for DeepEdit; a model may set its own
# The widest guidance a model may ask for: the signal is built on a patch of (8 sigma + 1)^3 voxels
# around each click (129^3 at 16), and a click wider than that is no longer a point.
MAX_GUIDANCE_SIGMA = 16.0
# Up to this many voxels a click runs the network once over the whole volume (as MONAI Label's DeepEdit
# does): at 128^3 on two CPU cores 0.45 s, where 64^3 windows with a quarter overlap take 27 passes
# (4.7 s). Larger volumes fall back to the model's sliding windows.
WHOLE_VOLUME_VOXELS = 192**3
# Param ``click_bias``'s default: every click's label raised around it until it leads there
# (:mod:`server.inference.click_bias`). On by the rule registered with its benchmark run (Dice after 1,
# 3, 5 and 10 clicks and NoC@90 no worse than the network alone: benchmarks/results/interactive_bias.json).
CLICK_BIAS = True


def whole_volume_window(shape: Sequence[int], roi: Sequence[int]) -> tuple[int, ...]:
    """One window over the whole volume (each side rounded up to a multiple of 16, so the U-Net's
    strides divide it) when it holds at most :data:`WHOLE_VOLUME_VOXELS`; else ``roi``."""
    whole = tuple(max(int(r), -(-int(n) // 16) * 16) for n, r in zip(shape, roi, strict=True))
    return whole if int(np.prod(whole)) <= WHOLE_VOLUME_VOXELS else tuple(int(r) for r in roi)


def checked_sigma(sigma: float) -> float:
    """``sigma`` as a float, if it is a usable guidance width: above 0, at most :data:`MAX_GUIDANCE_SIGMA`."""
    if not 0 < sigma <= MAX_GUIDANCE_SIGMA:
        raise ValueError(
            f"the guidance sigma must be above 0 and at most {MAX_GUIDANCE_SIGMA:g} voxels, not {sigma}"
        )
    return float(sigma)


def with_background(labels: dict[str, int]) -> dict[str, int]:
    """DeepEdit's label map: ``background`` is label 0 and has clicks of its own."""
    return {BACKGROUND: 0, **{k: v for k, v in labels.items() if k != BACKGROUND}}


def guidance_channels(
    image: np.ndarray, guidance: dict[str, Any], sigma: float = GUIDANCE_SIGMA
) -> np.ndarray:
    """``image`` (C, X, Y, Z) with its first channel kept and one guidance channel per entry of
    ``guidance`` (label name to points ``[i, j, k]``, or MONAI's ``[d, i, j, k]``), in its order, each a
    Gaussian of ``sigma`` voxels around its points.

    The signal of MONAI's ``AddGuidanceSignalDeepEditd`` (a unit impulse at each click, MONAI's
    ``GaussianFilter``, then scaled to [0, 1]), computed on the kernel's patch around each click instead
    of filtering the whole volume: 0.4 s per label at 128^3 on two CPU cores becomes milliseconds, and
    the result is the same (tests/inference/test_clicks.py).
    """
    volume = np.asarray(image, dtype=np.float32)
    channels = [volume[:1]] + [
        guidance_signal(volume.shape[1:], points, sigma)[None] for points in guidance.values()
    ]
    return np.concatenate(channels, axis=0)


def guidance_signal(
    shape: Sequence[int], points: Sequence[Sequence[int]], sigma: float = GUIDANCE_SIGMA
) -> np.ndarray:
    """One label's guidance channel for a volume of ``shape`` (3D)."""
    signal = np.zeros(tuple(int(n) for n in shape), dtype=np.float32)
    clicks = {
        tuple(max(0, min(int(v), int(n) - 1)) for v, n in zip(p[-3:], shape, strict=True))
        for p in points
        if not any(v < 0 for v in p[-3:])
    }
    if not clicks:
        return signal
    k = gaussian_1d(torch.tensor(float(sigma)), truncated=4.0, approx="erf").numpy()
    kernel = k[:, None, None] * k[None, :, None] * k[None, None, :]
    tail = len(k) // 2
    for click in clicks:
        lo = [c - tail for c in click]
        src = tuple(
            slice(max(0, -a), len(k) - max(0, a + len(k) - int(n))) for a, n in zip(lo, shape, strict=True)
        )
        dst = tuple(slice(max(0, a), min(int(n), a + len(k))) for a, n in zip(lo, shape, strict=True))
        signal[dst] += kernel[src]
    low, high = float(signal.min()), float(signal.max())
    return (signal - low) / (high - low) if high > low else signal


class DeepEditTask(SegmentationTask):
    """``labels`` without ``background``; it is added as label 0. ``/info/`` lists the model as
    ``deepedit`` with all labels, which is what makes 3D Slicer's SmartEdit section and the OHIF panel's
    Point Prompts offer it (and send one click list per label). ``sigma``: the guidance Gaussian's width in
    voxels of the network's grid; it must be the one the model was trained with. ``bias_width`` and
    ``bias_margin``: the click bias's bump (voxels) and lead (logits), :mod:`server.inference.click_bias`."""

    type: ClassVar[str] = "deepedit"

    def __init__(
        self,
        labels: dict[str, int],
        config: SegmentationConfig | None = None,
        description: str = "",
        sigma: float = GUIDANCE_SIGMA,
        *,
        bias_width: float = WIDTH,
        bias_margin: float = MARGIN,
    ) -> None:
        self.sigma = checked_sigma(sigma)
        if not (0 < bias_width < float("inf") and 0 <= bias_margin < float("inf")):
            raise ValueError(
                f"the click bias needs a width > 0 and a margin >= 0, not {bias_width}, {bias_margin}"
            )
        self.bias_width, self.bias_margin = float(bias_width), float(bias_margin)
        names = with_background(labels)
        base = config or SegmentationConfig()
        super().__init__(names, replace(base, in_channels=1 + len(names)), description)
        self.names = [n for n, _ in sorted(names.items(), key=lambda item: item[1])]

    def clicks(self, params: dict[str, Any], shape: Sequence[int] | None = None) -> Clicks:
        return parse_clicks(params, self.names, shape if shape is not None else (2**31,) * 3)

    def check_params(self, params: dict[str, Any], input_ext: str) -> None:
        super().check_params(params, input_ext)
        self.clicks(params)
        param_flag(params, "click_consistency")
        param_flag(params, "click_bias")

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
        x = torch.from_numpy(guidance_channels(plain.numpy(), guidance, self.sigma))[None].to(device)
        pred = self.network_scores(x, networks, guidance)[0].cpu()
        if param_flag(request.params, "click_bias", CLICK_BIAS):
            made = self.channel_clicks(guidance)
            bias = biased_scores if len(networks) == 1 else biased_probabilities
            pred = bias(pred, made, self.bias_width, self.bias_margin)
        if param_flag(request.params, "click_consistency"):
            pred = self._consistent(pred, plain[0].numpy(), guidance, clicks.label)
        data["pred"] = MetaTensor(pred)
        data["clicks"] = clicks
        return data

    def channel_clicks(
        self, guidance: dict[str, list[list[int]]], order: Sequence[str] | None = None
    ) -> list[tuple[int, list[int]]]:
        """``(score channel, point)`` for every click of ``guidance`` (label name to points), label by
        label in ``order`` (the model's labels by default), each label's clicks in the order made."""
        return [(self.names.index(name), p) for name in order or self.names for p in guidance[name]]

    def network_scores(
        self, x: torch.Tensor, networks: Sequence[torch.nn.Module], guidance: dict[str, list[list[int]]]
    ) -> torch.Tensor:
        """The networks' scores (1, C, X, Y, Z) for ``x``: the image and the guidance channels built from
        ``guidance`` (label name to clicks on the network's grid), which a subclass may use itself."""
        c = self.config
        window = whole_volume_window(x.shape[2:], c.roi_size)
        with torch.inference_mode():
            scores = sliding_window_inference(
                x, window, c.sw_batch_size, _predictor(networks), overlap=c.overlap, mode="constant"
            )
        assert isinstance(scores, torch.Tensor)
        return scores

    def _consistent(
        self,
        scores: torch.Tensor,
        image: np.ndarray,
        guidance: dict[str, list[list[int]]],
        current: str | None,
    ) -> torch.Tensor:
        """``scores`` (C, X, Y, Z) with each click's region raised to its label: within a label in the
        order sent, the label being edited (``current``) last."""
        order = sorted(self.names, key=lambda name: name == current)
        clicks = self.channel_clicks(guidance, order)
        if all(int(scores[:, p[0], p[1], p[2]].argmax()) == label for label, p in clicks):
            return scores  # the network already agrees with every click
        labels = channel_argmax(scores)[0].numpy()
        fixed, changed = consistent_labels(labels, image, clicks)
        out = scores.clone()
        top = out.max(dim=0).values
        where = torch.from_numpy(changed)
        for index in np.unique(fixed[changed]):
            region = where & torch.from_numpy(fixed == index)
            out[int(index)][region] = top[region] + 1.0
        return out

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
            "interactive": {"guidance": "clicks per label", "sigma": self.sigma, "click_bias": CLICK_BIAS},
        }
