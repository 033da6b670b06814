"""The browser softphone in the portal (``/portal/phone``): JsSIP over the PBX's SIP WebSocket
and WebRTC (``static/softphone.js``), registered as the signed-in user without a password
being typed: the page asks ``POST /portal/phone/account`` (the session's cookie and CSRF
header; never cached) for the SIP account of the user's browser phone — a device of kind
``browser`` the API makes on first use (``get_webphone_account``) — and registers with its
digest HA1 and realm. Being a device of the user, it rings together with their other phones.

The page has the dial pad, answer/reject, hang-up, hold, mute, DTMF, blind and attended
transfer (SIP REFER, with Replaces for the attended one), a conference (the API's
``add_conference_participant`` on the call in progress), the call's quality from
``RTCPeerConnection.getStats`` and links to the chat (also during a call). Without JavaScript
it offers the call-back form instead."""

from __future__ import annotations

import hmac

from aiohttp import web

from pbx.api.problems import ApiProblem
from pbx.i18n import N_
from pbx.portal.core import NavItem, Portal, PortalRequest
from pbx.portal.views.directory import PHONES

__all__ = ["ORDER", "register"]

#: The place in the navigation.
ORDER = 62


async def phone(pr: PortalRequest) -> web.StreamResponse:
    dial = "".join(c for c in pr.raw.query.get("dial", "") if c.isdigit() or c in "+*#")[:32]
    return await pr.render("phone.html", dial=dial, phones=PHONES, target=dial)


async def account(pr: PortalRequest) -> web.StreamResponse:
    sent = pr.raw.headers.get("X-CSRF-Token", "")
    if not pr.csrf or not hmac.compare_digest(sent.encode(), pr.csrf.encode()):
        raise ApiProblem(403, "csrf_failed", "send the session's X-CSRF-Token")
    found = await pr.api("get_webphone_account", user="me")
    settings = pr.portal.phone()
    sockets = settings.get("websockets", [])
    return web.json_response(
        {**found, "websockets": sockets if isinstance(sockets, list) else [],
         "voicemail_code": settings.get("voicemail_code", "*86")},
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def register(portal: Portal) -> None:
    """``/portal/phone`` and ``/portal/phone/account`` (the page's SIP account, JSON)."""
    portal.add_nav(NavItem("/portal/phone", N_("Phone")))
    portal.page("GET", "/portal/phone", phone)
    portal.page("POST", "/portal/phone/account", account)
