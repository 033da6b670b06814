"""``asyncpbx call-back USER TARGET``: ask the RUNNING server to call USER's phone, then TARGET.

The CLI is another process than the server, and only the server has the SIP endpoint and the
calls, so the command goes through the server's REST API (``POST
/api/v1/users/{id}/call-backs``, :mod:`pbx.api.resources.call_back`) at ``[http] listen`` (or
``--api URL``). It authenticates with a token it makes for this one request: the CLI opens the
store anyway (it is the administrator's tool and may create tokens, ``asyncpbx token``), so it
mints a tenant-admin token of the user's tenant that expires after a minute and revokes it
when the answer is in. No secret stays on disk and nothing new is trusted: whoever can run
this command can already write the store.

    asyncpbx call-back 100 0301234567 [--phone mobile|remote_office|device] [--tenant NAME]
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from pbx.config import Config
from pbx.http import parse_http_listen
from pbx.store import Store, StoreError

__all__ = ["TOKEN_LIFETIME", "add_parser", "api_base", "run"]

#: How long the token made for one call-back request lives (seconds).
TOKEN_LIFETIME = 60.0


def add_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None],
               tenant: Callable[[argparse.ArgumentParser], None]) -> None:
    """The ``call-back`` command."""
    help_text = "call a user's phone, then a target, and connect both (the running server)"
    p = sub.add_parser("call-back", help=help_text, description=help_text)
    p.add_argument("user", metavar="USER", help="the user's extension")
    p.add_argument("target", metavar="TARGET", help="the number or extension to call")
    p.add_argument("--phone", choices=("mobile", "remote_office", "device"),
                   help="which of the user's phones rings first (default: their setting)")
    p.add_argument("--api", metavar="URL",
                   help="the server's HTTP address (default: from [http] listen)")
    common(p)
    tenant(p)


def api_base(config: Config, override: str | None = None) -> str:
    """The running server's API base URL (``[http] listen``; a wildcard means loopback)."""
    if override:
        return override.rstrip("/")
    address = parse_http_listen(config.http.listen)
    if address is None:
        raise StoreError("the server's HTTP API is off: set [http] listen (or give --api URL)")
    host, port = address
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def run(args: argparse.Namespace, config: Config, store: Store, tenant: str | None) -> None:
    """Carry out ``asyncpbx call-back`` (StoreError says what went wrong)."""
    base = api_base(config, args.api)
    user = store.user(args.user, tenant=tenant)
    now = time.time()
    token, record = store.create_api_token(role="tenant_admin", tenant_id=user.tenant_id,
                                           name="cli call-back", now=now,
                                           expires_at=now + TOKEN_LIFETIME)
    body: dict[str, Any] = {"target": args.target}
    if args.phone:
        body["phone"] = args.phone
    request = urllib.request.Request(
        f"{base}/api/v1/users/{user.id}/call-backs", data=json.dumps(body).encode(),
        method="POST", headers={"Authorization": f"Bearer {token}",
                                "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10.0) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = _detail(exc)
        raise StoreError(f"the server refused the call-back ({exc.code}): {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise StoreError(f"cannot reach the server at {base} (is it running?): {exc}") from exc
    finally:
        store.revoke_api_token(record.id)
    phone = args.phone or "as set"
    print(f"call-back {answer['call_id']}: calling {args.user}'s phone ({phone}), "
          f"then {args.target}")


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read()).get("detail") or exc.reason)
    except (ValueError, OSError):
        return str(exc.reason)
