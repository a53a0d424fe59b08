"""``/datastore/``: images, labels and their info, as MONAI Label serves them."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, request, stream_with_context

from server.api.auth import current_actor, request_author
from server.api.common import (
    body_params,
    download,
    form_params,
    parse_json,
    parse_query,
    require_file,
    services,
)
from server.api.openapi import BINARY, JSON_TEXT, Reply, file_reply, json_reply, operation
from server.api.requests import (
    DatasetQuery,
    IdQuery,
    ImageDownloadQuery,
    ImageQuery,
    LabelIdQuery,
    LabelQuery,
    LabelSaveQuery,
    ListingQuery,
)
from server.api.schemas import Empty, ImageReply, SkipBody
from server.datastore.ids import IMAGE_EXTS, LABEL_EXTS, check_id, check_tag, split_ext, upload_ext
from server.datastore.store import Datastore
from server.datastore.volumes import bin_to_nifti, read_header
from server.errors import BadRequest, NotFound, Unprocessable

bp = Blueprint("datastore", __name__)
TAGS = ("datastore",)
UPLOAD = {"file": BINARY, "params": JSON_TEXT}
INFO_FORM = {"info": JSON_TEXT}
JSON_OBJECT = {"type": "object"}


def datastore() -> Datastore:
    return services().datastore


@bp.get("/datastore/")
@operation(
    "The datastore: stats, every image with its labels (all), the training pairs (train), or a page",
    query=ListingQuery,
    ok=json_reply("stats, the listing, the training list or a page"),
)
def listing() -> Any:
    q = parse_query(ListingQuery)
    ds = datastore()
    if q.output == "all":
        return Response(stream_with_context(ds.listing_all()), mimetype="application/json")
    if q.output == "train":
        return jsonify(ds.train_list())
    if q.output == "page":
        return jsonify(ds.page(q.after, q.limit, q.completed))
    return jsonify(ds.stats())


@bp.put("/datastore/")
@bp.put("/datastore/image")
@operation(
    "Add an image (NIfTI, NRRD, ...); its id is ?image= or the file name without extension",
    query=ImageQuery,
    form=UPLOAD,
    required=("file",),
    ok=json_reply("the new image's id", ImageReply),
)
def upload_image() -> Any:
    storage = require_file("file")
    params = form_params()
    filename = Path(storage.filename or "").name
    ext = upload_ext(filename, IMAGE_EXTS)
    image_id = parse_query(ImageQuery).image or (split_ext(filename, IMAGE_EXTS) or ("", ""))[0]
    check_id(image_id)
    ds = datastore()
    tmp = ds.temp_for_image(ext)
    storage.save(tmp)
    info = {k: v for k, v in params.items() if k != "client_id"}
    ds.add_image(image_id, tmp, ext, info)
    return jsonify({"image": image_id})


@bp.delete("/datastore/")
@bp.delete("/datastore/image")
@operation("Delete an image and its labels", query=IdQuery, ok=json_reply("{}", Empty))
def delete_image() -> Any:
    datastore().delete_image(check_id(parse_query(IdQuery).id))
    return jsonify({})


@bp.get("/datastore/image")
@operation("Download an image", query=ImageDownloadQuery, ok=file_reply("the image file", "*/*"))
def get_image() -> Any:
    q = parse_query(ImageDownloadQuery)
    image_id = check_id(q.image)
    stored = datastore().get_image(image_id)
    check_sum = q.check_sum
    if check_sum and not _checksum_matches(stored.path, check_sum):
        raise NotFound(f"Image {image_id} does not match check_sum")
    return download(stored.path, stored.name)


@bp.get("/datastore/image/info")
@operation("An image's info", query=ImageQuery, ok=json_reply("the info", JSON_OBJECT))
def get_image_info() -> Any:
    return jsonify(datastore().image_info(check_id(parse_query(ImageQuery).image)))


@bp.get("/datastore/clicks")
@operation(
    "The clicks interactive models were given on a study: who, when, model version, the label they led to",
    query=ImageQuery,
    ok=json_reply("the click records, oldest first", {"type": "array", "items": JSON_OBJECT}),
)
def get_clicks() -> Any:
    return jsonify(datastore().clicks(check_id(parse_query(ImageQuery).image)))


@bp.post("/datastore/skip")
@operation(
    "Set a study aside as unreadable (a reason, never a label): it leaves the pool; 409 once labelled",
    query=ImageQuery,
    body=SkipBody,
    ok=json_reply("the skip", JSON_OBJECT),
)
def skip_image() -> Any:
    image_id = check_id(parse_query(ImageQuery).image)
    body = body_params()
    reason = body.get("reason")
    if not isinstance(reason, str):
        raise BadRequest("body: 'reason' (a string) is required")
    return jsonify(datastore().skip(image_id, reason, request_author(body)))


@bp.delete("/datastore/skip")
@operation("Put a skipped study back into the pool", query=ImageQuery, ok=json_reply("{}", Empty))
def unskip_image() -> Any:
    datastore().unskip(check_id(parse_query(ImageQuery).image))
    return jsonify({})


@bp.get("/datastore/skips")
@operation(
    "The studies set aside as unreadable: who, why, when (newest first)",
    ok=json_reply("the skips", {"type": "array", "items": JSON_OBJECT}),
)
def list_skips() -> Any:
    return jsonify(datastore().skips())


@bp.put("/datastore/image/info")
@operation(
    "Merge keys into an image's info",
    query=ImageQuery,
    form=INFO_FORM,
    ok=json_reply("the info", JSON_OBJECT),
)
def put_image_info() -> Any:
    image_id = check_id(parse_query(ImageQuery).image)
    info = parse_json(request.form.get("info"), "form field 'info'")
    return jsonify(datastore().update_image_info(image_id, info))


@bp.put("/datastore/label")
@operation(
    "Save a label of an image (NIfTI, NRRD, or OHIF's raw .bin voxels) under a tag (default final)",
    query=LabelSaveQuery,
    form={"label": BINARY, "params": JSON_TEXT},
    required=("label",),
    ok=json_reply("the saved label's id and info", JSON_OBJECT),
)
def save_label() -> Any:
    q = parse_query(LabelSaveQuery)
    image_id = q.image
    if not image_id:
        raise Unprocessable("query parameter 'image' is required")
    check_id(image_id)
    tag = check_tag(q.tag or "final")
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
    return jsonify(ds.save_label(image_id, tag, tmp, ext, params, author=request_author(params)))


@bp.delete("/datastore/label")
@operation("Delete an image's label of a tag", query=LabelIdQuery, ok=json_reply("{}", Empty))
def delete_label() -> Any:
    q = parse_query(LabelIdQuery)
    datastore().delete_label(check_id(q.id), check_tag(q.tag))
    return jsonify({})


@bp.route("/datastore/label", methods=["GET", "HEAD"])
@operation(
    "Download a label by label id and tag",
    query=LabelQuery,
    ok=file_reply("the label file", "*/*"),
    methods=("GET",),
)
@operation(
    "Is there a label of this tag for ?image=", query=LabelQuery, ok=Reply("there is"), methods=("HEAD",)
)
def get_label() -> Any:
    q = parse_query(LabelQuery)
    tag = check_tag(q.tag)
    if request.method == "HEAD":
        # HEAD asks "is there a label?" by image id (GET downloads it by label id).
        exists = datastore().label_exists(check_id(q.image), tag)
        return Response(status=200 if exists else 404, mimetype="application/json")  # no body
    label_id = check_id(q.label, "label")
    services().review.check_visible(current_actor(), label_id, tag)
    stored = datastore().get_label(label_id, tag)
    return download(stored.path, stored.name)


@bp.get("/datastore/label/info")
@operation("A label's info", query=LabelQuery, ok=json_reply("the info", JSON_OBJECT))
def get_label_info() -> Any:
    q = parse_query(LabelQuery)
    label_id, tag = check_id(q.label, "label"), check_tag(q.tag)
    services().review.check_visible(current_actor(), label_id, tag)
    return jsonify(datastore().label_info(label_id, tag))


@bp.put("/datastore/label/info")
@operation(
    "Merge keys into a label's info (review state: segmentationMeta)",
    query=LabelQuery,
    form=INFO_FORM,
    ok=json_reply("the info", JSON_OBJECT),
)
def put_label_info() -> Any:
    q = parse_query(LabelQuery)
    label_id = check_id(q.label, "label")
    info = parse_json(request.form.get("info"), "form field 'info'")
    return jsonify(services().review.update_label_info(label_id, check_tag(q.tag), info, current_actor()))


@bp.put("/datastore/updatelabelinfo")
@operation(
    "MONAI Label's older label info update (form field params)",
    query=LabelQuery,
    form={"params": JSON_TEXT},
    ok=json_reply("null", {"type": "null"}),
)
def update_label_info() -> Any:
    q = parse_query(LabelQuery)
    label_id = check_id(q.label, "label")
    info = form_params()
    services().review.update_label_info(label_id, check_tag(q.tag), info, current_actor())
    return jsonify(None)


@bp.get("/datastore/dataset")
@operation(
    "The final labels and their images as a zip",
    query=DatasetQuery,
    ok=file_reply("dataset.zip", "application/zip"),
)
def dataset() -> Any:
    limit = parse_query(DatasetQuery).limit_cases
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
