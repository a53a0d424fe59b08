"""The inference task: a template method with hooks, as MONAI Label's ``BasicInferTask`` has.

``run`` loads the input, then calls the hooks in order and times each stage:

    pre_transforms -> inferer -> invert -> post_transforms -> writer

A subclass overrides hooks, never ``run``. ``network()`` builds the architecture (random init);
the inference service loads published weights into it, and a trainer calls the same method to
build the network it trains, so the two can never disagree.
"""

from __future__ import annotations

import gzip
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import nibabel as nib
import nrrd
import numpy as np
import torch
from monai.data import NibabelReader, NrrdReader
from monai.transforms import Compose, LoadImaged
from torch import nn

from server.errors import BadRequest
from server.inference.request import InferRequest, InferResult
from server.inference.weights import INIT_SEED, seeded

Data = dict[Hashable, Any]
Transform = Callable[[Data], Data]

# What a volume that does not load raises inside MONAI's readers.
LOAD_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    EOFError,
    RuntimeError,
    KeyError,
    IndexError,
    zlib.error,
    gzip.BadGzipFile,
    nib.filebasedimages.ImageFileError,
    nrrd.NRRDError,
)


def _name(transform: object) -> str:
    return type(transform).__name__


class InferTask(ABC):
    """One hosted model's inference. ``describe()`` feeds its entry in ``/info/``."""

    type: ClassVar[str] = "segmentation"

    def __init__(self, labels: dict[str, int] | list[str], dimension: int, description: str = "") -> None:
        self.labels = labels
        self.dimension = dimension
        self.description = description
        self._weights_info: Callable[[], dict[str, Any]] | None = None

    # ---- hooks ---------------------------------------------------------------------------------
    @abstractmethod
    def network(self) -> nn.Module:
        """A new network with this task's architecture (random initialisation)."""

    def initial_network(self, seed: int = INIT_SEED) -> nn.Module:
        """The network used before any weights are published: a fixed-seed initialisation."""
        return seeded(self.network, seed)

    def initial_weights(self) -> str:
        """How ``initial_network`` is made, for ``/info/``."""
        return f"initialised (seed {INIT_SEED})"

    def loader(self, request: InferRequest) -> Transform:
        """Reads the input volume into ``data["image"]`` (a MetaTensor)."""
        reader = NrrdReader if request.image_ext == ".nrrd" else NibabelReader
        return LoadImaged(keys="image", reader=reader, image_only=True, dtype=np.float32)

    def pre_transforms(self, request: InferRequest) -> Sequence[Transform]:
        """Transforms from the loaded image to the network's input; the invertible ones are undone."""
        return []

    @abstractmethod
    def inferer(
        self, data: Data, networks: Sequence[nn.Module], device: torch.device, request: InferRequest
    ) -> Data:
        """Run the networks on ``data["image"]``; put the scores in ``data["pred"]``."""

    def invert(self, data: Data, pre: Compose, request: InferRequest) -> Data:
        """Bring ``data["pred"]`` back to the input's grid (segmentation); nothing by default."""
        return data

    def post_transforms(self, request: InferRequest) -> Sequence[Transform]:
        return []

    @abstractmethod
    def writer(self, data: Data, request: InferRequest) -> InferResult:
        """The result file (or None) and the result params."""

    def check_params(self, params: dict[str, Any], input_ext: str) -> None:
        """Reject bad params before the request is queued (raise ``BadRequest``)."""
        return None

    def describe(self) -> dict[str, Any]:
        """Extra keys for this model's ``/info/`` entry: its weights version, once bound."""
        return dict(self._weights_info()) if self._weights_info is not None else {}

    def bind(self, weights_info: Callable[[], dict[str, Any]]) -> None:
        """Called once by the inference service so ``describe()`` can report the current weights."""
        self._weights_info = weights_info

    def label_names(self) -> dict[str, int]:
        if isinstance(self.labels, dict):
            return dict(self.labels)
        return {name: i for i, name in enumerate(self.labels)}

    # ---- the template method ----------------------------------------------------------------------
    def run(self, request: InferRequest, networks: Sequence[nn.Module], device: torch.device) -> InferResult:
        start = time.perf_counter()
        steps: dict[str, float] = {}
        data: Data = {"image": str(request.image)}
        if request.label is not None:
            data["label"] = str(request.label)
        loader = self.loader(request)
        t = time.perf_counter()
        try:
            data = loader(data)
        except LOAD_ERRORS as exc:
            raise BadRequest(f"image does not load as {request.image_ext}: {_root_cause(exc)}") from exc
        steps[_name(loader)] = time.perf_counter() - t

        pre = Compose(list(self.pre_transforms(request)))
        data = self._apply(pre.transforms, data, steps)
        t_pre = time.perf_counter()

        data = self.inferer(data, networks, device, request)
        t_infer = time.perf_counter()

        data = self.invert(data, pre, request)
        t_invert = time.perf_counter()

        data = self._apply(self.post_transforms(request), data, steps)
        t_post = time.perf_counter()

        result = self.writer(data, request)
        t_write = time.perf_counter()
        result.params["latencies"] = {
            "pre": round(t_pre - start, 4),
            "infer": round(t_infer - t_pre, 4),
            "invert": round(t_invert - t_infer, 4),
            "post": round(t_post - t_invert, 4),
            "write": round(t_write - t_post, 4),
            "total": round(t_write - start, 4),
            "transform": {k: round(v, 4) for k, v in steps.items()},
        }
        return result

    @staticmethod
    def _apply(transforms: Sequence[Transform], data: Data, steps: dict[str, float]) -> Data:
        for transform in transforms:
            t = time.perf_counter()
            data = transform(data)
            name = _name(transform)
            steps[name] = steps.get(name, 0.0) + time.perf_counter() - t
        return data


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def tensor_input(data: Data, key: str = "image") -> torch.Tensor:
    """``data[key]`` as a plain tensor (MetaTensor overhead off the hot path)."""
    value = data[key]
    return value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(value)


def result_name(request: InferRequest, ext: str) -> str:
    """The result's file name: ``<input stem>_<model><ext>``, filesystem and header safe."""
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in request.stem)[:80] or "image"
    model = "".join(c if c.isalnum() or c in "-_" else "_" for c in request.model)[:40]
    return f"{stem}_{model}{ext}"


def result_path(request: InferRequest, ext: str) -> Path:
    return request.workdir / result_name(request, ext)
