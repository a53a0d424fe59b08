"""``/campaign/``: the campaign's state in one reply, and ``/campaign/events``, a server-sent event
stream of it (a new event whenever it changes), so clients need not poll every second."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, jsonify
from pydantic import Field

from server.api.common import parse_query, services
from server.api.openapi import Reply, json_reply, operation
from server.api.requests import Query
from server.errors import TooBusy
from server.jobs.campaign import Campaign
from server.team import progress
from server.wire import LaxFloat

bp = Blueprint("campaign", __name__)
POLL_SECONDS = 1.0
KEEPALIVE_SECONDS = 2.0  # a comment line this often: a client that left is noticed (its slot freed)


class EventsQuery(Query):
    timeout: LaxFloat = Field(60.0, ge=1.0, le=600.0, description="seconds before the stream ends")


@bp.get("/campaign/")
@operation(
    "The campaign: round, labels, training job and its rescore, what starts the next round",
    ok=json_reply("the state"),
)
def state() -> Any:
    ctx = services()
    return jsonify({**ctx.campaign.state(), "evidence": ctx.evidence.summary()})


@bp.get("/campaign/annotators")
@operation(
    "Per annotator: labels, studies, reviewed, approved, flagged, median seconds from hand-out to save,"
    " agreement",
    ok=json_reply("one row per annotator"),
)
def annotators() -> Any:
    return jsonify(progress.annotators(services().db))


@bp.get("/campaign/events")
@operation(
    "Server-sent events: the campaign's state now and at every change, until the timeout",
    query=EventsQuery,
    ok=Reply("an event stream", {"text/event-stream": {"type": "string"}}),
)
def events() -> Response:
    q = parse_query(EventsQuery)
    campaign = services().campaign
    if not campaign.streams.acquire(blocking=False):
        raise TooBusy("too many open event streams: poll GET /campaign/ instead, or retry later")
    resp = Response(
        sse(campaign, q.timeout), mimetype="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
    resp.call_on_close(campaign.streams.release)  # the slot comes back when the server closes the reply
    return resp


def sse(campaign: Campaign, timeout: float) -> Iterator[str]:
    """``event: campaign`` with the state as JSON, first at once and then on each change."""
    deadline = time.monotonic() + timeout
    last: str | None = None
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        now: dict[str, Any] = campaign.state()
        text = json.dumps(now, sort_keys=True)
        if text != last:
            last, quiet_since = text, time.monotonic()
            yield f"event: campaign\ndata: {json.dumps(now)}\n\n"
        elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield ": keepalive\n\n"
        time.sleep(POLL_SECONDS)
