"""Every per-user feature setting as a typed sub-resource, generated from the feature registry:
``/users/{user}/dnd``, ``/users/{user}/forwards/immediate``, ``/users/{user}/privacy`` … — one
GET and one PATCH per feature with settings, their models made from the feature's
:data:`~pbx.settings_schema.SettingsSchema` (types, bounds, choices, lengths, descriptions), so a
new feature's settings appear in the API and its document by registering the feature.

A PATCH goes through :class:`pbx.services.SettingsService` — the feature's schema, its per-user
check, the store, the cache the calls read, one ``settings.changed`` event — exactly as a
feature code does: one source of truth. Only the fields sent change; ``If-Match`` with a stale
ETag is refused (412) before anything is stored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, create_model

from pbx.api.resources.common import USER_PARAM, user_of
from pbx.api.routes import ApiRequest, ApiRouter, Route, etag_of, json_response
from pbx.callcontrol import FeatureRegistry
from pbx.settings_schema import Setting, SettingsSchema

__all__ = ["FEATURE_PATHS", "feature_path", "register"]

#: API paths of features whose name is not the path (``clir`` is what users call privacy).
FEATURE_PATHS = {
    "forward_immediate": "forwards/immediate",
    "forward_busy": "forwards/busy",
    "forward_no_answer": "forwards/no-answer",
    "forward_unreachable": "forwards/unreachable",
    "clir": "privacy",
}


def feature_path(name: str) -> str:
    """The sub-resource path of feature ``name`` (``call_waiting`` → ``call-waiting``)."""
    return FEATURE_PATHS.get(name, name.replace("_", "-"))


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _annotation(spec: Setting) -> Any:
    """The pydantic type of one setting."""
    meta: dict[str, Any] = {"description": spec.description} if spec.description else {}
    if spec.choices is not None:
        return Annotated[Literal[tuple(spec.choices)], Field(**meta)]  # type: ignore[misc]
    if spec.type is bool:
        return Annotated[StrictBool, Field(**meta)]
    if spec.type in (int, float):
        if spec.minimum is not None:
            meta["ge"] = spec.minimum
        if spec.maximum is not None:
            meta["le"] = spec.maximum
        base: Any = StrictInt if spec.type is int else StrictFloat | StrictInt
        return Annotated[base, Field(**meta)]
    if spec.max_length is not None:
        meta["max_length"] = spec.max_length
    if spec.type is list:
        return Annotated[list[str], Field(**meta)]
    return Annotated[str, Field(**meta)]


def _no_defaults(schema: dict[str, Any]) -> None:
    """A PATCH field not sent is not changed: it has no default (None is only "not sent")."""
    for prop in schema.get("properties", {}).values():
        prop.pop("default", None)


def settings_models(name: str, schema: SettingsSchema) -> tuple[type[BaseModel],
                                                               type[BaseModel]]:
    """(the full settings model, the PATCH model) of feature ``name``."""
    full: dict[str, Any] = {}
    patch: dict[str, Any] = {}
    for key, spec in schema.items():
        ann = _annotation(spec)
        full[key] = (ann, ...)
        patch[key] = (ann, None)  # not sent: None (an explicit null is refused: 422)
    out = create_model(f"{_camel(name)}Settings", __doc__=f"The {name} settings of a user.",
                       **full)
    change = create_model(f"{_camel(name)}SettingsPatch",
                          __config__=ConfigDict(extra="forbid",
                                                json_schema_extra=_no_defaults),
                          __doc__=f"Changes to the {name} settings (fields not sent keep "
                                  "their value).", **patch)
    return out, change


def _get(feature: str, model: type[BaseModel]) -> Any:
    async def handler(req: ApiRequest) -> web.StreamResponse:
        user = user_of(req)
        current = req.ctx.settings.get(user.id, feature)
        return json_response(model.model_validate(current), etag=True)

    return handler


def _patch(feature: str, model: type[BaseModel]) -> Any:
    async def handler(req: ApiRequest) -> web.StreamResponse:
        user = user_of(req)
        body = req.body
        assert body is not None
        service = req.ctx.settings
        async with service.lock(user.id, feature):  # the ETag holds until the write is done
            stored = service.get(user.id, feature)
            current = model.model_validate(stored)
            req.check_etag(etag_of(current.model_dump(mode="json")))
            # what differs from now (a value sent as it is is no change: no write, no event)
            changes = {k: getattr(body, k) for k in body.model_fields_set
                       if stored.get(k) != getattr(body, k)}
            # the disk write off the event loop: the calls go on meanwhile
            after = await service.update_off_loop(user.id, feature, changes, source="api") \
                if changes else stored
        return json_response(model.model_validate(after), etag=True)

    return handler


def _all(registry: FeatureRegistry, models: dict[str, type[BaseModel]]) -> Any:
    async def handler(req: ApiRequest) -> web.StreamResponse:
        user = user_of(req)
        out = {feature_path(name): model.model_validate(req.ctx.settings.get(user.id, name))
               .model_dump(mode="json") for name, model in models.items()}
        return json_response(out, etag=True)

    return handler


def register(router: ApiRouter, registry: FeatureRegistry) -> None:
    """A GET and a PATCH per feature with settings, and GET /users/{user}/settings."""
    models: dict[str, type[BaseModel]] = {}
    for feature in registry.features:
        schema = feature.settings_schema
        if not schema:
            continue
        name = feature.name
        out, change = settings_models(name, schema)
        models[name] = out
        path = f"/users/{{user}}/{feature_path(name)}"
        router.add(Route("GET", path, _get(name, out), f"The {name} settings of a user",
                         "settings", f"get_{name}", response=out, etag=True,
                         path_params=USER_PARAM))
        router.add(Route("PATCH", path, _patch(name, out), f"Change {name} settings",
                         "settings", f"patch_{name}", body=change, response=out, etag=True,
                         path_params=USER_PARAM, errors=(412,),
                         description="Goes through the settings service, like the feature "
                                     "code: validated, stored, in force for the next call, "
                                     "one settings.changed event."))
    fields: dict[str, Any] = {feature_path(n).replace("/", "_").replace("-", "_"):
                              (m, Field(alias=feature_path(n))) for n, m in models.items()}
    every = create_model("AllSettings", __doc__="Every feature setting of a user, by path.",
                         **fields)
    router.add(Route("GET", "/users/{user}/settings", _all(registry, models),
                     "Every feature setting of a user", "settings", "get_all_settings",
                     response=every, etag=True, path_params=USER_PARAM))
