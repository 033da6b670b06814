"""The voicemail box (FEATURES.md §3, "Sprachbox"): the messages with new/heard, played in the
browser (an ``<audio>`` element whose source is this portal's route streaming the API's
recording of the signed-in user's message), downloaded, marked heard or new again, deleted.
The navigation's badge is the count of new messages (``portal.badges["voicemail"]``); it and
the list follow ``voicemail.changed`` live.
"""

from __future__ import annotations

import re

from aiohttp import web

from pbx.api.problems import ApiProblem
from pbx.i18n import N_
from pbx.portal.core import NavItem, PageError, Portal, PortalRequest

__all__ = ["ORDER", "new_messages", "register"]

#: The place in the navigation.
ORDER = 40

_ID = re.compile(r"^[0-9a-f]{32}$")


async def new_messages(pr: PortalRequest) -> int:
    """The badge: how many new messages the signed-in user's box holds."""
    if pr.who.user_id is None:
        return 0
    box = await pr.api("list_voicemail_messages", user="me")
    return int(box.get("new", 0))


def _message(pr: PortalRequest) -> str:
    mid = pr.raw.match_info["message"]
    if not _ID.match(mid):
        raise ApiProblem(404, "not_found", "no such message")
    return mid


async def voicemail_page(pr: PortalRequest) -> web.StreamResponse:
    if pr.who.user_id is None:  # an administrator's login without a user of their own
        pr.redirect("/portal/admin/")
    box = await pr.api("list_voicemail_messages", user="me")
    messages = sorted(box["items"], key=lambda m: m["received_at"], reverse=True)
    return await pr.render("voicemail.html", messages=messages, new=box["new"],
                           old=box["old"])


async def audio(pr: PortalRequest) -> web.StreamResponse:
    """The recording (the API's own response: audio/wav, or its problem)."""
    response = await pr.api_raw("get_voicemail_audio", user="me", message=_message(pr))
    if pr.raw.query.get("download") != "1" and response.status == 200:
        response.headers["Content-Disposition"] = "inline"
    return response


async def mark(pr: PortalRequest) -> web.StreamResponse:
    form = await pr.form()
    heard = form.get("heard") == "true"
    try:
        await pr.api("patch_voicemail_message", user="me", message=_message(pr),
                     body={"heard": heard})
    except PageError as err:
        if err.status != 404:
            raise
    pr.redirect("/portal/voicemail", notice="saved")


async def delete(pr: PortalRequest) -> web.StreamResponse:
    await pr.form()
    try:
        await pr.api("delete_voicemail_message", user="me", message=_message(pr))
    except PageError as err:
        if err.status != 404:  # gone already: what was asked for is done
            raise
    pr.redirect("/portal/voicemail", notice="deleted")


def register(portal: Portal) -> None:
    """``/portal/voicemail``, its forms and audio, and the badge of new messages."""
    portal.add_nav(NavItem("/portal/voicemail", N_("Voicemail"), badge="voicemail"))
    portal.badges["voicemail"] = new_messages
    portal.page("GET", "/portal/voicemail", voicemail_page)
    portal.page("GET", "/portal/voicemail/{message}/audio", audio)
    portal.page("POST", "/portal/voicemail/{message}/heard", mark)
    portal.page("POST", "/portal/voicemail/{message}/delete", delete)
