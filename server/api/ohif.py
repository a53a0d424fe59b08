"""``/ohif/``: the OHIF viewer on labelloop's own origin, so its DICOMweb calls (``/proxy/dicom/``) and
the MONAI Label panel's calls reach this server. With auth on, the viewer's page needs a login (the
``/login`` page sets the session cookie the API accepts); its script and style files are public."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from flask import Blueprint, redirect, request, send_file

from server.api.auth import logged_in
from server.api.common import services
from server.api.openapi import Reply, operation
from server.errors import NotFound
from server.ohif import default_root, resolve

bp = Blueprint("ohif", __name__)
PAGE = Reply("a file of the viewer, or its page", {"text/html": {"type": "string"}, "*/*": {}})


@bp.get("/ohif/")  # also answers /ohif (strict_slashes off), redirected below
@bp.get("/ohif/<path:path>")
@operation("The OHIF viewer (its files; its page for the viewer's own routes)", ok=PAGE)
def viewer(path: str = "") -> Any:
    if request.path == "/ohif":
        return redirect("/ohif/", code=301)
    settings = services().settings
    root = settings.ohif_dir or default_root()
    if root is None:
        raise NotFound("no OHIF build: install the monailabel wheel or start with --ohif DIR")
    found = resolve(root, path)
    if found is None:
        raise NotFound(f"no such file in the viewer: {path}")
    file, mimetype = found
    if mimetype == "text/html" and not logged_in():
        return redirect(f"/login?next={quote(request.full_path.rstrip('?'))}", code=302)
    return send_file(
        file, mimetype=mimetype, conditional=True, max_age=0 if mimetype == "text/html" else 3600
    )
