"""``/portal/admin/music-on-hold``: what the company's callers hear on hold — upload a file
(any common audio format; it plays from the next hold on) or go back to the default. The
upload is read here as it streams in (the frame's forms are small), its CSRF token checked
like every form's, then handed to the API's ``PUT /tenants/{tenant}/music-on-hold``."""

from __future__ import annotations

import hmac

from aiohttp import BodyPartReader, web

from pbx.api.logins import check_origin
from pbx.api.problems import ApiProblem
from pbx.i18n import N_
from pbx.moh import MAX_UPLOAD
from pbx.portal.core import NavItem, PageError, Portal, PortalRequest
from pbx.portal.views.admin import ADMIN, refused

__all__ = ["ORDER", "register"]

ORDER = 106
BASE = "/portal/admin/music-on-hold"


def _tenant(pr: PortalRequest) -> int:
    tenant = pr.me.get("tenant_id") if pr.me else None
    if tenant is None:
        tenant = pr.who.tenant_id
    if tenant is None:
        raise ApiProblem(404, "not_found", "this login belongs to no company")
    return int(tenant)


async def _page(pr: PortalRequest, status: int = 200, error: str = "") -> web.Response:
    state = await pr.api("get_music_on_hold", tenant=_tenant(pr))
    return await pr.render("admin/music.html", status=status, state=state, error=error,
                           max_mb=MAX_UPLOAD // (1024 * 1024))


async def show(pr: PortalRequest) -> web.StreamResponse:
    return await _page(pr)


async def _read_upload(pr: PortalRequest) -> tuple[bytes, str]:
    """The posted file and its media type, after the form's CSRF and Origin check (400 when
    the multipart body does not parse)."""
    try:
        return await _read_parts(pr)
    except ValueError as exc:  # aiohttp's multipart reader: no boundary, a broken part
        raise ApiProblem(400, "malformed_body", f"the form does not parse: {exc}") from None


async def _read_parts(pr: PortalRequest) -> tuple[bytes, str]:
    check_origin(pr.raw, required=True)
    if not pr.raw.content_type.startswith("multipart/"):
        raise ApiProblem(415, "unsupported_media_type", "post the form (multipart/form-data)")
    reader = await pr.raw.multipart()
    csrf, data, media = "", b"", ""
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "csrf":
            csrf = (await part.read(decode=False))[:200].decode("ascii", "replace")
        elif part.name == "audio":
            if not csrf or not pr.csrf or not hmac.compare_digest(csrf.encode(),
                                                                   pr.csrf.encode()):
                break  # the token comes first in the form: nothing is read without it
            media = part.headers.get("Content-Type", "") or "application/octet-stream"
            chunks, size = [], 0
            while chunk := await part.read_chunk(256 * 1024):
                size += len(chunk)
                if size > MAX_UPLOAD:
                    raise ApiProblem(413, "body_too_large",
                                     f"the file may have at most {MAX_UPLOAD} bytes")
                chunks.append(chunk)
            data = b"".join(chunks)
    if not csrf or not pr.csrf or not hmac.compare_digest(csrf.encode(), pr.csrf.encode()):
        raise ApiProblem(403, "csrf_failed", "the form is stale: reload the page")
    return data, media


async def upload(pr: PortalRequest) -> web.StreamResponse:
    data, media = await _read_upload(pr)
    if not data:
        return await _page(pr, 400, pr.t("Choose an audio file first."))
    if not (media.startswith("audio/") or media in ("application/ogg", "video/mp4",
                                                     "video/webm")):
        media = "application/octet-stream"  # the content decides, not the browser's guess
    try:
        await pr.api("put_music_on_hold", tenant=_tenant(pr), data=data, content_type=media)
    except PageError as err:
        return await _page(pr, err.status, refused(pr, err))
    pr.redirect(BASE, notice="saved")


async def reset(pr: PortalRequest) -> web.StreamResponse:
    await pr.form()
    try:
        await pr.api("delete_music_on_hold", tenant=_tenant(pr))
    except PageError as err:
        return await _page(pr, err.status, refused(pr, err))
    pr.redirect(BASE, notice="saved")


def register(portal: Portal) -> None:
    """``/portal/admin/music-on-hold``."""
    portal.add_nav(NavItem(BASE, N_("Music on hold"), role=ADMIN, admin=True))
    portal.page("GET", BASE, show, role=ADMIN)
    portal.page("POST", BASE, upload, role=ADMIN)
    portal.page("POST", BASE + "/reset", reset, role=ADMIN)
