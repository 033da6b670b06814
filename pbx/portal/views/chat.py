"""Chat with colleagues (``/portal/chat``): the user's conversations with their unread counts,
and a conversation's page with its messages and a send form. Without JavaScript the form posts
and the page comes back; with it (``static/chat.js``) the message goes to the API and the list
of messages refreshes live on ``chat.message`` (published for messages from SIP phones too).
The navigation's badge counts the unread messages (live on ``chat.*``). Opening a
conversation marks it read."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pbx.i18n import N_
from pbx.portal.core import NavItem, PageError, Portal, PortalRequest

__all__ = ["ORDER", "register"]

#: The place in the navigation.
ORDER = 60


def _shown(message: dict[str, Any]) -> dict[str, Any]:
    """A message as the page shows it: a CPIM wrapper (RFC 3862: its headers, a blank line,
    the content's MIME headers, a blank line, the content) shows its content only."""
    body = str(message.get("body", ""))
    if message.get("content_type") == "message/cpim":
        parts = body.replace("\r\n", "\n").split("\n\n", 2)
        body = parts[2] if len(parts) == 3 else parts[-1]
    return {**message, "body": body.strip()}


async def _colleagues(pr: PortalRequest) -> list[dict[str, Any]]:
    page = await pr.api("list_directory", query={"limit": "500"})
    return [u for u in page["items"] if u["id"] != pr.me.get("id")]


async def chats(pr: PortalRequest) -> web.StreamResponse:
    wanted = pr.raw.query.get("with", "")
    if wanted.isdigit():
        pr.redirect(f"/portal/chat/{int(wanted)}")
    page = await pr.api("list_conversations", user="me")
    conversations = [{**c, "last_message": _shown(c["last_message"])} for c in page["items"]]
    return await pr.render("chat.html", conversations=conversations,
                           colleagues=await _colleagues(pr))


async def _other(pr: PortalRequest) -> dict[str, Any]:
    text = pr.raw.match_info["other"]
    found = next((u for u in await _colleagues(pr) if str(u["id"]) == text), None)
    if found is None:
        raise PageError(404, {"code": "not_found", "detail": f"no colleague {text}"})
    return found


async def _show(pr: PortalRequest, other: dict[str, Any], *, status: int = 200,
                error: str = "", text: str = "") -> web.Response:
    messages = await pr.api("get_conversation", user="me", other=other["id"])
    if messages["items"]:
        await pr.api("mark_chat_read", user="me", other=other["id"], body={})
    return await pr.render("chat_conversation.html", status=status, other=other,
                           messages=[_shown(m) for m in messages["items"]], error=error,
                           text=text)


async def conversation(pr: PortalRequest) -> web.StreamResponse:
    return await _show(pr, await _other(pr))


async def send(pr: PortalRequest) -> web.StreamResponse:
    other = await _other(pr)
    form = await pr.form()
    text = str(form.get("text", "") or "")
    try:
        await pr.api("send_chat_message", user="me", other=other["id"], body={"text": text})
    except PageError as err:
        message = (N_("Too many messages: wait a moment.") if err.status == 429
                   else N_("Write a message first (at most 8192 bytes)."))
        return await _show(pr, other, status=err.status, error=pr.t(message), text=text)
    pr.redirect(f"/portal/chat/{other['id']}#compose")


async def unread(pr: PortalRequest) -> int:
    page = await pr.api("list_conversations", user="me")
    return int(page["unread"])


def register(portal: Portal) -> None:
    """``/portal/chat`` and ``/portal/chat/{other}`` (GET, POST sends)."""
    portal.add_nav(NavItem("/portal/chat", N_("Chat"), badge="chat"))
    portal.badges["chat"] = unread
    portal.page("GET", "/portal/chat", chats)
    portal.page("GET", r"/portal/chat/{other:\d+}", conversation)
    portal.page("POST", r"/portal/chat/{other:\d+}", send)
