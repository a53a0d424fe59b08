"""``/datastore/``: images, labels and their info, as MONAI Label serves them."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, request

from server.api.common import (
    datastore,
    download,
    form_params,
    parse_json,
    query_int,
    require_file,
)
from server.datastore.ids import IMAGE_EXTS, LABEL_EXTS, check_id, check_tag, split_ext, upload_ext
from server.datastore.volumes import bin_to_nifti, read_header
from server.errors import BadRequest, NotFound, Unprocessable

bp = Blueprint("datastore", __name__)


@bp.get("/datastore/")
def listing() -> Any:
    output = request.args.get("output", "stats")
    ds = datastore()
    if output == "stats":
        return jsonify(ds.stats())
    if output == "all":
        return jsonify(ds.listing_all())
    if output == "train":
        return jsonify(ds.train_list())
    if output == "page":
        completed_arg = request.args.get("completed")
        completed = None if completed_arg in (None, "") else completed_arg.lower() in ("1", "true", "yes")
        return jsonify(ds.page(request.args.get("after"), query_int("limit", 100), completed))
    raise Unprocessable(f"output must be one of stats, all, train, page; got {output!r}")


@bp.put("/datastore/")
@bp.put("/datastore/image")
def upload_image() -> Any:
    storage = require_file("file")
    params = form_params()
    filename = Path(storage.filename or "").name
    ext = upload_ext(filename, IMAGE_EXTS)
    image_id = request.args.get("image") or (split_ext(filename, IMAGE_EXTS) or ("", ""))[0]
    check_id(image_id)
    ds = datastore()
    tmp = ds.temp_for_image(ext)
    storage.save(tmp)
    info = {k: v for k, v in params.items() if k != "client_id"}
    ds.add_image(image_id, tmp, ext, info)
    return jsonify({"image": image_id})


@bp.delete("/datastore/")
@bp.delete("/datastore/image")
def delete_image() -> Any:
    datastore().delete_image(check_id(request.args.get("id")))
    return jsonify({})


@bp.get("/datastore/image")
def get_image() -> Any:
    image_id = check_id(request.args.get("image"))
    stored = datastore().get_image(image_id)
    check_sum = request.args.get("check_sum")
    if check_sum and not _checksum_matches(stored.path, check_sum):
        raise NotFound(f"Image {image_id} does not match check_sum")
    return download(stored.path, stored.name)


@bp.get("/datastore/image/info")
def get_image_info() -> Any:
    return jsonify(datastore().image_info(check_id(request.args.get("image"))))


@bp.put("/datastore/image/info")
def put_image_info() -> Any:
    image_id = check_id(request.args.get("image"))
    info = parse_json(request.form.get("info"), "form field 'info'")
    return jsonify(datastore().update_image_info(image_id, info))


@bp.put("/datastore/label")
def save_label() -> Any:
    image_id = request.args.get("image")
    if not image_id:
        raise Unprocessable("query parameter 'image' is required")
    check_id(image_id)
    tag = check_tag(request.args.get("tag") or "final")
    storage = require_file("label")
    params = form_params()
    ds = datastore()
    filename = Path(storage.filename or "").name
    if filename.lower().endswith(".bin"):
        # OHIF: raw uint8 voxels in Fortran order, reshaped to the image (stored as NIfTI).
        image = ds.get_image(image_id)
        header = read_header(image.path, _ext_of(image.name))
        tmp = ds.temp_for_label(tag, ".nii.gz")
        try:
            bin_to_nifti(storage.read(), header.shape, header.affine, tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        ext = ".nii.gz"
    else:
        ext = upload_ext(filename, LABEL_EXTS)
        tmp = ds.temp_for_label(tag, ext)
        storage.save(tmp)
    return jsonify(ds.save_label(image_id, tag, tmp, ext, params))


@bp.delete("/datastore/label")
def delete_label() -> Any:
    datastore().delete_label(check_id(request.args.get("id")), check_tag(request.args.get("tag")))
    return jsonify({})


@bp.route("/datastore/label", methods=["GET", "HEAD"])
def get_label() -> Any:
    tag = check_tag(request.args.get("tag"))
    if request.method == "HEAD":
        # HEAD asks "is there a label?" by image id (GET downloads it by label id).
        exists = datastore().label_exists(check_id(request.args.get("image")), tag)
        return Response(status=200 if exists else 404)
    stored = datastore().get_label(check_id(request.args.get("label"), "label"), tag)
    return download(stored.path, stored.name)


@bp.get("/datastore/label/info")
def get_label_info() -> Any:
    return jsonify(
        datastore().label_info(
            check_id(request.args.get("label"), "label"), check_tag(request.args.get("tag"))
        )
    )


@bp.put("/datastore/label/info")
def put_label_info() -> Any:
    label_id = check_id(request.args.get("label"), "label")
    info = parse_json(request.form.get("info"), "form field 'info'")
    return jsonify(datastore().update_label_info(label_id, check_tag(request.args.get("tag")), info))


@bp.put("/datastore/updatelabelinfo")
def update_label_info() -> Any:
    label_id = check_id(request.args.get("label"), "label")
    info = form_params()
    datastore().update_label_info(label_id, check_tag(request.args.get("tag")), info)
    return jsonify(None)


@bp.get("/datastore/dataset")
def dataset() -> Any:
    limit = query_int("limit_cases", 0)
    pairs = datastore().train_list()
    if limit > 0:
        pairs = pairs[:limit]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for pair in pairs:
            zf.write(pair["image"], f"images/{Path(pair['image']).name}")
            zf.write(pair["label"], f"labels/final/{Path(pair['label']).name}")
    resp = Response(buf.getvalue(), mimetype="application/zip")
    resp.headers["Content-Disposition"] = 'attachment; filename="dataset.zip"'
    return resp


def _ext_of(name: str) -> str:
    parts = split_ext(name, IMAGE_EXTS)
    if parts is None:
        raise BadRequest(f"unknown image type: {name}")
    return parts[1]


def _checksum_matches(path: Path, check_sum: str) -> bool:
    algo, _, digest = check_sum.partition(":")
    if algo.upper() != "SHA256" or not digest:
        raise BadRequest("check_sum must look like 'SHA256:<hex>'")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest() == digest.lower()
