"""``/proxy/dicom/``: the DICOMweb source relayed for viewers (OHIF's QIDO and WADO roots), as in MONAI
Label: ``/proxy/dicom/{qido,wado,stow}/<path>`` (with the operation's prefix) and ``/proxy/dicom/<path>``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, request, stream_with_context

from server.api.common import services
from server.api.openapi import file_reply, operation
from server.errors import NotFound

if TYPE_CHECKING:  # highdicom and pydicom load with the DICOM side, when it is configured
    from server.dicom.proxy import DicomWebProxy

bp = Blueprint("proxy", __name__)


def proxy() -> DicomWebProxy:
    service = services().dicom
    if service is None or service.proxy is None:
        raise NotFound("no DICOMweb source is configured (--studies http://host:8042/dicom-web)")
    return service.proxy


@bp.route("/proxy/dicom/<path:path>", methods=["GET", "POST"])
@operation(
    "The DICOMweb source relayed (QIDO, WADO, STOW); 404 when none is configured",
    ok=file_reply("the source's reply", "*/*"),
)
def dicom(path: str) -> Any:
    body = request.stream if request.method == "POST" else None
    sent = dict(request.headers)
    status, headers, chunks = proxy().relay(request.method, path, request.query_string, sent, body)
    return Response(stream_with_context(chunks), status=status, headers=headers, direct_passthrough=True)
