"""``GET /users/{user}/chats/{other}``: the chat history of two users of a tenant (read only;
the messages themselves arrive over SIP MESSAGE, :mod:`pbx.chat`). The token must see
``user``; ``other`` is any user of the same tenant (404 otherwise: nothing crosses tenants)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from pydantic import BaseModel

from pbx.api.resources.common import USER_PARAM, int_param, not_found, user_of
from pbx.api.routes import ApiRequest, ApiRouter, Route, json_response
from pbx.store.chat import ChatMessage

__all__ = ["ChatMessageOut", "ChatPage", "register"]


class ChatMessageOut(BaseModel):
    """One message of the conversation (``body`` as text; CPIM as sent)."""

    id: int
    message_id: str
    from_user_id: int
    to_user_id: int
    content_type: str
    body: str
    created_at: float
    delivered_at: float | None


class ChatPage(BaseModel):
    """The conversation, oldest first (the newest 200 at most)."""

    items: list[ChatMessageOut]
    total: int


def _out(m: ChatMessage) -> ChatMessageOut:
    return ChatMessageOut(id=m.id, message_id=m.message_id, from_user_id=m.sender_id,
                          to_user_id=m.recipient_id, content_type=m.content_type,
                          body=m.body.decode("utf-8", "replace"), created_at=m.created_at,
                          delivered_at=m.delivered_at)


async def get_conversation(req: ApiRequest) -> web.StreamResponse:
    user = user_of(req)
    other_id = int_param(req, "other")
    other = req.ctx.directory.user_by_id(other_id)
    if other is None or other.tenant_id != user.tenant_id:
        raise not_found(f"user {other_id}")
    messages = await asyncio.to_thread(req.ctx.store.chat_conversation, user.id, other.id)
    return json_response(ChatPage(items=[_out(m) for m in messages], total=len(messages)))


def register(router: ApiRouter) -> None:
    """The routes of this module."""
    router.add(Route("GET", "/users/{user}/chats/{other}", get_conversation,
                     "The chat history of the user with another user of their tenant", "chat",
                     "get_conversation", response=ChatPage,
                     path_params={**USER_PARAM,
                                  "other": {"type": "integer", "minimum": 1,
                                            "description": "the other user's id"}}))
