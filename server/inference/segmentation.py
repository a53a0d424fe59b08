"""3D segmentation: U-Net (or Attention U-Net) over sliding windows, inverted to the input's grid."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.transforms import Compose, CropForegroundd, EnsureChannelFirstd, Invertd, Orientationd, Spacingd
from monai.utils import optional_import
from torch import nn

from server.errors import BadRequest
from server.inference.networks import UNET_CHANNELS, segmentation_network
from server.inference.request import InferRequest, InferResult, param_flag
from server.inference.task import Data, InferTask, Transform, result_path, tensor_input
from server.inference.transforms import ChannelArgmaxd, KeepLargestComponentd, intensity_transform
from server.inference.writer import result_format, write_like

_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def crf_available() -> bool:
    """MONAI's CRF block needs MONAI's compiled C++ extension (``BUILD_MONAI=1``)."""
    return bool(optional_import("monai._C")[1])


@dataclass(frozen=True)
class SegmentationConfig:
    """Everything that shapes the network and its pre/post-processing (shown in ``/info/``)."""

    network: str = "unet"  # unet | attention_unet
    channels: tuple[int, ...] = UNET_CHANNELS["light"]
    num_res_units: int = 2
    in_channels: int = 1
    preset: str = "ct"  # ct | mr | minmax | none (intensity normalisation)
    window: tuple[float, float] | None = None  # overrides the preset's intensity range
    spacing: tuple[float, float, float] | None = (1.5, 1.5, 2.0)  # None: the input's own spacing
    roi_size: tuple[int, int, int] = (64, 64, 64)
    sw_batch_size: int = 1
    overlap: float = 0.25
    crop_foreground: bool = False  # crop to the body (intensity > 0 after scaling) before inference
    largest_component: bool = False
    crf: bool = False
    crf_iterations: int = 5


class SegmentationTask(InferTask):
    """Labels are ``{name: index}`` with 0 the background; the network has ``len(labels) + 1`` outputs."""

    type: ClassVar[str] = "segmentation"

    def __init__(
        self, labels: dict[str, int], config: SegmentationConfig | None = None, description: str = ""
    ) -> None:
        super().__init__(labels, dimension=3, description=description)
        self.config = config or SegmentationConfig()
        if self.config.crf and not crf_available():
            raise ValueError(
                "crf is on but MONAI's CRF needs its C++ extension (monai._C); install MONAI built with "
                "BUILD_MONAI=1 or turn crf off"
            )
        self.out_channels = max(self.label_names().values(), default=0) + 1

    # ---- hooks ---------------------------------------------------------------------------------
    def network(self) -> nn.Module:
        c = self.config
        return segmentation_network(c.network, c.in_channels, self.out_channels, c.channels, c.num_res_units)

    def pre_transforms(self, request: InferRequest) -> Sequence[Transform]:
        c = self.config
        transforms: list[Transform] = [
            EnsureChannelFirstd(keys="image"),
            Orientationd(keys="image", axcodes="RAS", labels=_RAS_LABELS),
        ]
        if c.spacing is not None:
            # MONAI skips the resampling itself when the spacing already matches.
            transforms.append(Spacingd(keys="image", pixdim=c.spacing, mode="bilinear"))
        scale = intensity_transform("image", c.preset, c.window)
        if scale is not None:
            transforms.append(scale)
        if c.crop_foreground:
            transforms.append(CropForegroundd(keys="image", source_key="image", margin=4, allow_smaller=True))
        return transforms

    def inferer(
        self, data: Data, networks: Sequence[nn.Module], device: torch.device, request: InferRequest
    ) -> Data:
        c = self.config
        image = tensor_input(data)
        if image.shape[0] != c.in_channels:
            raise BadRequest(f"the model takes {c.in_channels} channel(s); the image has {image.shape[0]}")
        x = image[None].to(device)
        predictor = _predictor(networks)
        with torch.inference_mode():
            scores = sliding_window_inference(
                x, c.roi_size, c.sw_batch_size, predictor, overlap=c.overlap, mode="constant"
            )
            assert isinstance(scores, torch.Tensor)
            if self._crf_on(request.params):
                from monai.networks.blocks import CRF

                logits = scores if len(networks) == 1 else torch.log(scores.clamp_min(1e-6))
                scores = CRF(iterations=c.crf_iterations)(logits, x)
        # A MetaTensor: Invertd only inverts MetaTensors (a plain tensor is skipped with a warning).
        data["pred"] = MetaTensor(scores[0].cpu())
        return data

    def invert(self, data: Data, pre: Compose, request: InferRequest) -> Data:
        # Scores (not labels) are inverted: interpolating them is smoother than nearest-neighbour
        # labels when spacing differs; when it matches this is a flip or nothing.
        return Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False, to_tensor=True)(
            data
        )

    def post_transforms(self, request: InferRequest) -> Sequence[Transform]:
        transforms: list[Transform] = [ChannelArgmaxd(keys="pred")]
        if self.config.largest_component or param_flag(request.params, "largest_component"):
            transforms.append(KeepLargestComponentd(keys="pred", labels=sorted(self.label_names().values())))
        return transforms

    def writer(self, data: Data, request: InferRequest) -> InferResult:
        fmt = result_format(
            request.params, request.image_ext, "uint8" if self.out_channels <= 256 else "uint16"
        )
        label = tensor_input(data, "pred")[0].numpy()
        dest = write_like(label, request.image, request.image_ext, result_path(request, fmt.ext), fmt)
        return InferResult(dest, {"label_names": self.label_names(), "centroids": {}})

    def check_params(self, params: dict[str, Any], input_ext: str) -> None:
        result_format(params, input_ext)
        param_flag(params, "largest_component")
        if self._crf_on(params) and not crf_available():
            raise BadRequest("crf refinement is unavailable: MONAI's CRF needs its C++ extension (monai._C)")

    def describe(self) -> dict[str, Any]:
        c = asdict(self.config)
        return {**super().describe(), "network": {k: v for k, v in c.items() if v is not None}}

    def _crf_on(self, params: dict[str, Any]) -> bool:
        return self.config.crf or param_flag(params, "crf")


def _predictor(networks: Sequence[nn.Module]) -> Callable[[torch.Tensor], torch.Tensor]:
    """One network: its logits. An ensemble: the mean of the members' softmax probabilities."""
    if len(networks) == 1:
        return networks[0]

    def average(x: torch.Tensor) -> torch.Tensor:
        total = torch.softmax(networks[0](x), dim=1)
        for net in networks[1:]:
            total += torch.softmax(net(x), dim=1)
        return total / len(networks)

    return average
