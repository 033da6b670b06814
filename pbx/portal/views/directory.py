"""The company directory and the user's own contacts (``/portal/directory``), searchable with
``?q=``; every number has click-to-call through call-back (the PBX rings the user's phone
first, then the number: ``start_call_back``) and a link to the browser phone; colleagues have
a link to the chat. Contacts are added, changed and deleted with plain forms
(``/portal/directory/contacts…``); the call-back form is also a page of its own
(``/portal/call-back``)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pbx.i18n import N_
from pbx.portal.core import NavItem, PageError, Portal, PortalRequest

__all__ = ["ORDER", "register"]

#: The place in the navigation.
ORDER = 61

#: The labels a contact's number may have (the form offers them; stored as given).
LABELS = (("work", N_("work")), ("mobile", N_("mobile")), ("home", N_("home")),
          ("other", N_("other")))
#: Numbers a contact form has fields for.
FORM_NUMBERS = 3
#: The phones a call-back may ring first (the API's ``phone``; "" = the user's setting).
PHONES = (("", N_("as in my settings")), ("device", N_("my phones")),
          ("mobile", N_("my mobile number")), ("remote_office", N_("my remote office number")))


async def directory(pr: PortalRequest) -> web.StreamResponse:
    q = pr.raw.query.get("q", "").strip()[:64]
    query = {"q": q, "limit": "500"}
    colleagues = await pr.api("list_directory", query=query)
    contacts = await pr.api("list_contacts", user="me", query={"q": q})
    return await pr.render("directory.html", q=q, colleagues=colleagues["items"],
                           contacts=contacts["items"], labels=LABELS, phones=PHONES,
                           form_numbers=FORM_NUMBERS, contact=None, error="", field="")


def _contact_body(form: Any) -> dict[str, Any]:
    numbers = []
    for i in range(FORM_NUMBERS):
        number = str(form.get(f"number{i}", "") or "").replace(" ", "").replace("-", "")
        if number:
            numbers.append({"label": str(form.get(f"label{i}", "") or "")[:32],
                            "number": number})
    return {"name": str(form.get("name", "") or "").strip(),
            "company": str(form.get("company", "") or "").strip(),
            "email": str(form.get("email", "") or "").strip(), "numbers": numbers}


async def _contact_form(pr: PortalRequest, contact: dict[str, Any] | None, err: PageError,
                        sent: dict[str, Any]) -> web.Response:
    message = (N_("Check the name and the numbers (digits, + * # only).")
               if err.status == 422 else N_("This did not work"))
    shown = {**(contact or {}), **sent}
    return await pr.render("contact_edit.html", status=err.status, contact=shown,
                           labels=LABELS, form_numbers=FORM_NUMBERS, error=pr.t(message),
                           field=str(err.field or ""))


async def add_contact(pr: PortalRequest) -> web.StreamResponse:
    form = await pr.form()
    body = _contact_body(form)
    try:
        await pr.api("create_contact", user="me", body=body)
    except PageError as err:
        return await _contact_form(pr, None, err, body)
    pr.redirect("/portal/directory", notice="created")


async def _contact(pr: PortalRequest) -> dict[str, Any]:
    found: dict[str, Any] = await pr.api("get_contact", user="me",
                                         contact=pr.raw.match_info["contact"])
    return found


async def edit_contact(pr: PortalRequest) -> web.StreamResponse:
    contact = await _contact(pr)
    return await pr.render("contact_edit.html", contact=contact, labels=LABELS,
                           form_numbers=FORM_NUMBERS, error="", field="")


async def save_contact(pr: PortalRequest) -> web.StreamResponse:
    contact = await _contact(pr)
    form = await pr.form()
    body = _contact_body(form)
    try:
        await pr.api("patch_contact", user="me", contact=contact["id"], body=body)
    except PageError as err:
        return await _contact_form(pr, contact, err, body)
    pr.redirect("/portal/directory", notice="saved")


async def delete_contact(pr: PortalRequest) -> web.StreamResponse:
    contact = await _contact(pr)
    await pr.form()
    await pr.api("delete_contact", user="me", contact=contact["id"])
    pr.redirect("/portal/directory", notice="deleted")


def _back(value: str) -> str:
    return value if value.startswith("/portal/") and not value.startswith("//") else \
        "/portal/call-back"


async def call_back_page(pr: PortalRequest) -> web.StreamResponse:
    return await pr.render("call_back.html", phones=PHONES, error="",
                           target=pr.raw.query.get("target", "")[:32])


async def call_back(pr: PortalRequest) -> web.StreamResponse:
    form = await pr.form()
    target = str(form.get("target", "") or "").replace(" ", "").replace("-", "")[:32]
    phone = str(form.get("phone", "") or "")
    back = _back(str(form.get("back", "") or ""))
    body: dict[str, Any] = {"target": target}
    if phone in {p for p, _ in PHONES if p}:
        body["phone"] = phone
    try:
        await pr.api("start_call_back", user="me", body=body)
    except PageError as err:
        if err.status == 409 and phone == "mobile":
            message = N_("You have no mobile number: enter it in your settings.")
        elif err.status == 409 and phone == "remote_office":
            message = N_("You have no remote office number: enter it in your settings.")
        elif err.status == 422:
            message = N_("Enter a number to call (digits, + * # only).")
        else:
            message = N_("The call-back could not be started.")
        return await pr.render("call_back.html", status=err.status, phones=PHONES,
                               error=pr.t(message), target=target)
    pr.redirect(back, notice="calling")


def register(portal: Portal) -> None:
    """``/portal/directory`` (+ contacts) and ``/portal/call-back``."""
    portal.add_nav(NavItem("/portal/directory", N_("Directory")))
    portal.page("GET", "/portal/directory", directory)
    portal.page("POST", "/portal/directory/contacts", add_contact)
    portal.page("GET", r"/portal/directory/contacts/{contact:\d+}", edit_contact)
    portal.page("POST", r"/portal/directory/contacts/{contact:\d+}", save_contact)
    portal.page("POST", r"/portal/directory/contacts/{contact:\d+}/delete", delete_contact)
    portal.page("GET", "/portal/call-back", call_back_page)
    portal.page("POST", "/portal/call-back", call_back)
