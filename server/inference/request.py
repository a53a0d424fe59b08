"""What an inference task receives and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.errors import BadRequest
from server.wire import parse_bool

OUTPUTS = ("image", "json", "all", "dicom_seg")


@dataclass
class InferRequest:
    """One prediction: the input volume on disk, the client's params, and where results go."""

    model: str
    image: Path  # the input volume (a datastore image, a session file or an uploaded file)
    image_ext: str  # ".nii.gz", ".nii" or ".nrrd": readers and the default result type follow it
    workdir: Path  # a private folder for this request; removed once the reply is sent
    params: dict[str, Any] = field(default_factory=dict)
    output: str = "all"  # image | json | all
    label: Path | None = None  # an optional input label (scribbles...), NIfTI or NRRD
    image_id: str | None = None  # the datastore id, when the input is a datastore image

    @property
    def stem(self) -> str:
        name = self.image.name
        return name[: -len(self.image_ext)] if name.endswith(self.image_ext) else self.image.stem


@dataclass
class InferResult:
    """``file`` is the result volume (None for JSON-only results); ``params`` the result params."""

    file: Path | None
    params: dict[str, Any]
    clicks: dict[str, list[list[int]]] | None = None  # an interactive model's clicks, per label name
    clicked_label: str | None = None  # the label the user was working on


def param_flag(params: dict[str, Any], key: str, default: bool = False) -> bool:
    """A boolean request param in any of :func:`server.wire.parse_bool`'s forms; missing or empty: default."""
    value = params.get(key, default)
    if value is None or value == "":
        return default
    try:
        return parse_bool(value)
    except ValueError as exc:
        raise BadRequest(f"param {key!r}: {exc}") from None


@dataclass
class InferSource:
    """Where the input comes from: a session wins over an uploaded file, which wins over an image id."""

    image_id: str | None = None
    session_id: str | None = None
    file: Path | None = None  # an uploaded image, saved in the request's workspace
    file_ext: str = ".nii.gz"
    label: Path | None = None  # an uploaded label, saved in the request's workspace
    label_ext: str = ".nii.gz"  # ".bin": raw uint8 voxels in Fortran order (OHIF)
