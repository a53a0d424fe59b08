"""3D segmentation recipe: a U-Net, MONAI's DiceCE loss, random crops, flips and intensity jitter."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot
from monai.transforms import (
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    RandFlipd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)
from torch import nn

from server.training.base import Trainer

NetworkFactory = Callable[[], nn.Module]
IntensityFactory = Callable[[str], Any]  # key -> a MONAI intensity transform (or None)
_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


class SegmentationTrainer(Trainer):
    """Labels are voxel values 0 (background) .. K.

    An app hands in its inference task's pieces so that training sees what inference sees and the
    published weights load for inference: ``network_factory`` (the task's ``network``), ``spacing``
    and ``intensity`` (a factory of the task's intensity transform). Without them: a small U-Net, the
    input's own spacing and ``intensity_range`` scaled to [0, 1].
    """

    key_metric_name = "val_mean_dice"

    def __init__(
        self,
        model: str | None = None,
        description: str = "3D segmentation: U-Net, DiceCE loss",
        *,
        labels: Sequence[str] | dict[str, int] = ("foreground",),
        network_factory: NetworkFactory | None = None,
        roi_size: Sequence[int] = (96, 96, 96),
        intensity_range: tuple[float, float] | None = (-1000.0, 1000.0),
        intensity: IntensityFactory | None = None,
        spacing: Sequence[float] | None = None,
        **defaults: Any,
    ) -> None:
        super().__init__(model, description, **defaults)
        self.intensity = intensity
        self.spacing = tuple(float(s) for s in spacing) if spacing is not None else None
        self.labels = dict(labels) if isinstance(labels, dict) else {n: i for i, n in enumerate(labels, 1)}
        self.out_channels = max(self.labels.values(), default=0) + 1
        self.network_factory = network_factory
        self.roi_size = tuple(int(s) for s in roi_size)
        self.intensity_range = intensity_range

    def network(self) -> nn.Module:
        if self.network_factory is not None:
            return self.network_factory()
        from monai.networks.nets import UNet

        return UNet(
            spatial_dims=3,
            in_channels=1,
            out_channels=self.out_channels,
            channels=(8, 16, 32, 64),
            strides=(2, 2, 2),
            num_res_units=2,
        )

    def loss(self) -> nn.Module:
        return DiceCELoss(to_onehot_y=True, softmax=True)

    def load_transforms(self) -> list[Any]:
        keys = ["image", "label"]
        transforms: list[Any] = [
            LoadImaged(keys, image_only=True),
            EnsureChannelFirstd(keys),
            Orientationd(keys, axcodes="RAS", labels=_RAS_LABELS),
        ]
        if self.spacing is not None:
            transforms.append(Spacingd(keys, pixdim=self.spacing, mode=("bilinear", "nearest")))
        if self.intensity is not None:
            scale = self.intensity("image")
            if scale is not None:
                transforms.append(scale)
        elif self.intensity_range is not None:
            transforms.append(ScaleIntensityRanged("image", *self.intensity_range, 0.0, 1.0, clip=True))
        else:
            transforms.append(NormalizeIntensityd("image"))
        return [
            *transforms,
            EnsureTyped("image", dtype=torch.float32, track_meta=False),
            EnsureTyped("label", dtype=torch.long, track_meta=False),
            SpatialPadd(keys, self.roi_size),
        ]

    def augmentations(self) -> list[Any]:
        keys = ["image", "label"]
        return [
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys, prob=0.5, spatial_axis=1),
            RandFlipd(keys, prob=0.5, spatial_axis=2),
            RandRotate90d(keys, prob=0.25, max_k=3),
            RandScaleIntensityd("image", factors=0.1, prob=0.5),
            RandShiftIntensityd("image", offsets=0.1, prob=0.5),
        ]

    def train_transforms(self) -> Any:
        from monai.transforms import Compose

        crop = RandSpatialCropd(["image", "label"], self.roi_size, random_size=False)
        return Compose([*self.load_transforms(), crop, *self.augmentations()])

    def validate(self, network: nn.Module, loader: Any, device: torch.device) -> tuple[float, float]:
        """Mean foreground Dice per study (sliding windows of ``roi_size``)."""
        metric = DiceMetric(include_background=False, reduction="none", ignore_empty=False)
        total, count = 0.0, 0
        for batch in loader:
            image, label = self.inputs(batch, device)
            logits = sliding_window_inference(image, self.roi_size, 1, network, overlap=0.25)
            assert isinstance(logits, torch.Tensor)
            pred = one_hot(logits.argmax(dim=1, keepdim=True), self.out_channels)
            truth = one_hot(label.clamp(0, self.out_channels - 1), self.out_channels)
            scores = metric(pred, truth)
            assert isinstance(scores, torch.Tensor)
            per_item = torch.nan_to_num(scores.float(), nan=0.0).mean(dim=1)
            total += float(per_item.sum())
            count += int(per_item.numel())
        return total, count

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg["roi_size"] = list(self.roi_size)
        return cfg
