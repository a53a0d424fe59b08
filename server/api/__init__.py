"""REST blueprints, one per resource; each route parses, calls one service, and shapes the reply.

:data:`BLUEPRINTS` is the one list ``create_app`` registers. Routes reach the services through
:func:`server.api.common.services` and declare their parameters and replies with
:func:`server.api.openapi.operation` (the OpenAPI document is generated from those declarations).
"""

from __future__ import annotations

from flask import Blueprint

from server.api import (
    activelearning,
    auth,
    batch,
    campaign,
    dashboard,
    datastore,
    dicom,
    health,
    infer,
    info,
    login,
    logs,
    metrics,
    misc,
    model,
    ohif,
    openapi,
    proxy,
    review,
    scoring,
    session,
    train,
)

BLUEPRINTS: tuple[Blueprint, ...] = (
    misc.bp,
    info.bp,
    datastore.bp,
    activelearning.bp,
    session.bp,
    logs.bp,
    infer.bp,
    model.bp,
    train.bp,
    batch.bp,
    scoring.bp,
    dicom.bp,
    proxy.bp,
    auth.bp,
    openapi.bp,
    health.bp,
    campaign.bp,
    review.bp,
    dashboard.bp,
    login.bp,
    ohif.bp,
    metrics.bp,
)
