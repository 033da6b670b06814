"""Token guessing is limited like SIP password guessing: 5 failures from a source within 60 s
ban it for 300 s (429 with Retry-After, even with a good token), one security log line per
failure for fail2ban; valid requests never count."""

from __future__ import annotations

from pbx.api.throttle import FailureLimiter
from tests.pbx.api.conftest import Api


def test_five_failures_in_the_window_ban_for_300_s() -> None:
    limiter = FailureLimiter()
    for i in range(4):
        assert not limiter.failed("192.0.2.1", 100.0 + i)
    assert limiter.retry_after("192.0.2.1", 104.0) == 0
    assert limiter.failed("192.0.2.1", 104.0)
    assert limiter.retry_after("192.0.2.1", 105.0) == 299.0
    assert limiter.retry_after("192.0.2.2", 105.0) == 0  # others unaffected
    assert limiter.retry_after("192.0.2.1", 404.0) == 0


def test_failures_spread_beyond_the_window_do_not_ban() -> None:
    limiter = FailureLimiter()
    assert not any(limiter.failed("192.0.2.1", t * 20.0) for t in range(20))


def test_tracked_sources_are_bounded() -> None:
    limiter = FailureLimiter(max_sources=3)
    for i in range(10):
        limiter.failed(f"192.0.2.{i}", 1.0)
    assert len(limiter._sources) == 3


async def test_guessing_source_gets_429_then_even_a_good_token_waits(pbx_api: Api) -> None:
    from structlog.testing import capture_logs

    bad = {"Authorization": "Bearer apx_guess"}
    with capture_logs() as logs:
        for _ in range(5):
            status, body, _ = await pbx_api.call("GET", "/api/v1/me", who=None, headers=bad)
            assert status == 401
    failed = [e for e in logs if e["event"] == "security.auth.failed"]
    assert len(failed) == 5 and failed[0]["src"] == "127.0.0.1" and failed[0]["method"] == "HTTP"
    assert [e["event"] for e in logs].count("security.banned") == 1
    status, body, headers = await pbx_api.call("GET", "/api/v1/me")
    assert status == 429 and body["code"] == "too_many_failures"
    assert 290 <= int(headers["Retry-After"]) <= 301


async def test_requests_without_a_token_or_with_a_good_one_never_count(pbx_api: Api) -> None:
    for _ in range(10):
        status, _, _ = await pbx_api.call("GET", "/api/v1/me", who=None)
        assert status == 401
        status, _, _ = await pbx_api.call("GET", "/api/v1/me")
        assert status == 200
