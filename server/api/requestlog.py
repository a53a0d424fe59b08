"""A request id on every request (``X-Request-ID``, kept from the caller when it is a plain token), and
with ``--log-json`` log lines as JSON objects that carry it, with the job and image ids a log call
passes as ``extra={"job_id": ..., "image_id": ...}``."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from flask import Flask, Response, g, has_request_context, request

SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def request_id() -> str | None:
    return g.get("request_id") if has_request_context() else None


class JsonLines(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, and request_id, method, path, job_id,
    image_id where known; the traceback under ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if has_request_context():
            line.update(request_id=g.get("request_id"), method=request.method, path=request.path)
        for key in ("job_id", "image_id"):
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def install(app: Flask) -> None:
    @app.before_request
    def _assign() -> None:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if SANE_ID.match(given) else uuid.uuid4().hex[:16]

    @app.after_request
    def _echo(resp: Response) -> Response:
        rid = g.get("request_id")
        if rid:
            resp.headers.setdefault("X-Request-ID", rid)
        return resp


def use_json_lines(handler: logging.Handler) -> None:
    handler.setFormatter(JsonLines())
