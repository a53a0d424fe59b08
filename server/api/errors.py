"""The web layer's error handlers: service exceptions and HTTP errors as ``{"detail": ...}`` replies.

Details never carry a server path (a file name in a library's message is cut to ``<path>``); an
unexpected exception is logged with a request id and answered as a 500 that carries that id alone.
"""

from __future__ import annotations

import os
import re
import uuid

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from server.errors import LabelloopError

# An absolute path of two or more segments that is not part of a URL or a word.
PATH = re.compile(r"(?<![\w:/.])/(?:[\w.+\- ]+/)+[\w.+\-]*")


def scrub(detail: str) -> str:
    """Cut file system paths (those under a top-level folder of this machine, such as /tmp or /home)
    to ``<path>``; the API's own routes (``/campaign/``) stay."""

    def cut(match: re.Match[str]) -> str:
        top = match.group(0).split("/")[1]
        return "<path>" if top and os.path.isdir("/" + top) else match.group(0)

    return PATH.sub(cut, detail)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(LabelloopError)
    def _service_error(exc: LabelloopError) -> tuple[Response, int]:
        return jsonify(detail=scrub(exc.detail)), exc.status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        return jsonify(detail=scrub(exc.description or exc.name)), exc.code or 500

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        # Never leak a traceback or a message to the client; the log has both, under the id.
        request_id = g.get("request_id") or uuid.uuid4().hex[:16]
        app.logger.exception(
            "unhandled error in %s %s (request %s)", request.method, request.path, request_id
        )
        resp = jsonify(detail=f"internal error (request id {request_id})")
        resp.headers["X-Request-ID"] = request_id
        return resp, 500
