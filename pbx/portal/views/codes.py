"""The feature codes in force (``/portal/codes``): each code, its alternate, the digits-only form
integrated mobiles dial (``788`` for ``*``, ``789`` for ``#``) and what it does, in the user's
language. The table is the API's (``list_feature_codes``: the administrator's changes laid over
the defaults; codes not implemented yet are left out); the codes typed during a call
(``list_incall_codes``) are listed apart."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pbx.i18n import N_
from pbx.portal.core import NavItem, Portal, PortalRequest

__all__ = ["ARGUMENTS", "DESCRIPTIONS", "ORDER", "register"]

#: The place in the navigation.
ORDER = 63

#: What each code does (by its key in the table: feature.action), in the portal's words.
DESCRIPTIONS: dict[str, str] = {
    "forward_immediate.on":
        N_("Forward all calls: on (dial the code and the target number)"),
    "forward_immediate.off":
        N_("Forward all calls: off"),
    "forward_immediate.voicemail_on":
        N_("Forward all calls to the voicemail box: on"),
    "forward_immediate.voicemail_off":
        N_("Forward all calls to the voicemail box: off"),
    "forward_immediate.query":
        N_("Announce whether all calls are forwarded"),
    "forward_busy.on":
        N_("Forward when busy: on (dial the code and the target number)"),
    "forward_busy.off":
        N_("Forward when busy: off"),
    "forward_busy.voicemail_on":
        N_("Forward to the voicemail box when busy: on"),
    "forward_busy.voicemail_off":
        N_("Forward to the voicemail box when busy: off"),
    "forward_busy.query":
        N_("Announce whether calls are forwarded when busy"),
    "forward_no_answer.on":
        N_("Forward on no answer: on (dial the code and the target number)"),
    "forward_no_answer.off":
        N_("Forward on no answer: off"),
    "forward_no_answer.voicemail_on":
        N_("Forward to the voicemail box on no answer: on"),
    "forward_no_answer.voicemail_off":
        N_("Forward to the voicemail box on no answer: off"),
    "forward_no_answer.rings":
        N_("Rings before forwarding on no answer (1 to 20)"),
    "forward_no_answer.query":
        N_("Announce whether calls are forwarded on no answer"),
    "forward_unreachable.on":
        N_("Forward when unreachable: on (dial the code and the target number)"),
    "forward_unreachable.off":
        N_("Forward when unreachable: off"),
    "forward_unreachable.query":
        N_("Announce whether calls are forwarded when unreachable"),
    "call_waiting.on":
        N_("Call waiting: on"),
    "call_waiting.off":
        N_("Call waiting: off"),
    "call_waiting.off_this_call":
        N_("Call a number without call waiting for this call"),
    "anonymous_rejection.on":
        N_("Reject anonymous callers: on"),
    "anonymous_rejection.off":
        N_("Reject anonymous callers: off"),
    "dnd.on":
        N_("Do not disturb: on"),
    "dnd.off":
        N_("Do not disturb: off"),
    "parallel_ringing.on":
        N_("Parallel ringing on the mobile number: on"),
    "parallel_ringing.off":
        N_("Parallel ringing on the mobile number: off"),
    "clir.on":
        N_("Suppress your own number permanently: on"),
    "clir.off":
        N_("Suppress your own number permanently: off"),
    "clir.this_call":
        N_("Call a number with your own number suppressed"),
    "clir.show_this_call":
        N_("Call a number showing your own number"),
    "voicemail.listen":
        N_("Listen to your voicemail messages"),
    "voicemail.portal":
        N_("Voice portal: any voicemail box with its number and PIN"),
    "voicemail.transfer":
        N_("Transfer the caller into a colleague's voicemail box"),
    "mwi.clear":
        N_("Switch off the message waiting lamp (until the box changes)"),
    "pickup.group":
        N_("Pick up a call ringing in your pickup group"),
    "pickup.directed":
        N_("Pick up a call ringing at an extension"),
    "pickup.barge_in":
        N_("Pick up a call at an extension with barge-in"),
    "call_pull.pull":
        N_("Take over your call in progress from another of your phones"),
    "hunt_busy.on":
        N_("Mark yourself busy for hunt groups and queues"),
    "hunt_busy.off":
        N_("Clear busy for hunt groups and queues"),
    "queue_agent.sign_in":
        N_("Sign in to a queue as agent"),
    "queue_agent.sign_out":
        N_("Sign out of a queue"),
    "queue_agent.available":
        N_("Agent status: available"),
    "queue_agent.unavailable":
        N_("Agent status: unavailable"),
    "queue_agent.wrap_up":
        N_("Agent status: wrap-up"),
    "incall.blind_transfer":
        N_("Blind transfer: the other party is connected to the number, you drop out"),
    "incall.attended_transfer":
        N_("Consultation call: call the number while the other party holds; dial the code again or hang up to transfer"),
    "incall.conference_add":
        N_("Add the number to the call (conference)"),
    "incall.toggle_hold":
        N_("Put the other party on hold, or take them back"),
    "incall.voicemail_transfer":
        N_("Transfer the other party into an extension's voicemail box; you drop out"),
}

#: What follows a code that takes an argument (the API's ``argument``).
ARGUMENTS = {"number": N_("number"), "extension": N_("extension"), "rings": N_("rings"),
             "queue": N_("queue")}


def _row(pr: PortalRequest, row: dict[str, Any]) -> dict[str, Any]:
    text = DESCRIPTIONS.get(row["key"])
    argument = str(row.get("argument") or "")
    return {**row, "text": pr.t(text) if text else row["description"],
            "argument_text": pr.t(ARGUMENTS[argument]) if argument in ARGUMENTS else argument}


def _order(row: dict[str, Any]) -> tuple[int, str]:
    """The table's own order (features together, on before off), unknown keys last."""
    keys = list(DESCRIPTIONS)
    return (keys.index(row["key"]) if row["key"] in DESCRIPTIONS else len(keys), row["key"])


async def codes(pr: PortalRequest) -> web.StreamResponse:
    page = await pr.api("list_feature_codes", query={"limit": "500"})
    switch = sorted((_row(pr, r) for r in page["items"] if r.get("implemented", True)),
                    key=_order)
    in_call = await pr.api("list_incall_codes")
    rows = sorted((_row(pr, {**r, "alternate": "", "mobile": ""}) for r in in_call["items"]),
                  key=_order)
    return await pr.render("codes.html", switch=switch, in_call=rows)


def register(portal: Portal) -> None:
    """``/portal/codes``."""
    portal.add_nav(NavItem("/portal/codes", N_("Feature codes")))
    portal.page("GET", "/portal/codes", codes)
