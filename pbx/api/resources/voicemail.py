"""``/users/{user}/voicemail/messages``: a user's voicemail box — the messages (list, metadata), a
message's recording (WAV), marking it heard or new again, deleting it.

Every change goes through the store methods the phone menu uses
(:meth:`~pbx.store.voicemail.VoicemailStoreMixin.mark_voicemail_heard`,
:meth:`~pbx.store.voicemail.VoicemailStoreMixin.delete_voicemail`) and is then published as
``voicemail.changed`` with the box's counts (:func:`pbx.voicemail.publish_counts`), so the
message waiting lamps follow. The audio is read from the path the message's row names: the
``{message}`` parameter only selects a row of that user's box (a uuid4 hex id, 404 for anything
else) and never reaches the filesystem.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from types import SimpleNamespace

from aiohttp import web
from pydantic import BaseModel, ConfigDict, StrictBool

from pbx.api.models import Request
from pbx.api.problems import ApiProblem, FieldError
from pbx.api.resources.common import USER_PARAM, not_found, user_of
from pbx.api.routes import ApiRequest, ApiRouter, Route, json_response
from pbx.store import User
from pbx.store.voicemail import VoicemailMessage
from pbx.voicemail import publish_counts

__all__ = ["VoicemailOut", "VoicemailPage", "VoicemailPatch", "register"]

#: A message id: the uuid4 hex the deposit gives it.
_ID = re.compile(r"^[0-9a-f]{32}$")
#: The largest recording served (a box's limit is minutes of 8 kHz audio).
MAX_AUDIO = 64 * 1024 * 1024

MESSAGE_PARAM = {"message": {"type": "string", "pattern": "^[0-9a-f]{32}$",
                             "description": "a message id (from the list)"}}


class VoicemailOut(BaseModel):
    """One message of the box (``received_at``: POSIX seconds; ``duration``: seconds)."""

    id: str
    user_id: int
    caller: str
    caller_name: str
    received_at: float
    duration: float
    new: bool
    urgent: bool
    language: str


class VoicemailPage(BaseModel):
    """The box's messages, oldest first, and its counts."""

    items: list[VoicemailOut]
    total: int
    new: int
    old: int


class VoicemailPatch(Request):
    """``heard: true`` saves a new message (as listening to it on the phone does); ``false``
    makes a saved message new again. Required (the model lets it be missing only so that the
    message is looked up first: 404 before 422)."""

    model_config = ConfigDict(extra="forbid", strict=True,
                              json_schema_extra={"required": ["heard"]})

    heard: StrictBool | None = None


def _out(m: VoicemailMessage) -> VoicemailOut:
    return VoicemailOut(id=m.id, user_id=m.user_id, caller=m.caller, caller_name=m.caller_name,
                        received_at=m.received_at, duration=m.duration, new=m.state == "new",
                        urgent=m.urgent, language=m.language)


async def _message_of(req: ApiRequest, user: User) -> VoicemailMessage:
    """The message the path names, 404 unless it is a message (new or saved) of ``user``'s
    box."""
    text = req.path("message")
    if not _ID.match(text):
        raise not_found(f"voicemail {text[:40]}")
    message = await asyncio.to_thread(req.ctx.store.voicemail, text)
    if message is None or message.user_id != user.id or message.state not in ("new", "old"):
        raise not_found(f"voicemail {text}")
    return message


async def _publish(req: ApiRequest, user: User) -> None:
    """``voicemail.changed`` with the box's counts (read in a worker thread; published on the
    event loop, where the bus lives)."""
    counts = await asyncio.to_thread(req.ctx.store.voicemail_counts, user.id)
    tenant = req.ctx.directory.tenant(user.tenant_id)
    read = SimpleNamespace(voicemail_counts=lambda _user_id: counts)
    publish_counts(read, req.ctx.bus, user.id, tenant.name if tenant is not None else "",
                   user.extension)


async def list_voicemail(req: ApiRequest) -> web.StreamResponse:
    user = user_of(req)
    messages = await asyncio.to_thread(req.ctx.store.voicemails, user.id)
    items = [_out(m) for m in messages]
    return json_response(VoicemailPage(items=items, total=len(items),
                                       new=sum(1 for i in items if i.new),
                                       old=sum(1 for i in items if not i.new)))


async def get_voicemail(req: ApiRequest) -> web.StreamResponse:
    user = user_of(req)
    return json_response(_out(await _message_of(req, user)))


def _read_audio(path: str) -> bytes | None:
    file = Path(path)
    try:
        if file.stat().st_size > MAX_AUDIO:
            return None
        return file.read_bytes()
    except OSError:
        return None


async def get_voicemail_audio(req: ApiRequest) -> web.StreamResponse:
    user = user_of(req)
    message = await _message_of(req, user)
    data = await asyncio.to_thread(_read_audio, message.audio_path)
    if data is None:
        raise not_found(f"recording of voicemail {message.id}")
    return web.Response(body=data, content_type="audio/wav", headers={
        "Cache-Control": "no-store",
        "Content-Disposition": f'attachment; filename="{message.id}.wav"'})


async def patch_voicemail(req: ApiRequest) -> web.StreamResponse:
    user = user_of(req)
    message = await _message_of(req, user)
    heard = req.body_as(VoicemailPatch).heard
    if heard is None:
        raise ApiProblem(422, "validation_failed", "send heard: true or false", field="/heard",
                         errors=[FieldError(field="/heard", code="missing",
                                            message="true: saved, false: new again")])
    store = req.ctx.store
    change = store.mark_voicemail_heard if heard else store.mark_voicemail_unheard
    if await asyncio.to_thread(change, message.id):
        await _publish(req, user)
    current = await asyncio.to_thread(store.voicemail, message.id)
    if current is None:  # deleted meanwhile
        raise not_found(f"voicemail {message.id}")
    return json_response(_out(current))


async def delete_voicemail(req: ApiRequest) -> web.StreamResponse:
    user = user_of(req)
    message = await _message_of(req, user)
    await asyncio.to_thread(req.ctx.store.delete_voicemail, message.id)
    await _publish(req, user)
    return web.Response(status=204)


def register(router: ApiRouter) -> None:
    """The routes of this module."""
    both = {**USER_PARAM, **MESSAGE_PARAM}
    box, one = "/users/{user}/voicemail/messages", "/users/{user}/voicemail/messages/{message}"
    router.add(Route("GET", box, list_voicemail, "The messages of the user's voicemail box",
                     "voicemail", "list_voicemail_messages", response=VoicemailPage,
                     path_params=USER_PARAM,
                     description="The box's settings are GET /users/{user}/voicemail."))
    router.add(Route("GET", one, get_voicemail, "One voicemail message", "voicemail",
                     "get_voicemail_message", response=VoicemailOut, path_params=both))
    router.add(Route("GET", one + "/audio", get_voicemail_audio,
                     "A voicemail message's recording", "voicemail", "get_voicemail_audio",
                     content={"audio/wav": "the recording (WAV, 16-bit PCM mono)"},
                     path_params=both))
    router.add(Route("PATCH", one, patch_voicemail,
                     "Mark a message heard (saved) or new again", "voicemail",
                     "patch_voicemail_message", body=VoicemailPatch, response=VoicemailOut,
                     path_params=both,
                     description="Publishes voicemail.changed (the message waiting lamps "
                                 "follow)."))
    router.add(Route("DELETE", one, delete_voicemail, "Delete a message and its recording",
                     "voicemail", "delete_voicemail_message",
                     status=204, path_params=both,
                     description="Publishes voicemail.changed (the message waiting lamps "
                                 "follow)."))
