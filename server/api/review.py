"""``/review/``: review reports (in the shapes of MONAI Label PR #1907), label history, restore,
adjudication of the overlap studies, and agreement. Review state itself is written the MONAI Label
way, through ``/datastore/updatelabelinfo`` (the Reviewer plugin's call)."""

from __future__ import annotations

from typing import Any, Literal

from flask import Blueprint, Response, jsonify
from pydantic import Field

from server.api.auth import current_actor
from server.api.common import body_params, download, parse_query, services
from server.api.openapi import Reply, file_reply, json_reply, operation
from server.api.requests import Query
from server.datastore.ids import check_id
from server.errors import Unprocessable
from server.team.review import STATUSES, CasesQuery
from server.wire import LaxInt

bp = Blueprint("review", __name__)


class CasesParams(Query):
    status: str | None = Field(None, description=f"one of {', '.join(STATUSES)}")
    annotator: str | None = Field(None, description="studies this annotator labelled")
    reviewer: str | None = Field(None, description="studies this reviewer reviewed")
    level: str | None = Field(None, description="easy, medium or hard (the Reviewer's level)")
    after: str | None = Field(None, description="the last image id of the previous page")
    limit: LaxInt = Field(100, description="studies per page (at most 1000)")


class ImageParam(Query):
    image: str = Field(description="the image id")


class VersionParams(ImageParam):
    tag: str = Field("final", description="the label tag")
    version: LaxInt = Field(description="the version number (see /review/versions)")


class ReportParams(Query):
    fmt: Literal["json", "csv"] = "json"


class AgreementParams(Query):
    image: str | None = Field(None, description="one study (default: all)")


@bp.get("/review/cases")
@operation(
    "Studies with their review status, paged, and the summary over all",
    query=CasesParams,
    ok=json_reply("the page"),
)
def cases() -> Any:
    q = parse_query(CasesParams)
    return jsonify(services().review.cases(CasesQuery(**q.model_dump())))


@bp.get("/review/versions")
@operation("Every saved version of a study's labels", query=ImageParam, ok=json_reply("the versions"))
def versions() -> Any:
    return jsonify(services().review.versions(parse_query(ImageParam).image))


@bp.get("/review/version")
@operation("Download one version of a label", query=VersionParams, ok=file_reply("the label file", "*/*"))
def version_file() -> Any:
    q = parse_query(VersionParams)
    stored = services().review.version_file(check_id(q.image), q.tag, q.version, current_actor())
    return download(stored.path, stored.name)


@bp.get("/review/report")
@operation(
    "The review report: one row per labelled study",
    query=ReportParams,
    ok=Reply("the report", {"application/json": {"type": "array"}, "text/csv": {"type": "string"}}),
)
def report() -> Any:
    q = parse_query(ReportParams)
    review = services().review
    rows = review.report()
    if q.fmt == "csv":
        resp = Response(review.as_csv(rows), mimetype="text/csv")
        resp.headers["Content-Disposition"] = 'attachment; filename="review.csv"'
        return resp
    return jsonify(rows)


@bp.post("/review/restore")
@operation(
    "Make an earlier version current again (as a new version)",
    query=VersionParams,
    ok=json_reply("the new version"),
)
def restore() -> Any:
    q = parse_query(VersionParams)
    return jsonify(services().review.restore(q.image, q.tag, q.version, current_actor()))


@bp.post("/review/adjudicate")
@operation(
    "The final label of a study read by two annotators:"
    " {version: N} picks a reading, {method: majority} merges",
    query=ImageParam,
    ok=json_reply("the final label's version"),
)
def adjudicate() -> Any:
    image = parse_query(ImageParam).image
    body = body_params()
    version = body.get("version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise Unprocessable("'version' must be an integer")
    method = body.get("method")
    if method is not None and not isinstance(method, str):
        raise Unprocessable("'method' must be a string")
    return jsonify(services().review.adjudicate(image, current_actor(), pick=version, method=method))


@bp.get("/review/agreement")
@operation(
    "Agreement of independent readings: per study and label, and per annotator pair",
    query=AgreementParams,
    ok=json_reply("the agreement"),
)
def agreement() -> Any:
    return jsonify(services().review.agreement(parse_query(AgreementParams).image))
