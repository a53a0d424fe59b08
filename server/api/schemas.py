"""Reply and JSON body shapes, for the OpenAPI document. Open (extra keys allowed): they state what a
reply always carries, not everything it may carry, so an extension never contradicts the document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class NextSampleBody(Open):
    """Strategy params; MONAI Label clients send ``client_id`` (and OHIF nothing)."""

    client_id: str | None = Field(None, description="who asks: their lease is released, a new one taken")
    k: int | None = Field(None, description="extension: a batch of k studies, under 'batch'")


class SkipBody(Open):
    """Why the study cannot be labelled; MONAI Label clients would send ``client_id``."""

    reason: str = Field(description="e.g. 'unreadable: motion artefact' (at most 500 characters)")
    client_id: str | None = Field(None, description="who skips (auth off)")


class NextSampleReply(Open):
    id: str | None = None
    path: str | None = None


class InfoReply(Open):
    name: str
    description: str
    version: str
    labels: list[str] | dict[str, int]
    models: dict[str, Any]
    trainers: dict[str, Any]
    strategies: dict[str, Any]
    scoring: dict[str, Any]
    train_stats: dict[str, Any]
    datastore: dict[str, Any]


class Task(Open):
    """A background job as MONAI Label's task, with labelloop's fields (kind, progress, error, ...)."""

    id: str
    status: str
    request: dict[str, Any]
    start_ts: str | None
    details: list[str]


class TrainBody(Open):
    """Training params over the trainer's defaults (``max_epochs``, ``val_split``, ``multi_gpu``,
    ``semi_supervised``, ...); flags and numbers also as strings."""


class ImageReply(Open):
    image: str


class Empty(Open):
    """``{}``"""
