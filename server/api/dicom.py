"""``/dicom/``: the DICOM side (an extension): listener and queue status, the series catalogue
(received by C-STORE or known from DICOMweb), a priority fetch, a QIDO refresh, SEG export jobs."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request

from server.api.common import query_int
from server.dicom.service import DicomService

bp = Blueprint("dicom", __name__)


def dicom() -> DicomService:
    return current_app.extensions["dicom"]


@bp.get("/dicom/")
def status() -> Any:
    return jsonify(dicom().status())


@bp.get("/dicom/series")
def series_list() -> Any:
    args = request.args
    return jsonify(
        dicom().list_series(args.get("state"), args.get("source"), args.get("after"), query_int("limit", 100))
    )


@bp.get("/dicom/series/<uid>")
def series(uid: str) -> Any:
    return jsonify(dicom().series(uid))


@bp.post("/dicom/series/<uid>/fetch")
def fetch(uid: str) -> Any:
    return jsonify(dicom().request_fetch(uid)), 202


@bp.post("/dicom/sync")
def sync() -> Any:
    return jsonify(dicom().request_sync()), 202
