"""The SSRF guard: a webhook may not make the server call into its own network.

A target URL must be ``http``/``https`` with a host. Unless ``[webhooks] allow_private`` is
set, loopback, link-local, private, multicast, reserved and unspecified addresses are refused
— a literal address when the endpoint is created, a name when it is resolved for a delivery:
:class:`GuardedResolver` is the delivering session's resolver, so the address connected to is
the one checked (no rebinding between check and connect). Redirects are not followed.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

__all__ = ["GuardedResolver", "TargetRefused", "address_refused", "check_url"]


class TargetRefused(ValueError):
    """The URL or the address it resolves to may not be delivered to."""


def address_refused(address: str) -> str | None:
    """Why ``address`` is no target without ``allow_private`` (None: it is a public one)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for what, flag in (("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
                       ("private", ip.is_private), ("multicast", ip.is_multicast),
                       ("unspecified", ip.is_unspecified), ("reserved", ip.is_reserved)):
        if flag:
            return f"{address} is a {what} address"
    return None


def check_url(url: str, *, allow_private: bool) -> str:
    """``url`` when it may be a webhook's target (TargetRefused saying why not)."""
    if len(url) > 2000:
        raise TargetRefused("the URL is longer than 2000 characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 (a bad port raises)
    except ValueError as exc:
        raise TargetRefused(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise TargetRefused("the URL must be http:// or https:// with a host")
    if parts.username or parts.password:
        raise TargetRefused("the URL may not carry credentials")
    if not allow_private:
        if host == "localhost" or host.endswith(".localhost"):
            raise TargetRefused(f"{host} is a loopback name")
        reason = address_refused(host)
        if reason is not None:
            raise TargetRefused(reason)
    return url


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, keeping only the addresses :func:`address_refused` allows."""

    def __init__(self, allow_private: bool, inner: AbstractResolver | None = None) -> None:
        self.allow_private = allow_private
        self.inner = inner or DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        """The allowed addresses of ``host`` (TargetRefused when none is)."""
        found = await self.inner.resolve(host, port, family)
        if self.allow_private:
            return found
        kept = [r for r in found if address_refused(str(r["host"])) is None]
        if not kept:
            reasons = {address_refused(str(r["host"])) for r in found}
            raise TargetRefused(f"{host}: " + "; ".join(sorted(str(r) for r in reasons)))
        return kept

    async def close(self) -> None:
        """Close the inner resolver."""
        await self.inner.close()
