"""Token guessing meets the SIP side's bans (pbx.bans.BanTable, one table for both): 5 bad
tokens from a source within 60 s ban it (429 with Retry-After, even with a good token), a
source banned for SIP guessing is refused over HTTP too, one security log line per failure
for fail2ban; requests without a token or with a good one never count."""

from __future__ import annotations

import time

from pbx.bans import Ban, BanTable
from tests.pbx.api.conftest import Api


async def test_guessing_source_gets_429_then_even_a_good_token_waits(pbx_api: Api) -> None:
    from structlog.testing import capture_logs

    made: list[Ban] = []
    pbx_api.ctx.bans = BanTable(on_ban=made.append)
    bad = {"Authorization": "Bearer apx_guess"}
    with capture_logs() as logs:
        for _ in range(5):
            status, _, _ = await pbx_api.call("GET", "/api/v1/me", who=None, headers=bad)
            assert status == 401
    failed = [e for e in logs if e["event"] == "security.auth.failed"]
    assert len(failed) == 5 and failed[0]["src"] == "127.0.0.1" and failed[0]["method"] == "HTTP"
    assert [(b.source, b.reason) for b in made] == [("127.0.0.1", "auth failures")]
    status, body, headers = await pbx_api.call("GET", "/api/v1/me")
    assert status == 429 and body["code"] == "too_many_failures"
    assert int(headers["Retry-After"]) == 300


async def test_a_source_banned_for_sip_guessing_is_refused_over_http(pbx_api: Api) -> None:
    table = BanTable()
    for _ in range(5):
        table.failed("127.0.0.1", "100", time.time())  # wrong SIP passwords
    pbx_api.ctx.bans = table
    status, body, _ = await pbx_api.call("GET", "/api/v1/me")
    assert status == 429 and body["code"] == "too_many_failures"


async def test_requests_without_a_token_or_with_a_good_one_never_count(pbx_api: Api) -> None:
    for _ in range(10):
        status, _, _ = await pbx_api.call("GET", "/api/v1/me", who=None)
        assert status == 401
        status, _, _ = await pbx_api.call("GET", "/api/v1/me")
        assert status == 200
    assert not pbx_api.ctx.bans.banned("127.0.0.1", time.time())
