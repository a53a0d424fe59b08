"""Roles and the role matrix: which role each route needs, in one table.

Roles are ordered: a ``viewer`` reads progress, an ``annotator`` also takes studies, infers and saves
labels, a ``reviewer`` also reviews and sees everyone's labels, an ``admin`` also trains, deletes and
manages. :data:`MATRIX` names every route of the server (by Flask endpoint, ``endpoint:METHOD`` where
one endpoint serves several methods); a route missing from it is refused to everyone but admins, and
``tests/spine/test_roles.py`` fails when a route is added without a line here.
"""

from __future__ import annotations

from enum import IntEnum


class Role(IntEnum):
    viewer = 1
    annotator = 2
    reviewer = 3
    admin = 4

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.strip().lower()]
        except KeyError:
            raise ValueError(f"unknown role {name!r}: one of {', '.join(r.name for r in cls)}") from None


OPEN = None  # no login needed: the home page, login itself, health probes

V, A, R, ADMIN = Role.viewer, Role.annotator, Role.reviewer, Role.admin

MATRIX: dict[str, Role | None] = {
    # open
    "auth.auth_info": OPEN,
    "auth.auth_token": OPEN,
    "auth.auth_valid": OPEN,  # answers 401 itself without a valid token
    "health.live": OPEN,
    "health.ready": OPEN,
    "login.page": OPEN,
    "login.submit": OPEN,
    "login.logout": OPEN,
    "ohif.viewer": OPEN,  # its page redirects to /login without a login; its scripts are public
    "dashboard.page": OPEN,  # the page shell; its data needs a viewer
    # read progress and the API's description
    "info.info": V,
    "openapi.docs": V,
    "openapi.docs_asset": V,
    "openapi.openapi_json": V,
    "campaign.state": V,
    "campaign.events": V,
    "campaign.annotators": V,
    "dashboard.data": V,
    "metrics.metrics": V,
    "datastore.listing": V,
    "datastore.get_image": V,
    "datastore.get_image_info": V,
    "datastore.get_label": V,  # annotators and viewers: model outputs and their own labels only
    "datastore.get_label_info": V,
    "dicom.status": V,
    "dicom.series_list": V,
    "dicom.series": V,
    "proxy.dicom:GET": V,
    "scoring.scoring_status": V,
    "scoring.scoring_coverage": V,
    "train.train_status": V,
    "batch.batch_status": V,
    "model.model_info": V,
    # annotate
    "activelearning.next_sample": A,
    "infer.infer": A,
    "datastore.save_label": A,
    "datastore.skip_image": A,  # an annotator sets an unreadable study aside (never a label)
    "datastore.unskip_image": A,
    "datastore.get_clicks": V,
    "datastore.list_skips": V,
    "datastore.upload_image": A,  # Slicer uploads a local volume before labelling it
    "datastore.put_image_info": A,
    "datastore.put_label_info": A,  # setting segmentationMeta needs a reviewer (server/team/review.py)
    "proxy.dicom:POST": A,  # STOW: OHIF saves a DICOM SEG
    "session.create": A,
    "session.get": A,
    "session.delete": A,
    "model.get_model": A,
    # review
    "datastore.update_label_info": R,  # the Reviewer plugin's approve / flag
    "datastore.delete_label": R,
    "datastore.dataset": R,
    "review.cases": R,
    "review.versions": R,
    "review.version_file": A,  # annotators: their own versions only
    "review.report": R,
    "review.restore": R,
    "review.adjudicate": R,
    "review.agreement": R,
    # run the campaign
    "train.train_start": ADMIN,
    "train.train_start_all": ADMIN,
    "train.train_stop": ADMIN,
    "batch.batch_start": ADMIN,
    "batch.batch_stop": ADMIN,
    "scoring.scoring_start": ADMIN,
    "scoring.scoring_start_all": ADMIN,
    "scoring.scoring_stop": ADMIN,
    "model.put_model": ADMIN,
    "model.delete_model": ADMIN,
    "misc.reload": ADMIN,
    "datastore.delete_image": ADMIN,
    "dicom.sync": ADMIN,
    "dicom.fetch": ADMIN,
    "logs.logs": ADMIN,
    "logs.gpu": ADMIN,
    "auth.users": ADMIN,
}


def required_role(endpoint: str | None, method: str) -> Role | None:
    """The least role that may call ``endpoint`` with ``method``; None: open. Unknown: admin only."""
    if endpoint is None:
        return OPEN  # no route matched: the 404 handler answers
    for key in (f"{endpoint}:{method}", endpoint):
        if key in MATRIX:
            return MATRIX[key]
    if method == "HEAD":
        return required_role(endpoint, "GET")
    return ADMIN


def may(role: Role, endpoint: str | None, method: str) -> bool:
    needed = required_role(endpoint, method)
    return needed is None or role >= needed
