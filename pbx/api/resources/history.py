"""``/users/{user}/history``: a user's calls, filtered (direction, missed, date, number), paged,
as JSON or CSV; delete one entry or all. Reads and deletes run in a worker thread
(``asyncio.to_thread``): the history is the store's, not call state."""

from __future__ import annotations

import asyncio
import csv
import io

from aiohttp import web

from pbx.api.models import Deleted, HistoryOut, HistoryPage, HistoryQuery
from pbx.api.resources.common import USER_PARAM, int_param, not_found, page, user_of
from pbx.api.routes import ApiRequest, ApiRouter, Route, json_response
from pbx.store import HistoryEntry

__all__ = ["register"]

SORT = ("started_at", "duration", "other_number", "id")
#: How many entries a query looks at (newest first).
SCAN = 10_000


def history_out(e: HistoryEntry) -> HistoryOut:
    """The API form of a history entry."""
    return HistoryOut(id=e.id, user_id=e.user_id, call_id=e.call_id,
                      direction=e.direction,  # type: ignore[arg-type]
                      other_name=e.other_name, other_number=e.other_number,
                      started_at=e.started_at, answered_at=e.answered_at, ended_at=e.ended_at,
                      duration=e.duration, missed=e.missed)


def _matches(e: HistoryEntry, q: HistoryQuery) -> bool:
    return ((q.direction is None or e.direction == q.direction)
            and (q.missed is None or e.missed == q.missed)
            and (q.since is None or e.started_at >= q.since)
            and (q.until is None or e.started_at < q.until)
            and (not q.number or q.number in e.other_number))


async def _entries(req: ApiRequest) -> tuple[list[HistoryOut], int]:
    user = user_of(req)
    q = req.query_as(HistoryQuery)
    rows = await asyncio.to_thread(req.ctx.store.history, user.id, SCAN)
    chosen = [history_out(e) for e in rows if _matches(e, q)]
    return page(chosen, q, lambda h, k: getattr(h, k), SORT, "-started_at")


async def list_history(req: ApiRequest) -> web.StreamResponse:
    items, total = await _entries(req)
    return json_response(HistoryPage(items=items, total=total))


async def history_csv(req: ApiRequest) -> web.StreamResponse:
    items, _ = await _entries(req)
    out = io.StringIO()
    fields = list(HistoryOut.model_fields)
    writer = csv.DictWriter(out, fields, lineterminator="\r\n")
    writer.writeheader()
    for h in items:
        writer.writerow(h.model_dump())
    return web.Response(text=out.getvalue(), content_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="history.csv"',
                                 "Cache-Control": "no-store"})


async def delete_entry(req: ApiRequest) -> web.StreamResponse:
    user = user_of(req)
    entry_id = int_param(req, "entry")
    if not await asyncio.to_thread(req.ctx.store.history_delete, user.id, entry_id):
        raise not_found(f"history entry {entry_id}")
    return web.Response(status=204)


async def clear(req: ApiRequest) -> web.StreamResponse:
    user = user_of(req)
    return json_response(Deleted(deleted=await asyncio.to_thread(req.ctx.store.history_clear,
                                                                 user.id)))


def register(router: ApiRouter) -> None:
    """The routes of this module."""
    entry = {**USER_PARAM, "entry": {"type": "integer", "minimum": 1}}
    router.add(Route("GET", "/users/{user}/history", list_history, "A user's call history",
                     "history", "list_history", query=HistoryQuery, response=HistoryPage,
                     path_params=USER_PARAM))
    router.add(Route("GET", "/users/{user}/history.csv", history_csv,
                     "A user's call history as CSV (same filters)", "history", "history_csv",
                     query=HistoryQuery, path_params=USER_PARAM,
                     content={"text/csv": "one line per call, with a header line"}))
    router.add(Route("DELETE", "/users/{user}/history/{entry}", delete_entry,
                     "Delete one call of the history", "history", "delete_history_entry",
                     status=204, path_params=entry))
    router.add(Route("DELETE", "/users/{user}/history", clear, "Delete a user's whole history",
                     "history", "clear_history", response=Deleted, path_params=USER_PARAM))
