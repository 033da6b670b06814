"""The event catalogue (pbx.api.catalogue) is complete and true: every ``publish(kind, ...)``
call in the source — kinds given literally, as a module constant, through a parameter or a
conditional — names a catalogued kind; the data that real code paths publish validates against
the kind's model; the OpenAPI document and the AsyncAPI 3 document at /api/v1/asyncapi.json
list every kind with its data schema."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from pbx.api.catalogue import CATALOGUE
from pbx.api.events import CallEvents
from pbx.callcontrol.records import CallRecord
from pbx.services.events import Event
from tests.pbx.api.conftest import Api

ROOT = Path(__file__).resolve().parents[3]
SOURCES = [p for d in ("pbx", "features", "media", "sipcore") for p in (ROOT / d).rglob("*.py")]


def _strings(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _module_constants(tree: ast.Module) -> dict[str, str]:
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out.update({t.id: node.value.value for t in targets if isinstance(t, ast.Name)})
    return out


def published_kinds() -> tuple[set[str], list[str]]:
    """(every kind the source publishes, the publish calls whose kind was not resolved)."""
    trees = {p: ast.parse(p.read_text(), str(p)) for p in SOURCES}
    constants: dict[str, str] = {}
    for tree in trees.values():
        constants.update(_module_constants(tree))
    # every call's string arguments by the called name and position (for kinds passed in)
    calls: dict[str, list[ast.Call]] = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else \
                    node.func.id if isinstance(node.func, ast.Name) else ""
                calls.setdefault(name, []).append(node)
    kinds: set[str] = set()
    unresolved: list[str] = []
    for path, tree in trees.items():
        for func in [n for n in ast.walk(tree)
                     if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]:
            if func.name == "publish" and [a.arg for a in func.args.args[:2]] == \
                    ["self", "kind"]:
                continue  # the bus itself
            params = [a.arg for a in func.args.args]
            for call in ast.walk(func):
                if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                        and call.func.attr == "publish" and call.args):
                    continue
                arg = call.args[0]
                where = f"{path.relative_to(ROOT)}:{call.lineno}"
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    kinds.add(arg.value)
                elif isinstance(arg, ast.Name) and arg.id in params:
                    index = params.index(arg.id) - (1 if params[0] == "self" else 0)
                    found = {s for c in calls.get(func.name, ()) if len(c.args) > index
                             for s in _strings(c.args[index])}
                    if not found:
                        unresolved.append(where)
                    kinds |= found
                elif isinstance(arg, ast.Name) and arg.id in constants:
                    kinds.add(constants[arg.id])
                elif isinstance(arg, ast.Name):
                    assigned = [n.value for n in ast.walk(func) if isinstance(n, ast.Assign)
                                and any(isinstance(t, ast.Name) and t.id == arg.id
                                        for t in n.targets)]
                    found = {s for v in assigned for s in _strings(v)}
                    if not found:
                        unresolved.append(where)
                    kinds |= found
                elif isinstance(call.func.value, ast.Name) and call.func.value.id == "self" \
                        and any(isinstance(n, ast.FunctionDef) and n.name == "publish"
                                for n in ast.walk(tree)):
                    continue  # a class's own publish(...) helper, not the bus
                else:
                    unresolved.append(where)
    return kinds, unresolved


def test_every_published_kind_is_in_the_catalogue() -> None:
    kinds, unresolved = published_kinds()
    assert not unresolved, f"publish calls whose kind the test cannot tell: {unresolved}"
    # the scan finds what is known to be published (so it cannot pass by finding nothing)
    assert {"settings.changed", "codes.changed", "registration.added", "registration.removed",
            "call.started", "call.answered", "call.ended", "voicemail.changed"} <= kinds
    missing = kinds - set(CATALOGUE)
    assert not missing, f"published but not in pbx.api.catalogue.CATALOGUE: {missing}"
    stale = {k for k, e in CATALOGUE.items() if e.published} - kinds
    assert not stale, f"catalogued but never published: {stale}"


def _check(event: Event) -> None:
    CATALOGUE[event.kind].data.model_validate(dict(event.data))


async def test_published_data_validates_against_the_models(pbx_api: Api) -> None:
    seen: list[Event] = []
    pbx_api.ctx.bus.subscribe(seen.append)
    status, _, _ = await pbx_api.call("PATCH", "/api/v1/users/me/dnd", who="anna",
                                      json={"enabled": True})
    assert status == 200
    record = CallRecord("c1@test", "internal", "100", "101", 1.0)
    hook = CallEvents(pbx_api.ctx.bus, lambda r: [], lambda r: None)
    hook(record)
    record.answered = 2.0
    hook(record)
    record.ended, record.status = 3.0, 200
    hook(record)
    from pbx.voicemail.service import publish_counts

    publish_counts(pbx_api.store, pbx_api.ctx.bus, pbx_api.users["100"].id, "default", "100")
    kinds = [e.kind for e in seen]
    assert {"settings.changed", "call.started", "call.answered", "call.ended",
            "voicemail.changed"} <= set(kinds), kinds
    for event in seen:
        _check(event)


async def test_openapi_and_asyncapi_list_every_kind(pbx_api: Api) -> None:
    _, doc, _ = await pbx_api.call("GET", "/api/v1/openapi.json", who=None)
    schemas = doc["components"]["schemas"]
    for kind in CATALOGUE:
        ref = doc["x-event-kinds"][kind]["data"]["$ref"]
        assert ref.rsplit("/", 1)[-1] in schemas, kind
        assert f"`{kind}`" in doc["info"]["description"]
    status, spec, _ = await pbx_api.call("GET", "/api/v1/asyncapi.json", who=None)
    assert status == 200 and spec["asyncapi"] == "3.0.0"
    messages: dict[str, Any] = spec["components"]["messages"]
    assert {m["name"] for m in messages.values()} == set(CATALOGUE)
    assert spec["servers"]["pbx"]["host"].startswith("127.0.0.1:")
    for message in messages.values():
        payload = spec["components"]["schemas"][message["payload"]["$ref"].rsplit("/", 1)[-1]]
        assert payload["properties"]["kind"] == {"const": message["name"]}
        data_ref = payload["properties"]["data"]["$ref"].rsplit("/", 1)[-1]
        assert "properties" in spec["components"]["schemas"][data_ref]
    # every reference in the document resolves
    text = str(spec)
    import re

    for ref in set(re.findall(r"'#/([^']+)'", text)):
        node: Any = spec
        for part in ref.split("/"):
            node = node[part]
