"""The user's settings (FEATURES.md §1–3, in the manual's terms): call method and permanent
call-back, suppressing the own number (CLIR), the displayed number, the four forwardings with
their targets and rings, do not disturb, call waiting, rejecting anonymous callers, remote
office, parallel ringing with the mobile number, the voicemail box (its e-mail, the message
waiting indication, the PIN) and the greeting upload.

Each section is one form posting to ``/portal/settings/<section>``; its handler sends the
fields to the section's PATCH operations (the feature's settings, or the user for the mobile
and remote office numbers and the PIN) — the API validates, stores and publishes
``settings.changed``. The sections are marked ``data-live="settings.changed"``: a change by a
feature code from a phone shows in an open page without a reload.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from pbx.api.problems import ApiProblem
from pbx.i18n import N_
from pbx.portal.core import NavItem, PageError, Portal, PortalRequest

__all__ = ["ORDER", "SECTIONS", "register"]

#: The place in the navigation.
ORDER = 20


@dataclass(frozen=True)
class Field:
    """One input: the setting's key, its label, the kind of input, choices (value → label)
    and a hint shown under it."""

    key: str
    label: str
    kind: str = "checkbox"  # checkbox, select, number, tel, email, text, password
    choices: Mapping[str, str] = field(default_factory=dict)
    hint: str = ""
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None


@dataclass(frozen=True)
class Part:
    """The fields one PATCH operation takes: a feature's settings (``feature`` is its
    settings path, as in ``get_all_settings``) or the user (``feature`` empty)."""

    operation: str
    feature: str
    fields: Sequence[Field]


@dataclass(frozen=True)
class Section:
    """A form of the page: its id (the form's path), heading, explanation and parts; a
    ``state`` (a feature path) shows on/off (and the target) above the form."""

    id: str
    heading: str
    parts: Sequence[Part]
    intro: str = ""
    state: str = ""


def _forward(kind: str, heading: str, intro: str, extra: Sequence[Field] = ()) -> Section:
    feature = "forwards/" + kind
    op = "patch_forward_" + kind.replace("-", "_")
    return Section(f"forward-{kind}", heading, [Part(op, feature, [
        Field("enabled", N_("On")),
        Field("target", N_("Forward to"), "tel", hint=N_("An extension or a phone number")),
        Field("voicemail", N_("Forward to the voicemail box instead")),
        *extra])], intro, state=feature)


SECTIONS: tuple[Section, ...] = (
    Section("call-method", N_("Call method"), [
        Part("patch_call_back", "call-back", [
            Field("method", N_("Standard call method"), "select", {
                "device": N_("Dial with this phone"), "call_back": N_("Dial with call-back")}),
            Field("permanent", N_("Permanent call-back"),
                  hint=N_("Every outgoing call is started with the call-back method.")),
            Field("phone", N_("The call-back rings first"), "select", {
                "mobile": N_("my mobile number"), "remote_office": N_("my remote office number"),
                "device": N_("my phones")}),
        ])], N_("With call-back the PBX calls you first; when you answer, it calls the "
                "other party and shows your business number.")),
    Section("privacy", N_("Suppress own number"), [
        Part("patch_clir", "privacy", [
            Field("enabled", N_("Suppress own number on every outgoing call"))])],
        state="privacy"),
    Section("displayed-number", N_("Displayed number"), [
        Part("patch_displayed_number", "displayed-number", [
            Field("number", N_("Number shown to the people you call"), "select")])]),
    _forward("immediate", N_("Call forwarding immediately"),
             N_("Calls are forwarded at once to the number you enter."),
             [Field("ring_reminder", N_("Ring my phones briefly (ring reminder)"))]),
    _forward("busy", N_("Call forwarding when busy"),
             N_("Calls are forwarded while you are on the phone.")),
    _forward("no-answer", N_("Call forwarding on no answer"),
             N_("Calls are forwarded after the number of rings you set."),
             [Field("rings", N_("Number of rings"), "number", minimum=1, maximum=20, step=1,
                    hint=N_("One ring lasts 5 seconds."))]),
    _forward("unreachable", N_("Call forwarding when unreachable"),
             N_("Calls are forwarded when none of your phones is registered or answers.")),
    Section("dnd", N_("Do not disturb"), [
        Part("patch_dnd", "dnd", [
            Field("enabled", N_("On")),
            Field("ring_burst", N_("Notification tone for rejected calls"))])],
        N_("Callers hear busy; the calls are kept in the call history."), state="dnd"),
    Section("call-waiting", N_("Call waiting"), [
        Part("patch_call_waiting", "call-waiting", [Field("enabled", N_("On"))])],
        N_("A second call during a call is signalled with the call waiting tone."),
        state="call-waiting"),
    Section("anonymous-rejection", N_("Reject anonymous callers"), [
        Part("patch_anonymous_rejection", "anonymous-rejection", [Field("enabled", N_("On"))])],
        N_("Callers who withhold their number are rejected."), state="anonymous-rejection"),
    Section("ringing", N_("Ringing"), [
        Part("patch_ringing", "ringing", [
            Field("ring_timeout", N_("Ring time in seconds"), "number", minimum=5, maximum=300,
                  step=1)])]),
    Section("mobile", N_("Mobile number and parallel ringing"), [
        Part("patch_user", "", [
            Field("mobile_number", N_("Mobile number"), "tel",
                  hint=N_("In international form, e.g. +4917012345678; empty: none"))]),
        Part("patch_parallel_ringing", "parallel-ringing", [
            Field("enabled", N_("Parallel ringing: the mobile rings with my phones"))])],
        N_("To take business calls on your mobile: add the mobile number, switch on parallel "
           "ringing and call-back."), state="parallel-ringing"),
    Section("remote-office", N_("Remote office"), [
        Part("patch_user", "", [
            Field("remote_office_number", N_("Remote office number"), "tel")]),
        Part("patch_remote_office", "remote-office", [Field("enabled", N_("On"))])],
        N_("Incoming calls ring only the remote office number, not your phones."),
        state="remote-office"),
    Section("voicemail", N_("Voicemail box"), [
        Part("patch_voicemail", "voicemail", [
            Field("enabled", N_("Calls that end busy, unanswered or unreachable go to the "
                                "voicemail box")),
            Field("max_length", N_("Longest message in seconds"), "number", minimum=5,
                  maximum=600, step=1),
            Field("silence_timeout", N_("Silence that ends a message, in seconds"), "number",
                  minimum=1, maximum=60, step=1)]),
        Part("patch_mwi", "mwi", [
            Field("unsolicited", N_("Message waiting indication also on phones that do not "
                                    "ask for it"))]),
        Part("patch_user", "", [
            Field("voicemail_pin", N_("New voicemail PIN"), "password",
                  hint=N_("4 to 8 digits; empty: unchanged"))])],
        N_("New messages are shown on your phones and here."), state="voicemail"),
    Section("voicemail-mail", N_("Voicemail messages by e-mail"), [
        Part("patch_voicemail_mail", "voicemail-mail", [
            Field("mode", N_("On a new message"), "select", {
                "off": N_("no e-mail"), "notify": N_("e-mail notification (without audio)"),
                "forward": N_("forward the message to the e-mail address"),
                "copy": N_("notification, and a copy of the message to a second address")}),
            Field("address", N_("E-mail address"), "email",
                  hint=N_("Empty: the e-mail address of your account")),
            Field("copy_to", N_("Second e-mail address for the copy"), "email"),
            Field("also_keep", N_("Keep forwarded messages in the voicemail box too"))])]),
)

_BY_ID = {s.id: s for s in SECTIONS}


def _value(f: Field, form: Mapping[str, Any], name: str) -> Any:
    """The form's value of ``f`` as the API takes it (an unparsable number is passed as
    text: the API refuses it with the field named)."""
    raw = form.get(name)
    if f.kind == "checkbox":
        return raw is not None
    text = raw.strip() if isinstance(raw, str) else ""
    if f.kind == "number":
        try:
            number = float(text.replace(",", "."))
        except ValueError:
            return text
        return int(number) if f.step == 1 and number.is_integer() else number
    return text


def _body(part: Part, form: Mapping[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for f in part.fields:
        name = f"{part.feature or 'user'}.{f.key}"
        value = _value(f, form, name)
        if part.operation == "patch_user":
            if f.key == "voicemail_pin" and not value:
                continue  # empty: unchanged
            if f.key in ("mobile_number", "remote_office_number") and not value:
                value = None  # empty: no number
        body[f.key] = value
    return body


async def _values(pr: PortalRequest) -> dict[str, Any]:
    """What the page shows: every setting, the user, the presentable numbers, the greeting."""
    settings = await pr.api("get_all_settings", user="me")
    user = await pr.api("get_user", user="me")
    numbers = await pr.api("list_numbers", query={"limit": "500"})
    own = [n["e164"] for n in numbers["items"] if n.get("user_id") == user["id"]]
    try:
        tenant = await pr.api("get_tenant", tenant=user["tenant_id"])
        if tenant.get("main_number"):
            own.append(tenant["main_number"])
    except PageError:
        pass
    greeting = await pr.api_raw("get_voicemail_greeting", user="me", kind="personal")
    values = {k: dict(v) for k, v in settings.items()}
    values[""] = {"mobile_number": user.get("mobile_number") or "",
                  "remote_office_number": user.get("remote_office_number") or "",
                  "voicemail_pin": ""}
    return {"values": values, "user": user, "numbers": list(dict.fromkeys(own)),
            "has_greeting": greeting.status == 200}


async def page(pr: PortalRequest, *, errors: Mapping[str, str] | None = None,
               status: int = 200, posted: Mapping[str, Any] | None = None) -> web.Response:
    values = await _values(pr)
    if posted:  # show what was sent beside its error, not the stored value
        for feature, entries in posted.items():
            values["values"].setdefault(feature, {}).update(entries)
    return await pr.render("settings.html", status=status, sections=SECTIONS,
                           errors=errors or {}, show=_show, **values)


def _show(value: Any) -> str:
    """A setting's value in a text input (``20.0`` as ``20``)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


async def settings_page(pr: PortalRequest) -> web.StreamResponse:
    if pr.who.user_id is None:  # an administrator's login without a user of their own
        pr.redirect("/portal/admin/")
    return await page(pr)


async def save(pr: PortalRequest) -> web.StreamResponse:
    section = _BY_ID.get(pr.raw.match_info["section"])
    if section is None:
        raise ApiProblem(404, "not_found", "no such settings section")
    form = await pr.form()
    posted: dict[str, dict[str, Any]] = {}
    for part in section.parts:
        body = _body(part, form)
        posted.setdefault(part.feature, {}).update(
            {k: v for k, v in body.items() if k != "voicemail_pin"})
        try:
            if part.operation == "patch_user":
                if body:
                    await pr.api("patch_user", body=body, user="me")
            else:
                await pr.api(part.operation, body=body, user="me")
        except PageError as err:
            message = err.detail or err.code
            return await page(pr, errors={section.id: message}, status=err.status,
                              posted=posted)
    pr.redirect(f"/portal/settings?notice=saved#{section.id}")


def _too_large(pr: PortalRequest) -> str:
    return pr.t("The file is too large (at most 1 MB in the portal).")


async def greeting_upload(pr: PortalRequest) -> web.StreamResponse:
    try:
        form = await pr.form()
    except web.HTTPRequestEntityTooLarge:
        return await page(pr, errors={"greeting": _too_large(pr)}, status=413)
    upload = form.get("file")
    if not isinstance(upload, web.FileField):
        return await page(pr, errors={"greeting": pr.t("Choose an audio file.")}, status=422)
    try:
        # the file's bytes as the operation's body (any format: the API decodes by content)
        await pr.api("put_voicemail_greeting", user="me", kind="personal",
                     data=upload.file.read(), content_type="application/octet-stream")
    except PageError as err:
        return await page(pr, errors={"greeting": err.detail or err.code}, status=err.status)
    pr.redirect("/portal/settings?notice=saved#greeting")


async def greeting_delete(pr: PortalRequest) -> web.StreamResponse:
    await pr.form()
    try:
        await pr.api("delete_voicemail_greeting", user="me", kind="personal")
    except PageError as err:
        if err.status != 404:
            raise
    pr.redirect("/portal/settings?notice=deleted#greeting")


async def greeting_audio(pr: PortalRequest) -> web.StreamResponse:
    response = await pr.api_raw("get_voicemail_greeting", user="me", kind="personal")
    if response.status >= 400:
        raise ApiProblem(404, "not_found", "no greeting of your own")
    return response


def register(portal: Portal) -> None:
    """``/portal/settings`` and its forms."""
    portal.add_nav(NavItem("/portal/settings", N_("Settings")))
    portal.page("GET", "/portal/settings", settings_page)
    portal.page("POST", "/portal/settings/greeting", greeting_upload)
    portal.page("POST", "/portal/settings/greeting/delete", greeting_delete)
    portal.page("GET", "/portal/settings/greeting.wav", greeting_audio)
    portal.page("POST", "/portal/settings/{section}", save)
