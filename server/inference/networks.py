"""Network factories shared by inference and training: one place builds each architecture.

A task's ``network()`` calls these; a trainer builds the very same network by calling that method
(or these functions with the task's config), so weights published by training load for inference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers import Norm
from monai.networks.nets import AttentionUnet, DenseNet121, UNet, resnet18
from torch import nn

# U-Net widths per level (4 levels, 3 down-samplings). "classic" is the liver-tumour U-Net's 64 base
# channels; "light" runs on a laptop CPU in seconds for a 128^3 volume.
UNET_CHANNELS: dict[str, tuple[int, ...]] = {"light": (8, 16, 32, 64), "classic": (64, 128, 256, 512)}
SEGMENTATION_NETWORKS = ("unet", "attention_unet")
CLASSIFIER_NETWORKS = ("cnn", "resnet18", "densenet121")

# The classification head of each classifier (a parameter-name prefix): transfer learning replaces
# and trains it while the rest (the backbone) may stay frozen.
CLASSIFIER_HEADS: dict[str, str] = {"cnn": "classifier", "resnet18": "fc", "densenet121": "class_layers.out"}
# The layer Grad-CAM reads (the last convolutional feature map).
GRADCAM_LAYERS: dict[str, str] = {"cnn": "features", "resnet18": "layer4", "densenet121": "class_layers.relu"}


def segmentation_network(
    kind: str,
    in_channels: int,
    out_channels: int,
    channels: Sequence[int] = UNET_CHANNELS["light"],
    num_res_units: int = 2,
) -> nn.Module:
    """A 3D encoder-decoder with batch norm: MONAI's ``UNet`` or ``AttentionUnet``."""
    strides = (2,) * (len(channels) - 1)
    if kind == "unet":
        return UNet(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=tuple(channels),
            strides=strides,
            num_res_units=num_res_units,
            norm=Norm.BATCH,
        )
    if kind == "attention_unet":
        # AttentionUnet uses batch norm in every convolution block.
        return AttentionUnet(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=tuple(channels),
            strides=strides,
        )
    raise ValueError(
        f"unknown segmentation network {kind!r}: expected one of {', '.join(SEGMENTATION_NETWORKS)}"
    )


class SmallCNN(nn.Module):
    """Three conv-pool blocks (conv, batch norm, ReLU, max-pool) and two dense layers; returns logits.

    The activation (softmax or sigmoid) is the task's, not the network's, so training can use a
    loss on logits. Adaptive pooling before the dense layers makes it independent of the input size.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        channels: Sequence[int] = (16, 32, 64),
        hidden: int = 64,
        dropout: float = 0.2,
        pooled: int = 2,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError("spatial_dims must be 2 or 3")
        conv: type[nn.Module] = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        norm: type[nn.Module] = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
        pool: type[nn.Module] = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
        adaptive: type[nn.Module] = nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d
        layers: list[nn.Module] = []
        width = in_channels
        for out in channels:
            layers += [conv(width, out, 3, padding=1), norm(out), nn.ReLU(inplace=True), pool(2)]
            width = out
        self.features = nn.Sequential(*layers)
        self.pool = adaptive(pooled)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(width * pooled**spatial_dims, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(self.pool(self.features(x)))
        return out


def classifier_network(kind: str, spatial_dims: int, in_channels: int, num_classes: int) -> nn.Module:
    """A 2D or 3D classifier returning logits: the small CNN, MONAI's ResNet-18 or DenseNet-121."""
    if kind == "cnn":
        return SmallCNN(spatial_dims, in_channels, num_classes)
    if kind == "resnet18":
        return resnet18(spatial_dims=spatial_dims, n_input_channels=in_channels, num_classes=num_classes)
    if kind == "densenet121":
        return DenseNet121(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes)
    raise ValueError(f"unknown classifier {kind!r}: expected one of {', '.join(CLASSIFIER_NETWORKS)}")
