"""The OpenAPI 3.1 document, generated from the route table (:class:`pbx.api.routes.ApiRouter`)
and the routes' pydantic models (their JSON Schemas become ``components.schemas``): what the
code serves is what the document says."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from pbx.api.catalogue import CATALOGUE, data_schemas
from pbx.api.logins import COOKIE
from pbx.api.models import EventMessage
from pbx.api.problems import Problem
from pbx.api.routes import ApiRouter, Route

__all__ = ["openapi_document"]

REF = "#/components/schemas/{model}"
_PARAM = re.compile(r"{([a-z_]+)}")


def _models(routes: list[Route]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    seen: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {
        (Problem, "serialization"): None, (EventMessage, "serialization"): None}
    for r in routes:
        if r.body is not None:
            seen[(r.body, "validation")] = None
        if r.response is not None:
            seen[(r.response, "serialization")] = None
    return list(seen)


def _query_parameters(model: type[BaseModel], defs: dict[str, Any]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    defs.update(schema.pop("$defs", {}))
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema.get("properties", {}).items():
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required,
                                 "schema": {k: v for k, v in prop.items() if k != "title"}}
        if "description" in prop:
            param["description"] = prop["description"]
        out.append(param)
    return out


def _problem(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/problem+json": {"schema": {"$ref": REF.format(
                model="Problem")}}}}


def _operation(route: Route, refs: dict[tuple[type[BaseModel], JsonSchemaMode], Any],
               defs: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": route.operation_id, "summary": route.summary,
                          "tags": [route.tag]}
    if route.description:
        op["description"] = route.description
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True,
         "schema": dict(route.path_params.get(name, {"type": "string"}))}
        for name in _PARAM.findall(route.path)]
    if route.query is not None:
        params += _query_parameters(route.query, defs)
    if route.etag and route.method in ("PATCH", "DELETE"):
        params.append({"name": "If-Match", "in": "header", "required": False,
                       "schema": {"type": "string"},
                       "description": "the ETag this change is based on (412 when stale)"})
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": refs[(route.body, "validation")]}}}
    elif route.request_content:  # a file as the body (an upload the handler reads itself)
        op["requestBody"] = {"required": True, "content": {
            media: {"schema": {"type": "string", "format": "binary", "description": spec}
                    if isinstance(spec, str) else dict(spec)}
            for media, spec in route.request_content.items()}}
    ok: dict[str, Any] = {"description": route.summary}
    if route.response is not None and route.status != 204:
        ok["content"] = {"application/json": {"schema": refs[(route.response,
                                                              "serialization")]}}
    for media, text in route.content.items():
        ok.setdefault("content", {})[media] = {"schema": {"type": "string"}}
        ok["description"] = text
    if route.etag and route.status != 204:
        ok["headers"] = {"ETag": {"schema": {"type": "string"},
                                  "description": "the version, for If-Match"}}
    responses: dict[str, Any] = {str(route.status): ok}
    if route.operation_id == "events":
        responses["400"] = _problem("not a WebSocket request")
    if route.role is not None:
        responses["401"] = _problem("no token, or an unknown, expired or revoked one")
        responses["403"] = _problem("the token's role may not do this")
        responses["429"] = _problem("this address failed to authenticate too often")
    if _PARAM.search(route.path) or route.role is not None:
        responses["404"] = _problem("no such object (or not one the token sees)")
    if route.body is not None:
        responses["400"] = _problem("the body is not JSON")
        responses["413"] = _problem("the body is too large")
        responses["415"] = _problem("the body is not application/json")
    if route.body is not None or route.query is not None or route.errors:
        responses["422"] = _problem("invalid input: the problem names the field")
    for status in route.errors:
        responses[str(status)] = _problem({409: "conflicts with an existing object",
                                           412: "If-Match names a stale version"}.get(
                                               status, "error"))
    op["responses"] = responses
    op["security"] = [{"bearer": []}, {"session": []}] if route.role is not None else []
    return op


def openapi_document(router: ApiRouter, *, prefix: str, version: str) -> dict[str, Any]:
    """The whole document (a JSON-ready dict)."""
    refs, top = models_json_schema(_models(router.routes), ref_template=REF)
    defs: dict[str, Any] = dict(top.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    for route in router.routes:
        paths.setdefault(prefix + route.path, {})[route.method.lower()] = _operation(
            route, refs, defs)  # type: ignore[arg-type]
    event_refs, event_defs = data_schemas()
    for name, schema in event_defs.items():
        defs.setdefault(name, schema)
    catalogue = "\n".join(f"- `{kind}`: {entry.summary} (data: "
                          f"`{event_refs[kind]['$ref'].rsplit('/', 1)[-1]}`)"
                          for kind, entry in CATALOGUE.items())
    return {
        "openapi": "3.1.0",
        "info": {"title": "asyncpbx API", "version": version or "0",
                 "description": "The asyncpbx REST API. Authenticate with an API token "
                                "(`asyncpbx token create`) as `Authorization: Bearer TOKEN`. "
                                "Errors are RFC 9457 problem details with a stable `code`. "
                                "The browser logs in with POST /api/v1/session (a session "
                                "cookie; changes need X-CSRF-Token and the server's Origin). "
                                "\n\nLive events (GET /api/v1/events, WebSocket; the AsyncAPI "
                                "3 document is /api/v1/asyncapi.json):\n" + catalogue},
        "x-event-kinds": {kind: {"summary": entry.summary, "data": event_refs[kind]}
                          for kind, entry in CATALOGUE.items()},
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {"schemas": defs,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "an asyncpbx API token"},
                                           "session": {"type": "apiKey", "in": "cookie",
                                                       "name": COOKIE,
                                                       "description": "a portal session "
                                                                      "(POST /session)"}}},
    }
