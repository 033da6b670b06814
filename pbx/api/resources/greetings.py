"""``/users/{user}/voicemail/greetings/{kind}``: the user's own voicemail greeting — upload it
in any common audio format (WAV, MP3, Ogg/Opus, FLAC, M4A …), hear it back, or delete it so
callers hear the default greeting again ("the person at <number> is not available …").

An upload is decoded with PyAV to what the box plays: 16-bit PCM mono at
:data:`GREETING_RATE` (the player resamples it for each leg), at most
:data:`~pbx.voicemail.menu.GREETING_MAX` seconds, written to a temporary name, fsync'd and
renamed to the file the deposit plays (``greeting.wav`` in the box, the same file the phone
menu's "record greeting" writes) — a caller never hears half a greeting. The body is the audio
itself (any ``audio/*`` or ``application/octet-stream``), or a ``multipart/form-data`` form
with the audio in the field ``file`` (what a browser form sends). ``kind`` is ``personal``,
the one greeting the box plays; the path leaves room for more.
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

from aiohttp import web
from pydantic import BaseModel

from pbx.api.problems import ApiProblem
from pbx.api.resources.common import USER_PARAM, not_found, user_of
from pbx.api.routes import ApiRequest, ApiRouter, Route, json_response
from pbx.audiofile import AudioRefused, decode_to_wav, write_atomically
from pbx.store import User
from pbx.voicemail import Boxes
from pbx.voicemail.menu import GREETING_MAX

__all__ = ["GREETING_KINDS", "GREETING_RATE", "MAX_UPLOAD", "GreetingOut", "decode_greeting",
           "register"]

#: The greetings a box has (path name → file in the box directory).
GREETING_KINDS = {"personal": "greeting.wav"}
#: The sample rate a greeting is stored at (wideband: a G.722 or Opus leg hears it well).
GREETING_RATE = 16000
#: The largest upload read (bytes).
MAX_UPLOAD = 8 * 1024 * 1024

_FILE = {"type": "string", "format": "binary", "description": "the audio file"}
KIND_PARAM = {"kind": {"type": "string", "enum": sorted(GREETING_KINDS),
                       "description": "personal: the greeting callers hear before the beep"}}


class GreetingOut(BaseModel):
    """A stored greeting: its kind and length in seconds."""

    kind: str
    duration: float


def decode_greeting(data: bytes, rate: int = GREETING_RATE,
                    limit: float = GREETING_MAX) -> bytes:
    """``data`` (an audio file of any format PyAV reads) as a mono 16-bit WAV at ``rate``;
    422 when it is no audio, empty or longer than ``limit`` seconds."""
    try:
        return decode_to_wav(data, rate=rate, max_seconds=limit, what="a greeting",
                             min_seconds=0.0)[0]
    except AudioRefused as exc:
        raise ApiProblem(422, "invalid_audio", str(exc)) from None


def _greeting_path(req: ApiRequest, user: User) -> Path:
    kind = req.path("kind")
    name = GREETING_KINDS.get(kind)
    if name is None:
        raise not_found(f"greeting {kind[:40]}")
    tenant = req.ctx.directory.tenant(user.tenant_id)
    box = Boxes(req.ctx.store.data_dir).box(tenant.name if tenant else "default",
                                            user.extension)
    return box / name


def _seconds(path: Path) -> float | None:
    try:
        with wave.open(str(path), "rb") as w:
            return round(w.getnframes() / float(w.getframerate()), 3)
    except (OSError, EOFError, wave.Error):
        return None


async def _upload(request: web.Request) -> bytes:
    """The audio of the request: its body, or the ``file`` field of a multipart form."""
    if request.content_type == "multipart/form-data":
        try:
            form = await request.post()  # a page that checked its CSRF token read it already
        except ValueError as exc:  # no boundary, a broken part: aiohttp's own ValueError
            raise ApiProblem(400, "malformed_body", f"the multipart body does not parse: {exc}"
                             ) from None
        field = form.get("file")
        if not isinstance(field, web.FileField):
            raise ApiProblem(422, "validation_failed", "send the audio in the field file",
                             field="/file")
        data = field.file.read(MAX_UPLOAD + 1)
    else:
        if request.content_type.split("/")[0] not in ("audio", "video") and \
                request.content_type != "application/octet-stream":
            raise ApiProblem(415, "unsupported_media_type",
                             "send the audio file as the body (audio/*)")
        if request.content_length is not None and request.content_length > MAX_UPLOAD:
            raise ApiProblem(413, "body_too_large",
                             f"a greeting file may have at most {MAX_UPLOAD} bytes")
        parts: list[bytes] = []
        size = 0
        while size <= MAX_UPLOAD and (chunk := await request.content.read(65536)):
            parts.append(chunk)
            size += len(chunk)
        data = b"".join(parts)
    if len(data) > MAX_UPLOAD:
        raise ApiProblem(413, "body_too_large",
                         f"a greeting file may have at most {MAX_UPLOAD} bytes")
    if not data:
        raise ApiProblem(422, "invalid_audio", "the file is empty")
    return data


async def put_greeting(req: ApiRequest) -> web.StreamResponse:
    user = user_of(req)
    path = _greeting_path(req, user)
    data = await _upload(req.raw)
    wav = await asyncio.to_thread(decode_greeting, data)
    await asyncio.to_thread(write_atomically, path, wav)
    seconds = await asyncio.to_thread(_seconds, path)
    return json_response(GreetingOut(kind=req.path("kind"), duration=seconds or 0.0))


async def get_greeting(req: ApiRequest) -> web.StreamResponse:
    user = user_of(req)
    path = _greeting_path(req, user)
    try:
        data = await asyncio.to_thread(path.read_bytes)
    except OSError:
        raise not_found(f"{req.path('kind')} greeting (callers hear the default one)") \
            from None
    return web.Response(body=data, content_type="audio/wav", headers={
        "Cache-Control": "no-store",
        "Content-Disposition": f'inline; filename="greeting-{req.path("kind")}.wav"'})


async def delete_greeting(req: ApiRequest) -> web.StreamResponse:
    user = user_of(req)
    path = _greeting_path(req, user)
    try:
        await asyncio.to_thread(path.unlink)
    except FileNotFoundError:
        raise not_found(f"{req.path('kind')} greeting") from None
    return web.Response(status=204)


def register(router: ApiRouter) -> None:
    """The routes of this module."""
    params = {**USER_PARAM, **KIND_PARAM}
    path = "/users/{user}/voicemail/greetings/{kind}"
    router.add(Route("PUT", path, put_greeting, "Upload the voicemail greeting", "voicemail",
                     "put_voicemail_greeting", response=GreetingOut, path_params=params,
                     errors=(400, 413, 415, 422),
                     request_content={"audio/*": _FILE, "application/octet-stream": _FILE,
                                      "multipart/form-data": {
                                          "type": "object", "required": ["file"],
                                          "properties": {"file": _FILE}}},
                     description="The body is the audio file itself (audio/* or "
                                 "application/octet-stream: WAV, MP3, Ogg/Opus, FLAC, M4A …) "
                                 "or a multipart/form-data form with the file in the field "
                                 f"file; at most {MAX_UPLOAD} bytes and {GREETING_MAX:g} s. "
                                 "It is decoded to 16 kHz mono PCM and replaces the greeting "
                                 "callers hear (also one recorded from the phone menu)."))
    router.add(Route("GET", path, get_greeting, "The voicemail greeting (WAV)", "voicemail",
                     "get_voicemail_greeting", path_params=params,
                     content={"audio/wav": "the greeting as stored (16-bit PCM mono)"},
                     description="404 while callers hear the default greeting."))
    router.add(Route("DELETE", path, delete_greeting,
                     "Delete the voicemail greeting (callers hear the default one)",
                     "voicemail", "delete_voicemail_greeting", status=204,
                     path_params=params))
