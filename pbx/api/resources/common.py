"""What every resource module shares: finding the objects a principal may see (404 for the
others), the tenant a new object goes to, paging and sorting."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pbx.api.auth import Principal, Role
from pbx.api.models import ListQuery
from pbx.api.problems import ApiProblem, FieldError
from pbx.api.routes import ApiRequest
from pbx.store import Tenant, User

T = TypeVar("T")

#: The ``{user}`` path parameter: an id or ``me``.
USER_PARAM: dict[str, dict[str, Any]] = {"user": {"oneOf": [{"type": "integer", "minimum": 1},
                                 {"type": "string", "const": "me"}],
                       "description": "a user id, or me (the token's user)"}}


def not_found(what: str) -> ApiProblem:
    """The one answer for an object that does not exist or is not the principal's."""
    return ApiProblem(404, "not_found", f"no {what}")


def int_param(req: ApiRequest, name: str) -> int:
    """A numeric path parameter (404 when it is not one: no such object)."""
    text = req.path(name)
    if not text.isdigit() or len(text) > 18:
        raise not_found(f"{name} {text[:40]}")
    return int(text)


def user_of(req: ApiRequest, *, param: str = "user") -> User:
    """The user the path names (``me``: the token's), 404 unless the principal sees them."""
    who = req.who
    text = req.path(param)
    if text == "me":
        if who.user_id is None:
            raise ApiProblem(404, "not_found", "this token acts for no user (make one with "
                                               "--user)")
        user_id = who.user_id
    else:
        user_id = int_param(req, param)
    user = req.ctx.directory.user_by_id(user_id)
    if user is None or not who.sees_user(user):
        raise not_found(f"user {text}")
    return user


def tenant_of(req: ApiRequest, tenant_id: int) -> Tenant:
    """The tenant with ``tenant_id`` (404 unless the principal sees it)."""
    tenant = req.ctx.directory.tenant(tenant_id)
    if tenant is None or not req.who.sees_tenant(tenant_id):
        raise not_found(f"tenant {tenant_id}")
    return tenant


def target_tenant(req: ApiRequest, requested: int | None) -> Tenant:
    """The tenant a new object goes to: the token's, or for a system admin of every tenant
    the one named (422 when none is)."""
    who: Principal = req.who
    if who.tenant_id is not None:
        if requested is not None and requested != who.tenant_id:
            raise not_found(f"tenant {requested}")
        return tenant_of(req, who.tenant_id)
    if requested is None:
        raise ApiProblem(422, "validation_failed", "name the tenant (tenant_id)",
                         field="/tenant_id",
                         errors=[FieldError(field="/tenant_id", code="missing",
                                            message="a system admin token must name it")])
    return tenant_of(req, requested)


def admin_sees(who: Principal, tenant_id: int) -> bool:
    """Tenant-wide lists: admins see their tenant (system admins every tenant)."""
    return who.sees_tenant(tenant_id) and who.role >= Role.TENANT_ADMIN


def page(items: Sequence[T], query: ListQuery, key: Callable[[T, str], Any],
         fields: Sequence[str], default: str) -> tuple[list[T], int]:
    """Sort ``items`` by ``query.sort`` (one of ``fields``), then cut the page."""
    sort = query.sort or default
    name = sort.removeprefix("-")
    if name not in fields:
        raise ApiProblem(422, "validation_failed",
                         f"sort by one of {', '.join(fields)} (- first: descending)",
                         field="query:sort",
                         errors=[FieldError(field="query:sort", code="invalid_sort",
                                            message=f"{name} is not sortable")])
    ordered = sorted(items, key=lambda item: _sortable(key(item, name)),
                     reverse=sort.startswith("-"))
    return ordered[query.offset:query.offset + query.limit], len(ordered)


def _sortable(value: Any) -> tuple[int, Any]:
    return (0, "") if value is None else (1, value)
