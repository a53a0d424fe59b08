"""2D/3D classification: probabilities per class as JSON, or a Grad-CAM saliency map as an image."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from monai.transforms import Resize, Resized
from monai.visualize import GradCAM
from torch import nn

from server.inference.networks import CLASSIFIER_HEADS, GRADCAM_LAYERS, classifier_network
from server.inference.request import InferRequest, InferResult
from server.inference.task import Data, InferTask, Transform, result_path, tensor_input
from server.inference.transfer import load_backbone
from server.inference.transforms import ChannelFirstd, intensity_transform
from server.inference.weights import INIT_SEED, seeded
from server.inference.writer import result_format, write_like

ACTIVATIONS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class ClassificationConfig:
    network: str = "cnn"  # cnn | resnet18 | densenet121
    dimension: int = 3
    in_channels: int = 1
    spatial_size: tuple[int, ...] = (32, 32, 32)  # the network's input size (images are resized)
    activation: str = "softmax"  # softmax: one class per image; sigmoid: independent labels
    preset: str = "minmax"  # intensity normalisation (see transforms.PRESETS)
    window: tuple[float, float] | None = None
    pretrained: Path | None = None  # a local weights file for the backbone (transfer learning)
    freeze_backbone: bool = True  # for the trainer: train only the new head at first


class ClassificationTask(InferTask):
    """``/infer`` returns ``{"probabilities": {label: p}, "prediction": label}``; ``output=image``
    returns the Grad-CAM map of the predicted class, resized to and written with the input's geometry."""

    type: ClassVar[str] = "classification"

    def __init__(
        self, labels: list[str], config: ClassificationConfig | None = None, description: str = ""
    ) -> None:
        c = config or ClassificationConfig()
        super().__init__(list(labels), dimension=c.dimension, description=description)
        if c.activation not in ACTIVATIONS:
            raise ValueError(f"activation {c.activation!r}: expected one of {', '.join(ACTIVATIONS)}")
        if len(c.spatial_size) != c.dimension:
            raise ValueError(f"spatial_size {c.spatial_size} does not have {c.dimension} dimensions")
        if c.pretrained is not None and not Path(c.pretrained).is_file():
            raise ValueError(f"pretrained weights {c.pretrained}: not a file")
        self.config = c
        self.head = CLASSIFIER_HEADS[c.network]

    # ---- hooks ---------------------------------------------------------------------------------
    def network(self) -> nn.Module:
        c = self.config
        return classifier_network(c.network, c.dimension, c.in_channels, len(self.labels))

    def initial_network(self, seed: int = INIT_SEED) -> nn.Module:
        net = seeded(self.network, seed)
        if self.config.pretrained is not None:
            load_backbone(net, self.config.pretrained, [self.head])
        return net

    def initial_weights(self) -> str:
        base = super().initial_weights()
        if self.config.pretrained is not None:
            return f"{base}, backbone from {Path(self.config.pretrained).name}"
        return base

    def pre_transforms(self, request: InferRequest) -> Sequence[Transform]:
        c = self.config
        transforms: list[Transform] = [
            ChannelFirstd(keys="image", spatial_dims=c.dimension, channels=c.in_channels)
        ]
        scale = intensity_transform("image", c.preset, c.window)
        if scale is not None:
            transforms.append(scale)
        transforms.append(Resized(keys="image", spatial_size=c.spatial_size, mode="area"))
        return transforms

    def inferer(
        self, data: Data, networks: Sequence[nn.Module], device: torch.device, request: InferRequest
    ) -> Data:
        x = tensor_input(data)[None].to(device)
        with torch.inference_mode():
            total = self._activate(networks[0](x))
            for net in networks[1:]:
                total = total + self._activate(net(x))
            probs = (total / len(networks))[0].float().cpu()
        data["pred"] = probs
        if request.output == "image":
            # Grad-CAM needs gradients and hooks: a private copy keeps the cached network clean.
            target = int(torch.argmax(probs))
            cam = GradCAM(copy.deepcopy(networks[0]), target_layers=GRADCAM_LAYERS[self.config.network])
            data["cam"] = cam(x.clone(), class_idx=target)[0].detach().cpu()
        return data

    def writer(self, data: Data, request: InferRequest) -> InferResult:
        probs = [float(p) for p in data["pred"]]
        names = list(self.labels)
        best = max(range(len(probs)), key=probs.__getitem__)
        params: dict[str, Any] = {
            "label_names": self.label_names(),
            "probabilities": dict(zip(names, probs, strict=True)),
            "prediction": names[best],
            "activation": self.config.activation,
            "centroids": {},
        }
        if "cam" not in data:
            return InferResult(None, params)
        fmt = result_format(request.params, request.image_ext, "float32")
        original = data["image_spatial_shape"]
        cam = Resize(spatial_size=original, mode="bilinear" if len(original) == 2 else "trilinear")(
            data["cam"]
        )
        dest = write_like(
            tensor_input({"cam": cam}, "cam")[0].numpy(),
            request.image,
            request.image_ext,
            result_path(request, fmt.ext),
            fmt,
        )
        params["gradcam"] = {"class": names[best], "layer": GRADCAM_LAYERS[self.config.network]}
        return InferResult(dest, params)

    def check_params(self, params: dict[str, Any], input_ext: str) -> None:
        result_format(params, input_ext, "float32")

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {
            **super().describe(),
            "network": {
                "network": c.network,
                "dimension": c.dimension,
                "in_channels": c.in_channels,
                "spatial_size": list(c.spatial_size),
                "activation": c.activation,
                "pretrained": Path(c.pretrained).name if c.pretrained else None,
            },
        }

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        if self.config.activation == "sigmoid":
            return torch.sigmoid(logits)
        return torch.softmax(logits, dim=1)
