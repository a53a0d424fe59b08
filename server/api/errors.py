"""The web layer's error handlers: service exceptions and HTTP errors as ``{"detail": ...}`` replies."""

from __future__ import annotations

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from server.errors import LabelloopError


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(LabelloopError)
    def _service_error(exc: LabelloopError) -> tuple[Response, int]:
        return jsonify(detail=exc.detail), exc.status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        return jsonify(detail=exc.description or exc.name), exc.code or 500

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        # Never leak a traceback to the client; the log has it.
        app.logger.exception("unhandled error")
        return jsonify(detail=f"internal error: {type(exc).__name__}"), 500
