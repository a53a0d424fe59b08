"""Typed request models: what each route reads from the query string, with MONAI Label's lax wire forms.

Flags accept ``true``/``1``/``yes`` (:mod:`server.wire`); an empty query value counts as absent. A wrong
value is a 422 naming the field and the reason (:func:`server.api.common.parse_query`). The OpenAPI
document is generated from these models.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from server.wire import LaxBool, LaxInt


class Query(BaseModel):
    """Unknown query parameters are ignored, as MONAI Label does."""

    model_config = ConfigDict(extra="ignore")


class JobStatusQuery(Query):
    all: LaxBool = Field(False, description="every task of this kind, oldest first")
    check_if_running: LaxBool = Field(False, description="the running task, or 404")


class JobStartQuery(Query):
    enqueue: LaxBool = Field(False, description="queue behind a running job instead of answering 429")
    run_sync: LaxBool = Field(False, description="answer when the job has ended")


class BatchInferQuery(JobStartQuery):
    images: Literal["all", "labeled", "unlabeled"] = "all"


class ListingQuery(Query):
    output: Literal["stats", "all", "train", "page"] = "stats"
    after: str | None = Field(None, description="output=page: the last image id of the previous page")
    limit: LaxInt = Field(100, description="output=page: images per page")
    completed: LaxBool | None = Field(None, description="output=page: only labelled (true) or unlabelled")


class ImageQuery(Query):
    image: str | None = Field(None, description="the image id")


class ImageDownloadQuery(ImageQuery):
    check_sum: str | None = Field(None, description="'SHA256:<hex>': 404 unless the file matches")


class IdQuery(Query):
    id: str | None = Field(None, description="the image id")


class LabelSaveQuery(Query):
    image: str | None = Field(None, description="the image id (required)")
    tag: str | None = Field(None, description="label tag (default final)")


class LabelIdQuery(Query):
    id: str | None = Field(None, description="the image id")
    tag: str | None = None


class LabelQuery(Query):
    label: str | None = Field(None, description="the label (image) id")
    image: str | None = Field(None, description="HEAD: the image id")
    tag: str | None = None


class DatasetQuery(Query):
    limit_cases: LaxInt = Field(0, description="at most this many pairs (0: all)")


class SessionCreateQuery(Query):
    expiry: LaxInt = Field(0, description="seconds (0: the default)")
    uncompress: LaxBool = False


class SessionGetQuery(Query):
    image: LaxBool = Field(False, description="download the session's image")
    update_ts: LaxBool = Field(False, description="extend the session's expiry")


class LogsQuery(Query):
    lines: LaxInt = 300
    text: LaxBool = False
    html: LaxBool = True
    refresh: LaxInt = Field(0, description="seconds between page reloads (html)")


class InferQuery(Query):
    output: str | None = Field(None, description="all (multipart), image, json")
    image: str | None = Field(None, description="a datastore image id")
    session_id: str | None = None


class SeriesQuery(Query):
    state: str | None = None
    source: str | None = None
    after: str | None = None
    limit: LaxInt = 100
