"""The administrator view (issue 17 item 3) under ``/portal/admin/``: one module per area
(overview, users, numbers, devices, pickup groups, trunks, music on hold, feature codes, API
tokens, webhooks), each a :class:`~pbx.portal.core.NavItem` with ``admin=True`` (the frame
shows them as the administration's sub-navigation). Every page needs the ``tenant_admin``
role (a plain user gets the 403 page) and does everything through the API's operations, so a
tenant admin sees and changes only their tenant.

What the modules share is here: the users of the tenant by id, a form field as text, and the
text shown beside a form when the API refused it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pbx.api.auth import Role
from pbx.portal.core import PageError, PortalRequest

__all__ = ["ADMIN", "field", "refused", "users_by_id"]

#: The role every administrator page needs.
ADMIN = Role.TENANT_ADMIN


async def users_by_id(pr: PortalRequest) -> dict[int, Mapping[str, Any]]:
    """The users the administrator sees, by id (in extension order)."""
    found = await pr.api("list_users", query={"limit": "500"})
    return {int(u["id"]): u for u in found["items"]}


def field(form: Mapping[str, Any], name: str, limit: int = 2000) -> str:
    """A form field as stripped text ('' when missing or not text)."""
    value = form.get(name, "")
    return value.strip()[:limit] if isinstance(value, str) else ""


def refused(pr: PortalRequest, err: PageError) -> str:
    """What the page says beside the form when the API refused the change."""
    where = f" ({err.field})" if err.field else ""
    return pr.t("Not done: %(reason)s") % {"reason": f"{err.detail or err.code}{where}"}
