"""A MONAI Bundle as a hosted model: inference through the bundle's own config.

A bundle is a folder with ``configs/metadata.json``, ``configs/inference.json`` (or ``.yaml``) and
``models/model.pt`` (https://docs.monai.io/en/stable/mb_specification.html). :class:`BundleTask` reads
them with ``monai.bundle.ConfigParser``: the network is the bundle's ``network_def``, its first weights
the bundle's ``models/model.pt`` (later versions come from the model registry, like any model's); a
request runs the bundle's ``preprocessing`` (its ``LoadImaged`` reads the file), its ``inferer`` and its
``postprocessing`` (without ``SaveImaged``: the server writes the result in the input's geometry, as for
every model). Labels and description come from ``metadata.json``. Hosted with ``--conf bundles
DIR[,DIR]`` on any app (server/apploader.py).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor, decollate_batch
from monai.inferers import SimpleInferer
from monai.transforms import Compose, LoadImaged, SaveImaged
from torch import nn

from server.errors import BadRequest
from server.inference.request import InferRequest, InferResult
from server.inference.task import Data, InferTask, Transform, result_path, tensor_input
from server.inference.writer import result_format, write_like

CONFIGS = ("inference.json", "inference.yaml", "inference.yml")
WEIGHTS = "model.pt"


class BundleError(ValueError):
    """The folder is not a bundle this server can host; the message says why."""


def read_metadata(path: Path) -> dict[str, Any]:
    meta_file = path / "configs" / "metadata.json"
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"bundle {path.name}: configs/metadata.json does not read: {exc}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("network_data_format"), dict):
        raise BundleError(f"bundle {path.name}: metadata.json has no network_data_format")
    return meta


class BundleTask(InferTask):
    """One bundle's inference. Segmentation: ``channel_def`` of the first output names the labels."""

    type: ClassVar[str] = "segmentation"

    def __init__(self, path: Path) -> None:
        self.path = Path(path).resolve()
        meta = read_metadata(self.path)
        config = next(
            (self.path / "configs" / c for c in CONFIGS if (self.path / "configs" / c).is_file()), None
        )
        if config is None:
            raise BundleError(f"bundle {self.path.name}: no configs/inference.json")
        self.config_file = config
        fmt = meta["network_data_format"]
        try:
            self.image_key, image = next(iter(fmt["inputs"].items()))
            self.pred_key, pred = next(iter(fmt["outputs"].items()))
        except (KeyError, StopIteration, AttributeError) as exc:
            raise BundleError(
                f"bundle {self.path.name}: network_data_format needs inputs and outputs"
            ) from exc
        channels = pred.get("channel_def") or {}
        labels = {str(v).lower(): int(k) for k, v in channels.items() if str(v).lower() != "background"}
        shape = image.get("spatial_shape") or [0, 0, 0]
        super().__init__(labels, dimension=len(shape), description=str(meta.get("description", "")))
        self.version = str(meta.get("version", ""))
        self.name = str(meta.get("name", self.path.name))
        self.out_channels = int(pred.get("num_channels", max(labels.values(), default=0) + 1))
        self._parsed: _Parts | None = None
        self._lock = threading.Lock()

    # ---- the bundle's config ---------------------------------------------------------------------
    def parser(self) -> ConfigParser:
        """A fresh parse of the bundle's config (instantiated objects are per parse)."""
        parser = ConfigParser()
        parser.read_meta(str(self.path / "configs" / "metadata.json"))
        parser.read_config(str(self.config_file))
        parser["bundle_root"] = str(self.path)
        return parser

    def _content(self, parser: ConfigParser, *keys: str) -> Any:
        for key in keys:
            if key in parser:
                return parser.get_parsed_content(key, instantiate=True)
        return None

    # ---- hooks ---------------------------------------------------------------------------------
    def network(self) -> nn.Module:
        net = self._content(self.parser(), "network_def")
        if not isinstance(net, nn.Module):
            raise BundleError(f"bundle {self.path.name}: network_def is not a torch module")
        return net

    def initial_network(self, seed: int = 0) -> nn.Module:
        """The bundle's own weights (``models/model.pt``), else a fresh network."""
        net = self.network()
        weights = self.path / "models" / WEIGHTS
        if weights.is_file():
            state = torch.load(weights, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
                state = state["model"]  # a checkpoint saved as {"model": state_dict, ...}
            net.load_state_dict(state)
        return net

    def initial_weights(self) -> str:
        weights = self.path / "models" / WEIGHTS
        return (
            f"the bundle's models/{WEIGHTS}"
            if weights.is_file()
            else "initialised (the bundle has no weights)"
        )

    def _parts(self) -> _Parts:
        """The bundle's loader, pre-processing, inferer and post-processing, parsed once (inference
        transforms hold no per-request state) and shared by every request."""
        with self._lock:
            if self._parsed is None:
                parser = self.parser()
                pre = _transforms(self._content(parser, "preprocessing", "pre_transforms"))
                load = next((t for t in pre if isinstance(t, LoadImaged)), None)
                if load is None:
                    raise BundleError(f"bundle {self.path.name}: its preprocessing has no LoadImaged")
                post = _transforms(self._content(parser, "postprocessing", "post_transforms"))
                self._parsed = _Parts(
                    load=_Renamed(load, self.image_key),
                    pre=[t for t in pre if not isinstance(t, LoadImaged)],
                    inferer=self._content(parser, "inferer") or SimpleInferer(),
                    post=[t for t in post if not isinstance(t, SaveImaged)],  # the server writes the result
                )
            return self._parsed

    def loader(self, request: InferRequest) -> Transform:
        return self._parts().load

    def pre_transforms(self, request: InferRequest) -> Sequence[Transform]:
        return self._parts().pre

    def inferer(
        self, data: Data, networks: Sequence[nn.Module], device: torch.device, request: InferRequest
    ) -> Data:
        image = data[self.image_key]
        if not isinstance(image, torch.Tensor):
            raise BadRequest("the bundle's preprocessing did not give a tensor image")
        with torch.inference_mode():
            pred = self._parts().inferer(image[None].to(device), networks[0])
        if not isinstance(pred, MetaTensor):
            pred = MetaTensor(pred, meta=getattr(image, "meta", None))
        data[self.pred_key] = decollate_batch(pred.cpu(), detach=True)[0]
        return data

    def post_transforms(self, request: InferRequest) -> Sequence[Transform]:
        return self._parts().post

    def writer(self, data: Data, request: InferRequest) -> InferResult:
        fmt = result_format(
            request.params, request.image_ext, "uint8" if self.out_channels <= 256 else "uint16"
        )
        label = tensor_input(data, self.pred_key)
        if label.shape[0] != 1:  # scores left by a bundle without a discretising step: take the argmax
            label = torch.argmax(label, dim=0, keepdim=True)
        dest = write_like(
            label[0].numpy(), request.image, request.image_ext, result_path(request, fmt.ext), fmt
        )
        return InferResult(dest, {"label_names": self.label_names(), "centroids": {}})

    def check_params(self, params: dict[str, Any], input_ext: str) -> None:
        result_format(params, input_ext)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "bundle": {"name": self.name, "version": self.version}}


@dataclass(frozen=True)
class _Parts:
    load: Transform
    pre: list[Transform]
    inferer: Any
    post: list[Transform]


def _transforms(content: Any) -> list[Transform]:
    return list(content.transforms) if isinstance(content, Compose) else list(content or [])


class _Renamed:
    """The bundle's loader, reading the request's ``image`` under the bundle's input key."""

    def __init__(self, load: LoadImaged, key: str) -> None:
        self.load, self.key = load, key

    def __call__(self, data: Data) -> Data:
        if self.key != "image":
            data = {**data, self.key: data["image"]}
        loaded: Data = self.load(data)
        return loaded


def bundle_models(paths: Sequence[Path]) -> dict[str, BundleTask]:
    """``{model name: task}`` for bundle folders (the folder's name is the model's name)."""
    out: dict[str, BundleTask] = {}
    for path in paths:
        if not Path(path).is_dir():
            raise BundleError(f"--conf bundles: {Path(path).name} is not a folder")
        task = BundleTask(Path(path))
        out[Path(path).resolve().name] = task
    return out
