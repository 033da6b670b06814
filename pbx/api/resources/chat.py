"""``/users/{user}/chats``: the user's conversations (the other party, the newest message, how
many of the other's messages the user has not read), ``/users/{user}/chats/{other}``: the chat
history of two users of a tenant (GET), and a
message sent as ``user`` (POST: through :meth:`pbx.chat.ChatService.send`, as if the user's
phone had sent it — delivered to the other's devices, kept for their next registration when
none is registered); ``POST /users/{user}/chats/{other}/read`` marks it read (``chat.read``).
Every message kept publishes ``chat.message`` (:class:`pbx.chat.ChatService`). The token must
see ``user``; ``other`` is any other user of the same
tenant (404 otherwise: nothing crosses tenants)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from pbx.api.models import Request
from pbx.api.problems import ApiProblem, FieldError
from pbx.api.resources.common import USER_PARAM, int_param, not_found, user_of
from pbx.api.routes import ApiRequest, ApiRouter, Route, json_response
from pbx.chat import ChatRateLimited
from pbx.store import User
from pbx.store.chat import ChatMessage

__all__ = ["ChatMessageOut", "ChatPage", "ChatRead", "ChatSend", "ChatSent", "Conversation",
           "ConversationPage", "register"]

#: The largest message body the API sends (the SIP side's default ``[chat] max_size``).
MAX_TEXT = 8192


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


class ChatSend(Request):
    """A message to send as the user: ``text`` (UTF-8, at most 8192 bytes), plain text or a
    CPIM body. Required (the model lets it be missing only so that the users are looked up
    first: 404 before 422)."""

    model_config = ConfigDict(extra="forbid", strict=True,
                              json_schema_extra={"required": ["text"]})

    text: Annotated[str, Field(min_length=1, max_length=MAX_TEXT)] | None = None
    content_type: Literal["text/plain", "message/cpim"] = "text/plain"


class ChatSent(ChatMessageOut):
    """The message as stored; ``online``: a device of the other user was registered (it is
    being delivered; otherwise their next registration delivers it)."""

    online: bool


class ChatParty(BaseModel):
    """The other user of a conversation."""

    id: int
    extension: str
    name: str


class Conversation(BaseModel):
    """A conversation of the user: with whom, the newest message, and ``unread``: how many of
    the other's messages came after what the user marked read."""

    other: ChatParty
    last_message: ChatMessageOut
    unread: int


class ConversationPage(BaseModel):
    """The user's conversations, the newest first; ``unread``: their sum."""

    items: list[Conversation]
    total: int
    unread: int


class ChatReadMark(Request):
    """Read up to message ``up_to`` (an id of the conversation; missing: all of it)."""

    up_to: Annotated[int, Field(ge=0)] | None = None


class ChatRead(BaseModel):
    """The conversation is read up to ``last_read_id``; ``unread``: what is left in all the
    user's conversations."""

    other_id: int
    last_read_id: int
    unread: int


def _out(m: ChatMessage) -> ChatMessageOut:
    return ChatMessageOut(id=m.id, message_id=m.message_id, from_user_id=m.sender_id,
                          to_user_id=m.recipient_id, content_type=m.content_type,
                          body=m.body.decode("utf-8", "replace"), created_at=m.created_at,
                          delivered_at=m.delivered_at)


def _parties(req: ApiRequest) -> tuple[User, User]:
    user = user_of(req)
    other_id = int_param(req, "other")
    other = req.ctx.directory.user_by_id(other_id)
    if other is None or other.tenant_id != user.tenant_id:
        raise not_found(f"user {other_id}")
    return user, other


async def get_conversation(req: ApiRequest) -> web.StreamResponse:
    user, other = _parties(req)
    messages = await asyncio.to_thread(req.ctx.store.chat_conversation, user.id, other.id)
    return json_response(ChatPage(items=[_out(m) for m in messages], total=len(messages)))


async def list_conversations(req: ApiRequest) -> web.StreamResponse:
    user = user_of(req)
    found = await asyncio.to_thread(req.ctx.store.chat_conversations, user.id)
    items = []
    for other_id, last, unread in found:
        other = req.ctx.directory.user_by_id(other_id)
        if other is None or other.tenant_id != user.tenant_id:
            continue
        items.append(Conversation(other=ChatParty(id=other.id, extension=other.extension,
                                                  name=other.name),
                                  last_message=_out(last), unread=unread))
    return json_response(ConversationPage(items=items, total=len(items),
                                          unread=sum(c.unread for c in items)))


async def mark_read(req: ApiRequest) -> web.StreamResponse:
    user, other = _parties(req)
    body = req.body_as(ChatReadMark)
    store = req.ctx.store
    last, moved = await asyncio.to_thread(store.chat_mark_read, user.id, other.id, body.up_to)
    unread = await asyncio.to_thread(store.chat_unread, user.id)
    if moved:  # only a change is an event (a page that marks read on every refresh: no loop)
        req.ctx.bus.publish("chat.read", {"user_id": user.id, "other_id": other.id,
                                          "last_read_id": last, "unread": unread})
    return json_response(ChatRead(other_id=other.id, last_read_id=last, unread=unread))


async def send_message(req: ApiRequest) -> web.StreamResponse:
    user, other = _parties(req)
    body = req.body_as(ChatSend)
    if other.id == user.id:
        raise ApiProblem(422, "validation_failed", "a chat is with another user",
                         field="/other")
    if body.text is None or not body.text.strip():
        raise ApiProblem(422, "validation_failed", "send the message's text", field="/text",
                         errors=[FieldError(field="/text", code="missing",
                                            message="the text to send (not only blanks)")])
    data = body.text.encode()
    if len(data) > MAX_TEXT:
        raise ApiProblem(422, "validation_failed", f"at most {MAX_TEXT} bytes (UTF-8)",
                         field="/text",
                         errors=[FieldError(field="/text", code="too_long",
                                            message=f"{len(data)} bytes")])
    send = req.ctx.chat_send
    try:
        if send is None:
            raise RuntimeError("no chat here")
        stored, online = await send(user, other, data, body.content_type)
    except ChatRateLimited as exc:
        raise ApiProblem(429, "rate_limited", str(exc),
                         headers={"Retry-After": str(exc.retry_after)}) from exc
    except RuntimeError as exc:
        raise ApiProblem(503, "unavailable", "calls are not running (yet)") from exc
    return json_response(ChatSent(**_out(stored).model_dump(), online=online), 201)


def register(router: ApiRouter) -> None:
    """The routes of this module."""
    router.add(Route("GET", "/users/{user}/chats", list_conversations,
                     "The user's chat conversations (newest first, with unread counts)",
                     "chat", "list_conversations", response=ConversationPage,
                     path_params=USER_PARAM))
    router.add(Route("POST", "/users/{user}/chats/{other}/read", mark_read,
                     "Mark a conversation read (up to a message, or all of it)", "chat",
                     "mark_chat_read", body=ChatReadMark, response=ChatRead,
                     path_params={**USER_PARAM,
                                  "other": {"type": "integer", "minimum": 1,
                                            "description": "the other user's id"}}))
    router.add(Route("GET", "/users/{user}/chats/{other}", get_conversation,
                     "The chat history of the user with another user of their tenant", "chat",
                     "get_conversation", response=ChatPage,
                     path_params={**USER_PARAM,
                                  "other": {"type": "integer", "minimum": 1,
                                            "description": "the other user's id"}}))
    router.add(Route("POST", "/users/{user}/chats/{other}", send_message,
                     "Send a chat message as the user to another user of their tenant",
                     "chat", "send_chat_message", body=ChatSend, response=ChatSent,
                     status=201, errors=(503,),
                     path_params={**USER_PARAM,
                                  "other": {"type": "integer", "minimum": 1,
                                            "description": "the other user's id"}},
                     description="As if the user's phone had sent a SIP MESSAGE: kept in the "
                                 "history and delivered to every registered device of the "
                                 "other user (at their next registration when none is)."))
