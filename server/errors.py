"""Typed service-layer exceptions. Plain Python: the web layer (:mod:`server.api.errors`) maps them to
``{"detail": ...}`` replies with their ``status``."""

from __future__ import annotations


class LabelloopError(Exception):
    """Base class: ``status`` is the HTTP code the REST layer answers with."""

    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(LabelloopError):
    status = 400


class Forbidden(LabelloopError):
    status = 403


class NotFound(LabelloopError):
    status = 404


class Conflict(LabelloopError):
    status = 409


class TooLarge(LabelloopError):
    """An upload over a configured limit (voxels, bytes, archive members)."""

    status = 413


class Unprocessable(LabelloopError):
    status = 422


class TooBusy(LabelloopError):
    """A bounded queue is full (inference) or a job of this kind already runs (training)."""

    status = 429


class Unavailable(LabelloopError):
    status = 503


class ConfigError(Exception):
    """A setting is wrong at start: the message says what to do."""
