"""The call history (FEATURES.md §5, "Anrufverlauf"): every incoming, outgoing and missed call
with the name (the number when unknown), the number, date and time and duration; missed calls
highlighted. Filter (all, missed, incoming, outgoing), delete one entry or all, download as
CSV (the API's own ``history.csv``), and each number links to the directory and contacts page.
New calls appear in an open page (``data-live="call"``, and ``static/history.js`` looks again
a moment after a call ended: the history is written by a worker shortly after the event).
"""

from __future__ import annotations

import urllib.parse

from aiohttp import web

from pbx.api.problems import ApiProblem
from pbx.i18n import N_
from pbx.portal.core import NavItem, PageError, Portal, PortalRequest

__all__ = ["FILTERS", "ORDER", "register"]

#: The place in the navigation.
ORDER = 30
#: How many entries a page shows.
PAGE = 100

#: filter → (label, the API's query)
FILTERS: dict[str, tuple[str, dict[str, str]]] = {
    "all": (N_("All calls"), {}),
    "missed": (N_("Missed"), {"missed": "true"}),
    "in": (N_("Incoming"), {"direction": "in"}),
    "out": (N_("Outgoing"), {"direction": "out"}),
}


def _filter(pr: PortalRequest) -> str:
    chosen = pr.raw.query.get("filter", "all")
    return chosen if chosen in FILTERS else "all"


async def history_page(pr: PortalRequest) -> web.StreamResponse:
    if pr.who.user_id is None:  # an administrator's login without a user of their own
        pr.redirect("/portal/admin/")
    chosen = _filter(pr)
    try:
        offset = max(0, min(int(pr.raw.query.get("offset", "0")), 1_000_000))
    except ValueError:
        offset = 0
    query = {**FILTERS[chosen][1], "limit": str(PAGE), "offset": str(offset),
             "sort": "-started_at"}
    result = await pr.api("list_history", user="me", query=query)
    csv = "/api/v1/users/me/history.csv?" + urllib.parse.urlencode(
        {**FILTERS[chosen][1], "limit": "500"})
    return await pr.render("history.html", entries=result["items"], total=result["total"],
                           filters=FILTERS, chosen=chosen, csv=csv, offset=offset, page=PAGE)


def _back(pr: PortalRequest, form_filter: object) -> str:
    chosen = form_filter if isinstance(form_filter, str) and form_filter in FILTERS else "all"
    return "/portal/history" + ("" if chosen == "all" else f"?filter={chosen}")


async def delete_entry(pr: PortalRequest) -> web.StreamResponse:
    form = await pr.form()
    entry = pr.raw.match_info["entry"]
    if not entry.isdigit():
        raise ApiProblem(404, "not_found", f"no history entry {entry[:20]}")
    try:
        await pr.api("delete_history_entry", user="me", entry=entry)
    except PageError as err:
        if err.status != 404:  # gone already (another tab): what was asked for is done
            raise
    pr.redirect(_back(pr, form.get("filter")), notice="deleted")


async def clear(pr: PortalRequest) -> web.StreamResponse:
    form = await pr.form()
    if form.get("confirm") != "yes":  # the manual's "und bestätigen Sie"
        pr.redirect(_back(pr, form.get("filter")))
    await pr.api("clear_history", user="me")
    pr.redirect(_back(pr, form.get("filter")), notice="deleted")


def register(portal: Portal) -> None:
    """``/portal/history`` and its delete forms."""
    portal.add_nav(NavItem("/portal/history", N_("Call history")))
    portal.page("GET", "/portal/history", history_page)
    portal.page("POST", "/portal/history/clear", clear)
    portal.page("POST", "/portal/history/{entry}/delete", delete_entry)
