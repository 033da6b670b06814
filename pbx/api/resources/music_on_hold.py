"""``/tenants/{tenant}/music-on-hold``: what a tenant's callers hear on hold (changed by tenant
admins of that tenant and system admins; read by anyone of the tenant). ``PUT`` takes the audio file itself as the body
(any common format: ``audio/*`` or ``application/octet-stream``, at most 20 MB, at most 10
minutes), decodes it with PyAV and makes it the tenant's music from the next hold on
(:mod:`pbx.moh`); ``GET`` tells the state; ``DELETE`` goes back to the server's default."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web
from pydantic import BaseModel

from pbx.api.auth import Role
from pbx.api.problems import ApiProblem
from pbx.api.resources.common import int_param, tenant_of
from pbx.api.routes import ApiRequest, ApiRouter, Route, json_response
from pbx.moh import MAX_SECONDS, MAX_UPLOAD, AudioRefused, MohState, MusicOnHold

__all__ = ["register"]

#: Media types an upload may carry (the content decides; these only keep forms and JSON out).
AUDIO_TYPES = ("application/octet-stream", "application/ogg", "video/mp4", "video/webm")


class MusicOnHoldOut(BaseModel):
    """A tenant's music on hold: ``custom`` (its own upload: its length in seconds, size in
    bytes of the stored 16 kHz WAV, when it was uploaded) or the server's ``default``
    (``file``: the configured one, ``tone``: the built-in melody)."""

    tenant_id: int
    custom: bool
    duration: float
    size: int
    updated_at: float | None
    default: str


def moh_of(req: ApiRequest) -> MusicOnHold:
    """The server's music-on-hold files (the store's data directory's when none is given)."""
    if req.ctx.moh is None:
        req.ctx.moh = MusicOnHold(Path(req.ctx.store.data_dir) / "moh")
    return req.ctx.moh


def _out(s: MohState) -> MusicOnHoldOut:
    return MusicOnHoldOut(tenant_id=s.tenant_id, custom=s.custom, duration=s.duration,
                          size=s.size, updated_at=s.updated_at, default=s.default)


def _tenant(req: ApiRequest) -> int:
    return tenant_of(req, int_param(req, "tenant")).id


async def _read_body(req: ApiRequest) -> bytes:
    raw = req.raw
    media = raw.content_type or ""
    if not (media.startswith("audio/") or media in AUDIO_TYPES):
        raise ApiProblem(415, "unsupported_media_type",
                         f"send the audio file itself as the body (audio/*), not {media}")
    length = raw.content_length
    if length is not None and length > MAX_UPLOAD:
        raise ApiProblem(413, "body_too_large", f"the file may have at most {MAX_UPLOAD} bytes")
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = await raw.content.read(256 * 1024)
        if not chunk:
            break
        size += len(chunk)
        if size > MAX_UPLOAD:
            raise ApiProblem(413, "body_too_large",
                             f"the file may have at most {MAX_UPLOAD} bytes")
        parts.append(chunk)
    if not size:
        raise ApiProblem(400, "empty_body", "the request needs the audio file as its body")
    return b"".join(parts)


async def get_moh(req: ApiRequest) -> web.StreamResponse:
    tenant_id = _tenant(req)
    return json_response(_out(await asyncio.to_thread(moh_of(req).state, tenant_id)))


async def put_moh(req: ApiRequest) -> web.StreamResponse:
    tenant_id = _tenant(req)
    data = await _read_body(req)
    try:
        state = await asyncio.to_thread(moh_of(req).save, tenant_id, data)
    except AudioRefused as exc:
        raise ApiProblem(422, "invalid_audio", str(exc)) from None
    return json_response(_out(state))


async def delete_moh(req: ApiRequest) -> web.StreamResponse:
    tenant_id = _tenant(req)
    await asyncio.to_thread(moh_of(req).remove, tenant_id)
    return web.Response(status=204)


def register(router: ApiRouter) -> None:
    """The routes of this module."""
    param = {"tenant": {"type": "integer", "minimum": 1}}
    admin = Role.TENANT_ADMIN
    path = "/tenants/{tenant}/music-on-hold"
    router.add(Route("GET", path, get_moh, "What the tenant's callers hear on hold",
                     "music on hold", "get_music_on_hold", response=MusicOnHoldOut,
                     path_params=param))
    router.add(Route("PUT", path, put_moh, "Upload the tenant's music on hold", "music on hold",
                     "put_music_on_hold", response=MusicOnHoldOut, role=admin,
                     path_params=param, errors=(400, 413, 415, 422),
                     request_content={"audio/*": "the audio file itself (WAV, MP3, "
                                                 "Ogg/Opus, FLAC, AAC …)",
                                      "application/octet-stream": "the same"},
                     description="The body is the audio file (any common format, at most "
                                 f"{MAX_UPLOAD // (1024 * 1024)} MB and "
                                 f"{MAX_SECONDS / 60:.0f} minutes); it is decoded once into "
                                 "16 kHz mono PCM and plays from the next hold on."))
    router.add(Route("DELETE", path, delete_moh,
                     "Back to the server's default music on hold", "music on hold",
                     "delete_music_on_hold", status=204, role=admin, path_params=param))
