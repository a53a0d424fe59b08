"""``POST /activelearning/{strategy}``: the next study to annotate, leased to the caller.

The lease belongs to the logged-in user with auth on, whatever ``client_id`` says; with auth off to the
``client_id``, except a shared one (Slicer's default ``user-xyz``, or none as OHIF sends): then each
request's lease is its own (server/team/actor.py), so two machines never hold one study."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from server.api.auth import current_actor
from server.api.common import body_params, services
from server.api.openapi import json_reply, operation
from server.api.schemas import NextSampleBody, NextSampleReply
from server.team.actor import client_actor, lease_key

bp = Blueprint("activelearning", __name__)


@bp.post("/activelearning/<strategy>")
@operation(
    "Lease the next study to annotate, picked by a strategy ({} when none is left)",
    body=NextSampleBody,
    ok=json_reply("the pick (its fields at the top, the whole batch under 'batch')", NextSampleReply),
)
def next_sample(strategy: str) -> Response:
    params = body_params()
    ctx = services()
    actor = current_actor()
    if not actor.user:
        actor = client_actor(params.get("client_id"))
    owner = lease_key(actor, request.remote_addr)
    person = None if actor.shared else actor.name
    picks = ctx.sampler.next_sample(ctx.spec.strategies, strategy, params, owner=owner, person=person)
    if not picks:
        return jsonify({})
    if "k" in params:
        # Extension: a batch. The first pick's fields stay at the top for MONAI Label clients.
        reply: dict[str, Any] = {**picks[0], "batch": picks}
        return jsonify(reply)
    return jsonify(picks[0])
