"""The OpenAPI 3.1 document, generated from the routes' own declarations, and Swagger UI at ``/docs``.

Each view function carries an :class:`Operation` (the :func:`operation` decorator): its query model,
its JSON or multipart body, and its replies. :func:`build_document` walks ``app.url_map`` and writes one
path item per rule with apispec; the schemas are the pydantic models' JSON Schema (2020-12, which is
what OpenAPI 3.1 uses). A route without a declaration still appears, with a generic reply, so the
document always lists every route the server serves.

apispec, rather than spectree or flask-openapi3: both of those validate requests themselves and answer
with their own error bodies, which would change MONAI Label's wire (lax forms, ``{"detail": ...}``); and
flask-openapi3 replaces Flask's app and blueprint classes. apispec only writes the document, from what
the routes already declare. Swagger UI's assets come from the ``flask-openapi3-swagger`` wheel (served
from disk, no CDN).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TypeVar

from apispec import APISpec
from flask import Blueprint, Flask, Response, current_app, jsonify, send_file
from pydantic import BaseModel
from werkzeug.routing import Rule

from server import __version__
from server.api.common import services
from server.errors import NotFound

bp = Blueprint("openapi", __name__)

F = TypeVar("F", bound=Callable[..., Any])
SchemaLike = type[BaseModel] | dict[str, Any]

ERROR_CODES = {
    400: "Bad request",
    401: "Missing or invalid bearer token (auth on)",
    403: "Not allowed for this caller",
    404: "Not found",
    409: "Conflict",
    413: "Too large",
    422: "Invalid value: the detail names the field and the reason",
    429: "Busy: a bounded queue is full or a job of this kind already runs",
    503: "Unavailable",
}
JSON_ANY: dict[str, Any] = {}  # any JSON value
BINARY: dict[str, Any] = {"type": "string", "contentMediaType": "application/octet-stream"}
JSON_TEXT: dict[str, Any] = {"type": "string", "description": "a JSON object, as text"}


@dataclass(frozen=True)
class Reply:
    """One reply: its media types (each with a schema) and a description."""

    description: str
    content: dict[str, SchemaLike] = field(default_factory=dict)


def json_reply(description: str, schema: SchemaLike = JSON_ANY) -> Reply:
    return Reply(description, {"application/json": schema})


def file_reply(description: str, *media_types: str) -> Reply:
    return Reply(description, {t: BINARY for t in media_types or ("application/octet-stream",)})


@dataclass(frozen=True)
class Operation:
    summary: str
    query: type[BaseModel] | None = None
    body: SchemaLike | None = None  # a JSON body
    form: Mapping[str, SchemaLike] | None = None  # multipart/form-data fields
    required: tuple[str, ...] = ()  # the form fields that must be there
    ok: Reply | None = None  # the success reply
    status: int = 200  # ... and its status
    methods: tuple[str, ...] = ()  # only these methods of the rule (a view shared by GET and HEAD)


def operation(
    summary: str,
    *,
    query: type[BaseModel] | None = None,
    body: SchemaLike | None = None,
    form: Mapping[str, SchemaLike] | None = None,
    required: tuple[str, ...] = (),
    ok: Reply | None = None,
    status: int = 200,
    methods: tuple[str, ...] = (),
) -> Callable[[F], F]:
    """Declare what a view takes and answers (see :class:`Operation`); a view that serves methods
    differently stacks one declaration per method (``methods=("HEAD",)``)."""
    op = Operation(summary, query, body, form, required, ok, status, methods)

    def mark(view: F) -> F:
        view.__dict__["openapi_operations"] = (*view.__dict__.get("openapi_operations", ()), op)
        return view

    return mark


def build_document(app: Flask, path_examples: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    """The document; ``path_examples`` names real values of path parameters (the app's models,
    trainers, strategies), so a reader, and a contract test, can try a path that exists."""
    spec = APISpec(
        title="labelloop",
        version=__version__,
        openapi_version="3.1.0",
        info={
            "description": "Active-learning annotation server, wire-compatible with the MONAI Label REST API."
        },
    )
    spec.components.schema(
        "Detail",
        {
            "type": "object",
            "properties": {"detail": {"type": "string"}},
            "required": ["detail"],
        },
    )
    schemas: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions[rule.endpoint]
        ops: tuple[Operation, ...] = view.__dict__.get("openapi_operations", ())
        path, params = openapi_path(rule)
        item = paths.setdefault(path, {})
        for method in sorted((rule.methods or set()) - {"OPTIONS", "HEAD"} | declared_heads(ops)):
            op = next((o for o in ops if not o.methods or method in o.methods), None)
            item[method.lower()] = operation_object(op, rule, method, params, schemas, path_examples or {})
    for name, schema in sorted(schemas.items()):
        spec.components.schema(name, schema)
    for path, item in paths.items():
        spec.path(path=path, operations=item)
    return spec.to_dict()


def declared_heads(ops: tuple[Operation, ...]) -> set[str]:
    return {"HEAD"} if any("HEAD" in o.methods for o in ops) else set()


def openapi_path(rule: Rule) -> tuple[str, list[str]]:
    """``/train/<model>`` -> ``/train/{model}`` and its parameter names."""
    names: list[str] = []

    def sub(match: re.Match[str]) -> str:
        names.append(match.group(2))
        return "{" + match.group(2) + "}"

    return re.sub(r"<(?:([a-z]+):)?([A-Za-z_]\w*)>", sub, rule.rule), names


def operation_object(
    op: Operation | None,
    rule: Rule,
    method: str,
    path_params: list[str],
    schemas: dict[str, Any],
    path_examples: Mapping[str, list[str]],
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": method.lower() + (re.sub(r"[^A-Za-z0-9]+", "_", rule.rule).rstrip("_") or "_root"),
        "summary": op.summary if op is not None else rule.endpoint,
        "tags": [rule.endpoint.split(".")[0]],
    }
    parameters = []
    for name in path_params:
        schema: dict[str, Any] = {"type": "string", "minLength": 1}
        if path_examples.get(name):
            schema["examples"] = list(path_examples[name])
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    if op is not None and op.query is not None:
        query_schema = schema_of(op.query, schemas, inline=True)
        required = set(query_schema.get("required", []))
        for name, prop in query_schema.get("properties", {}).items():
            param: dict[str, Any] = {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": prop,
            }
            if "description" in prop:
                param["description"] = prop["description"]
            parameters.append(param)
    if parameters:
        out["parameters"] = parameters
    if op is not None and op.body is not None:
        out["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": schema_of(op.body, schemas)}},
        }
    if op is not None and op.form is not None:
        props = {name: schema_of(s, schemas) for name, s in op.form.items()}
        form_schema: dict[str, Any] = {"type": "object", "properties": props}
        if op.required:
            form_schema["required"] = list(op.required)
        out["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": form_schema}}}
    ok = op.ok if op is not None and op.ok is not None else json_reply("the reply")
    replies = {op.status if op is not None else 200: ok}
    responses: dict[str, Any] = {}
    for code, reply in sorted(replies.items()):
        entry: dict[str, Any] = {"description": reply.description}
        if reply.content:
            entry["content"] = {t: {"schema": schema_of(s, schemas)} for t, s in reply.content.items()}
        responses[str(code)] = entry
    for code, text in ERROR_CODES.items():
        responses.setdefault(
            str(code),
            {
                "description": text,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Detail"}}},
            },
        )
    out["responses"] = responses
    return out


def schema_of(value: SchemaLike, schemas: dict[str, Any], *, inline: bool = False) -> dict[str, Any]:
    """A pydantic model as a ``$ref`` (its schema, and those it uses, go to the components)."""
    if isinstance(value, dict):
        return value
    schema = value.model_json_schema(ref_template="#/components/schemas/{model}", mode="validation")
    for name, sub in schema.pop("$defs", {}).items():
        schemas[name] = sub
    if inline:
        return schema
    schemas[value.__name__] = schema
    return {"$ref": f"#/components/schemas/{value.__name__}"}


# ---- the routes ------------------------------------------------------------------------------------
DOCS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>labelloop API</title>
<link rel="stylesheet" href="swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "../openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>
"""
SWAGGER_ASSETS = {"swagger-ui.css": "css", "swagger-ui-bundle.js": "js"}


@bp.get("/openapi.json")
@operation("This document: the OpenAPI 3.1 description of every route")
def openapi_json() -> Response:
    spec = services().spec
    examples = {
        "model": sorted({*spec.models, *spec.trainers}),
        "name": sorted(spec.models),
        "strategy": sorted(spec.strategies),
        "method": sorted(spec.scoring),
    }
    return jsonify(build_document(current_app, examples))


@bp.get("/docs/")
@operation(
    "Swagger UI over /openapi.json (local assets)", ok=Reply("page", {"text/html": {"type": "string"}})
)
def docs() -> Response:
    return Response(DOCS_PAGE, mimetype="text/html")


@bp.get("/docs/<asset>")
@operation(
    "Swagger UI's script and style sheet",
    ok=Reply("the asset", {"text/css": {"type": "string"}, "text/javascript": {"type": "string"}}),
)
def docs_asset(asset: str) -> Response:
    folder = SWAGGER_ASSETS.get(asset)
    if folder is None:
        raise NotFound(f"no such documentation asset: {asset!r}")
    root = resources.files("flask_openapi3_swagger") / "templates" / "swagger" / folder
    mimetype = "text/css" if folder == "css" else "text/javascript"
    return send_file(str(root / asset), mimetype=mimetype, max_age=3600)
