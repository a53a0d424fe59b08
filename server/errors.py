"""Typed service-layer exceptions; one Flask error handler maps them to ``{"detail": ...}`` replies."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException


class LabelloopError(Exception):
    """Base class: ``status`` is the HTTP code the REST layer answers with."""

    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(LabelloopError):
    status = 400


class NotFound(LabelloopError):
    status = 404


class Conflict(LabelloopError):
    status = 409


class Unprocessable(LabelloopError):
    status = 422


class TooBusy(LabelloopError):
    """A bounded queue is full (inference) or a job of this kind already runs (training)."""

    status = 429


class Unavailable(LabelloopError):
    status = 503


class ConfigError(Exception):
    """A setting is wrong at start: the message says what to do."""


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(LabelloopError)
    def _service_error(exc: LabelloopError) -> Any:
        return jsonify(detail=exc.detail), exc.status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        return jsonify(detail=exc.description or exc.name), exc.code or 500

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        # Never leak a traceback to the client; the log has it.
        app.logger.exception("unhandled error")
        return jsonify(detail=f"internal error: {type(exc).__name__}"), 500
