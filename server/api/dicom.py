"""``/dicom/``: the DICOM side (an extension): listener and queue status, the series catalogue
(received by C-STORE or known from DICOMweb), a priority fetch, a QIDO refresh, SEG export jobs.
Every route is a 404 when no listener port or DICOMweb source is configured."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, jsonify

from server.api.common import parse_query, services
from server.api.openapi import json_reply, operation
from server.api.requests import SeriesQuery
from server.errors import NotFound

if TYPE_CHECKING:  # highdicom and pydicom load with the DICOM side, when it is configured
    from server.dicom.service import DicomService

bp = Blueprint("dicom", __name__)
TAGS = ("dicom",)


def dicom() -> DicomService:
    service = services().dicom
    if service is None:
        raise NotFound("DICOM is not configured (--dicom-port or --dicomweb)")
    return service


@bp.get("/dicom/")
@operation("Listener, DICOMweb source, series by state and SEG exports", ok=json_reply("the status"))
def status() -> Any:
    return jsonify(dicom().status())


@bp.get("/dicom/series")
@operation("The series catalogue, paged by series UID", query=SeriesQuery, ok=json_reply("a page of series"))
def series_list() -> Any:
    q = parse_query(SeriesQuery)
    return jsonify(dicom().list_series(q.state, q.source, q.after, q.limit))


@bp.get("/dicom/series/<uid>")
@operation("One series with its SEG exports", ok=json_reply("the series"))
def series(uid: str) -> Any:
    return jsonify(dicom().series(uid))


@bp.post("/dicom/series/<uid>/fetch")
@operation("Fetch a DICOMweb series first", ok=json_reply("the series, queued"), status=202)
def fetch(uid: str) -> Any:
    return jsonify(dicom().request_fetch(uid)), 202


@bp.post("/dicom/sync")
@operation("Refresh the catalogue from the DICOMweb source (QIDO)", ok=json_reply("queued"), status=202)
def sync() -> Any:
    return jsonify(dicom().request_sync()), 202
