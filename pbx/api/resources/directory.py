"""The company directory, a user's personal contacts and the browser phone's SIP account.

``GET /directory``: the users of the caller's tenant as colleagues see them (name, extension,
the DIDs they own), searchable with ``?q=`` — every user of a tenant may read it, unlike
``GET /users`` (which shows a plain user only themselves and has their private fields).

``/users/{user}/contacts``: the user's own address book (name, company, e-mail, up to four
numbers with labels); only the user (and their tenant's admins) see it.

``POST /users/{user}/webphone``: the SIP account of the user's browser phone (the portal's
softphone): made on first use (a device of kind ``browser``), answered with its digest
credentials (username, realm and the MD5 HA1 — JsSIP authenticates with ``ha1`` + ``realm``,
so no password is handed out or typed). Only for the user themselves (an admin's token gets
404 for another user's: this is a credential), never cached.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from pbx.api.models import Request
from pbx.api.problems import ApiProblem, FieldError
from pbx.api.resources.common import USER_PARAM, int_param, not_found, tenant_of, user_of
from pbx.api.routes import ApiRequest, ApiRouter, Route, json_response
from pbx.store import StoreError
from pbx.store.contacts import MAX_NUMBERS, Contact, ContactNumber

__all__ = ["ContactIn", "ContactOut", "DirectoryEntry", "WebphoneAccount", "register"]

#: What a contact's number may be: digits with an optional +, *, # (as dialled).
NUMBER = r"^\+?[0-9*#]{1,32}$"


class DirectoryQuery(BaseModel):
    """``q``: part of a name, extension or number (case-insensitive); paging as everywhere;
    ``tenant_id`` only for a system admin (whose token has no tenant)."""

    model_config = ConfigDict(extra="forbid")

    q: Annotated[str, Field(max_length=64)] = ""
    limit: Annotated[int, Field(ge=1, le=500)] = 100
    offset: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    tenant_id: int | None = None


class ContactQuery(BaseModel):
    """``q``: part of a name, company or number (case-insensitive)."""

    model_config = ConfigDict(extra="forbid")

    q: Annotated[str, Field(max_length=64)] = ""


class DirectoryEntry(BaseModel):
    """A colleague: user id, extension, name and their DIDs (E.164)."""

    id: int
    extension: str
    name: str
    numbers: list[str]


class DirectoryPage(BaseModel):
    """Colleagues, by name."""

    items: list[DirectoryEntry]
    total: int


class ContactNumberIn(Request):
    """A number of a contact and its label (work, mobile, home … free text)."""

    label: Annotated[str, Field(max_length=32)] = ""
    number: Annotated[str, Field(pattern=NUMBER)]


class ContactIn(Request):
    """A contact: a name and up to four numbers (PATCH: any of the fields)."""

    name: Annotated[str, Field(min_length=1, max_length=120)] | None = None
    company: Annotated[str, Field(max_length=120)] | None = None
    email: Annotated[str, Field(max_length=254)] | None = None
    numbers: Annotated[list[ContactNumberIn], Field(max_length=MAX_NUMBERS)] | None = None


class ContactNumberOut(BaseModel):
    """A number of a contact."""

    label: str
    number: str


class ContactOut(BaseModel):
    """A contact of the user."""

    id: int
    name: str
    company: str
    email: str
    numbers: list[ContactNumberOut]
    created_at: float
    changed_at: float


class ContactPage(BaseModel):
    """The user's contacts, by name."""

    items: list[ContactOut]
    total: int


class WebphoneAccount(BaseModel):
    """The browser phone's SIP account: register as ``uri`` with ``username`` and ``ha1``
    (MD5 of ``username:realm:password``) in ``realm``."""

    device_id: int
    username: str
    realm: str
    ha1: str
    uri: str
    domain: str
    display_name: str
    created: bool


def _contact_out(c: Contact) -> ContactOut:
    return ContactOut(id=c.id, name=c.name, company=c.company, email=c.email,
                      numbers=[ContactNumberOut(label=n.label, number=n.number)
                               for n in c.numbers],
                      created_at=c.created_at, changed_at=c.changed_at)


def _matches(q: str, *texts: str) -> bool:
    return not q or any(q in t.casefold() for t in texts)


async def list_directory(req: ApiRequest) -> web.StreamResponse:
    query = req.query_as(DirectoryQuery)
    who = req.who
    tenant_id = who.tenant_id if who.tenant_id is not None else query.tenant_id
    if tenant_id is None:
        raise ApiProblem(422, "validation_failed", "name the tenant (tenant_id)",
                         field="query:tenant_id",
                         errors=[FieldError(field="query:tenant_id", code="missing",
                                            message="a system admin token must name it")])
    if query.tenant_id is not None and query.tenant_id != tenant_id:
        raise not_found(f"tenant {query.tenant_id}")
    tenant_of(req, tenant_id)
    snap = req.ctx.directory.snapshot
    q = query.q.strip().casefold()
    found = []
    for user in snap.users.values():
        if user.tenant_id != tenant_id:
            continue
        numbers = [n.e164 for n in snap.numbers_of.get(user.id, ())]
        if _matches(q, user.name, user.extension, *numbers):
            found.append(DirectoryEntry(id=user.id, extension=user.extension, name=user.name,
                                        numbers=numbers))
    found.sort(key=lambda e: ((e.name or e.extension).casefold(), e.extension))
    items = found[query.offset:query.offset + query.limit]
    return json_response(DirectoryPage(items=items, total=len(found)))


def _numbers(body: ContactIn) -> list[ContactNumber]:
    return [ContactNumber(n.label.strip(), n.number) for n in body.numbers or ()]


async def list_contacts(req: ApiRequest) -> web.StreamResponse:
    user = user_of(req)
    q = req.query_as(ContactQuery).q.strip().casefold()
    found = await asyncio.to_thread(req.ctx.store.contacts, user.id)
    items = [_contact_out(c) for c in found
             if _matches(q, c.name, c.company, *(n.number for n in c.numbers))]
    return json_response(ContactPage(items=items, total=len(items)))


async def create_contact(req: ApiRequest) -> web.StreamResponse:
    user = user_of(req)
    body = req.body_as(ContactIn)
    if body.name is None or not body.name.strip():
        raise ApiProblem(422, "validation_failed", "a contact needs a name", field="/name",
                         errors=[FieldError(field="/name", code="missing",
                                            message="the contact's name")])
    try:
        made = await asyncio.to_thread(
            req.ctx.store.add_contact, user.id, name=body.name.strip(),
            company=(body.company or "").strip(), email=(body.email or "").strip(),
            numbers=_numbers(body), now=time.time())
    except ValueError as exc:
        raise ApiProblem(409, "conflict", str(exc)) from exc
    return json_response(_contact_out(made), 201, headers={
        "Location": f"/api/v1/users/{user.id}/contacts/{made.id}"})


async def _contact(req: ApiRequest) -> tuple[int, Contact]:
    user = user_of(req)
    contact_id = int_param(req, "contact")
    found = await asyncio.to_thread(req.ctx.store.contact, user.id, contact_id)
    if found is None:
        raise not_found(f"contact {contact_id}")
    return user.id, found


async def get_contact(req: ApiRequest) -> web.StreamResponse:
    _, found = await _contact(req)
    return json_response(_contact_out(found))


async def patch_contact(req: ApiRequest) -> web.StreamResponse:
    user_id, found = await _contact(req)
    body = req.body_as(ContactIn)
    changes: dict[str, object] = {}
    for key in body.model_fields_set:
        value = getattr(body, key)
        if value is None:
            raise ApiProblem(422, "validation_failed", f"{key} cannot be null", field=f"/{key}")
        if key == "numbers":
            changes[key] = _numbers(body)
        elif isinstance(value, str):
            if key == "name" and not value.strip():
                raise ApiProblem(422, "validation_failed", "a contact needs a name",
                                 field="/name")
            changes[key] = value.strip()
    changed = await asyncio.to_thread(req.ctx.store.update_contact, user_id, found.id,
                                      now=time.time(), **changes) if changes else found
    assert changed is not None
    return json_response(_contact_out(changed))


async def delete_contact(req: ApiRequest) -> web.StreamResponse:
    user_id, found = await _contact(req)
    await asyncio.to_thread(req.ctx.store.remove_contact, user_id, found.id)
    return web.Response(status=204)


def _web_username(extension: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._+~-]", "", extension)[:50] + "-web"
    name = base
    while name in taken:
        name = f"{base}-{secrets.token_hex(2)}"
    return name


async def webphone(req: ApiRequest) -> web.StreamResponse:
    user = user_of(req)
    if req.who.user_id != user.id:
        raise not_found(f"browser phone of user {user.id}")
    tenant = tenant_of(req, user.tenant_id)
    directory = req.ctx.directory
    device = next((d for d in directory.snapshot.devices_of.get(user.id, ())
                   if d.kind == "browser" and d.username.endswith("-web")
                   and d.realm == tenant.realm), None)
    created = device is None
    if device is None:
        taken = {d.username for ds in directory.snapshot.devices_of.values() for d in ds}
        username = _web_username(user.extension, taken)
        try:
            device = await asyncio.to_thread(
                req.ctx.store.add_device, user.extension, username, secrets.token_urlsafe(24),
                tenant=tenant.name, kind="browser")
        except StoreError as exc:
            raise ApiProblem(409, "conflict", str(exc)) from exc
    return json_response(WebphoneAccount(
        device_id=device.id, username=device.username, realm=device.realm,
        ha1=device.ha1_md5, uri=f"sip:{user.extension}@{tenant.domain}", domain=tenant.domain,
        display_name=user.name or user.extension, created=created),
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def register(router: ApiRouter) -> None:
    """The routes of this module."""
    contact = {**USER_PARAM, "contact": {"type": "integer", "minimum": 1}}
    router.add(Route("GET", "/directory", list_directory,
                     "The company directory: the tenant's users (name, extension, numbers)",
                     "users", "list_directory", query=DirectoryQuery, response=DirectoryPage,
                     description="Every user of a tenant may read it; ?q= searches names, "
                                 "extensions and numbers."))
    router.add(Route("GET", "/users/{user}/contacts", list_contacts, "A user's contacts",
                     "contacts", "list_contacts", query=ContactQuery, response=ContactPage,
                     path_params=USER_PARAM,
                     description="?q= searches names, companies and numbers."))
    router.add(Route("POST", "/users/{user}/contacts", create_contact, "Add a contact",
                     "contacts", "create_contact", body=ContactIn, response=ContactOut,
                     status=201, errors=(409,), path_params=USER_PARAM))
    router.add(Route("GET", "/users/{user}/contacts/{contact}", get_contact, "A contact",
                     "contacts", "get_contact", response=ContactOut, path_params=contact))
    router.add(Route("PATCH", "/users/{user}/contacts/{contact}", patch_contact,
                     "Change a contact", "contacts", "patch_contact", body=ContactIn,
                     response=ContactOut, path_params=contact))
    router.add(Route("DELETE", "/users/{user}/contacts/{contact}", delete_contact,
                     "Delete a contact", "contacts", "delete_contact", status=204,
                     path_params=contact))
    router.add(Route("POST", "/users/{user}/webphone", webphone,
                     "The SIP account of the user's browser phone (made on first use)",
                     "devices", "get_webphone_account", response=WebphoneAccount,
                     path_params=USER_PARAM, errors=(409,),
                     description="Only for the user themselves. Answers the digest "
                                 "credentials (username, realm, MD5 HA1) of a device of kind "
                                 "browser, made the first time (created: true)."))
