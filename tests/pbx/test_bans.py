"""The sans-IO ban table (issue 12 §1, SECURITY.md): guessers and floods are banned, an office
behind one address never is, trusted peers are exempt, bans end, can be listed and lifted, and
memory stays bounded."""

from __future__ import annotations

import pytest

from pbx.bans import Ban, BanPolicy, BanTable, TrustedNetworks
from pbx.origin import verify_with_bans
from sipcore.digest import AuthFailure, DigestClient, DigestServer, make_credentials
from sipcore.message import Request, parse_message

T0 = 1_000.0
OFFICE = "198.51.100.10"
GUESSER = "203.0.113.66"


def table(**policy: float) -> tuple[BanTable, list[Ban]]:
    seen: list[Ban] = []
    return BanTable(BanPolicy(**policy), on_ban=seen.append), seen  # type: ignore[arg-type]


def test_five_failures_in_a_minute_ban_for_five_minutes() -> None:
    bans, seen = table()
    for i, user in enumerate(["100", "101", "100", "nobody"]):  # any mix of users
        assert bans.failed(GUESSER, user, T0 + i) is None
        assert bans.admit(GUESSER, T0 + i)
    ban = bans.failed(GUESSER, "102", T0 + 10)
    assert ban == Ban(GUESSER, "auth failures", T0 + 10, T0 + 310, 5) and seen == [ban]
    assert not bans.admit(GUESSER, T0 + 11) and not bans.admit(GUESSER, T0 + 309.9)
    assert bans.banned(GUESSER, T0 + 100) and bans.stats["dropped"] == 2
    assert bans.admit(GUESSER, T0 + 310)  # over: let in again, counting from zero
    assert not bans.banned(GUESSER, T0 + 310) and bans.failed(GUESSER, "100", T0 + 311) is None


def test_failures_spread_beyond_the_window_do_not_ban() -> None:
    bans, seen = table()
    for i in range(20):
        assert bans.failed(GUESSER, "100", T0 + i * 15.0) is None  # 4 per minute at most
    assert seen == [] and bans.admit(GUESSER, T0 + 300)


def test_an_office_that_authenticated_is_never_rate_limited() -> None:
    bans, seen = table()
    assert bans.admit(OFFICE, T0)
    bans.succeeded(OFFICE, T0 + 0.01)
    # 50 phones re-registering and calling: thousands of messages within two seconds
    assert all(bans.admit(OFFICE, T0 + 0.02 + i * 0.0004) for i in range(5000))
    assert seen == [] and bans.stats["dropped"] == 0


def test_more_than_16_requests_in_2_s_without_authenticating_ban() -> None:
    bans, seen = table()
    assert all(bans.admit(GUESSER, T0 + i * 0.1) for i in range(16))
    assert not bans.admit(GUESSER, T0 + 1.7)  # the 17th within 2 s
    assert seen and seen[0].reason == "request flood" and seen[0].count == 17
    assert not bans.admit(GUESSER, T0 + 200)


def test_requests_at_a_modest_rate_are_never_a_flood() -> None:
    bans, seen = table()
    assert all(bans.admit(GUESSER, T0 + i * 0.25) for i in range(400))  # 8 in every 2 s
    assert seen == []


def test_trusted_peers_are_never_counted_nor_banned() -> None:
    trusted = TrustedNetworks(["192.0.2.0/24", "2001:db8::1"])
    bans = BanTable(exempt=trusted.__contains__)
    for i in range(100):
        assert bans.failed("192.0.2.7", "trunk", T0 + i) is None
        assert bans.admit("192.0.2.7", T0 + i * 0.01)
        assert bans.admit("[2001:db8::1]", T0 + i * 0.01)
    assert bans.bans(T0 + 1) == []
    assert "192.0.3.1" not in trusted and "not-an-ip" not in trusted
    assert 17 not in trusted  # type: ignore[operator]


def test_bans_are_listed_and_lifted() -> None:
    bans, _ = table(failures=1)
    bans.failed("203.0.113.1", "a", T0)
    bans.failed("203.0.113.2", "b", T0 + 5)
    assert [b.source for b in bans.bans(T0 + 6)] == ["203.0.113.1", "203.0.113.2"]
    assert bans.lift("203.0.113.1") and not bans.lift("203.0.113.1")
    assert bans.admit("203.0.113.1", T0 + 7) and not bans.admit("203.0.113.2", T0 + 7)
    assert [b.source for b in bans.bans(T0 + 6)] == ["203.0.113.2"]
    assert bans.bans(T0 + 305 + 1) == [] and bans.stats["lifted"] == 1


def test_guessing_one_account_from_many_addresses_is_slowed_not_locked() -> None:
    bans, seen = table(account_failures=20, account_interval=2.0)
    for i in range(20):  # 20 addresses, one guess each: no source reaches its limit
        assert bans.may_verify("100", T0 + i * 0.1)
        bans.failed(f"203.0.113.{i}", "100", T0 + i * 0.1)
    assert seen == []
    now = T0 + 2.0
    assert bans.may_verify("100", now)  # one verification per 2 s gets through ...
    assert not bans.may_verify("100", now + 0.5)  # ... the others are challenged unverified
    assert not bans.may_verify("100", now + 1.9)
    assert bans.may_verify("100", now + 2.0)
    assert bans.may_verify("101", now)  # other accounts are not affected
    assert bans.may_verify("100", T0 + 62.0)  # the failures aged out of the window
    assert bans.may_verify("100", T0 + 62.1) and bans.stats["slowed"] == 2


def test_memory_stays_bounded_under_random_sources() -> None:
    bans, _ = table(max_sources=1000)
    for i in range(50_000):
        src = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        bans.admit(src, T0 + i * 0.0001)
        bans.failed(src, f"user{i}", T0 + i * 0.0001)
    assert bans.tracked() <= 4 * 1000


@pytest.mark.parametrize("networks", [["10.0.0.0/8"], ["::1"], []])
def test_trusted_networks_parse(networks: list[str]) -> None:
    trusted = TrustedNetworks(networks)
    assert ("10.1.2.3" in trusted) is (networks == ["10.0.0.0/8"])
    assert ("::1" in trusted) is (networks == ["::1"])


# -- pbx.origin.verify_with_bans: the digest outcome reaches the table -------------------------

REALM = "pbx.example.com"
CREDS = {"100": make_credentials("100", REALM, "right")}


def _register(src: str, cseq: int) -> Request:
    msg = parse_message((
        f"REGISTER sip:{REALM} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:5060;branch=z9hG4bK{cseq}\r\n"
        f"From: <sip:100@{REALM}>;tag=a\r\nTo: <sip:100@{REALM}>\r\nCall-ID: c@{src}\r\n"
        f"CSeq: {cseq} REGISTER\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def _answered(digest: DigestServer, src: str, cseq: int, password: str, now: float) -> Request:
    req = _register(src, cseq)
    return DigestClient().authorize(req, digest.challenge(req, src, now), "100", password,
                                    realm=REALM)


def test_verify_with_bans_counts_guesses_and_marks_successes() -> None:
    digest = DigestServer(REALM, b"s" * 32, algorithms=("MD5",))
    bans, seen = table()
    # no credentials: nothing counted
    r = verify_with_bans(digest, bans, _register(GUESSER, 1), GUESSER, CREDS.get, T0)
    assert r.reason is AuthFailure.NO_CREDENTIALS
    for i in range(5):
        r = verify_with_bans(digest, bans, _answered(digest, GUESSER, 2 + i, f"x{i}", T0 + i),
                             GUESSER, CREDS.get, T0 + i)
        assert r.reason is AuthFailure.WRONG_RESPONSE
    assert [b.source for b in seen] == [GUESSER]
    r = verify_with_bans(digest, bans, _answered(digest, OFFICE, 1, "right", T0), OFFICE,
                         CREDS.get, T0)
    assert r.ok and all(bans.admit(OFFICE, T0 + i * 0.001) for i in range(100))


def test_verify_with_bans_does_not_verify_a_slowed_account() -> None:
    digest = DigestServer(REALM, b"s" * 32, algorithms=("MD5",))
    bans, _ = table(account_failures=3, account_interval=5.0)
    for i in range(3):  # three addresses, one guess each
        src = f"203.0.113.{i}"
        verify_with_bans(digest, bans, _answered(digest, src, 1, "nope", T0), src,
                         CREDS.get, T0)
    # the next verification of "100" goes through (the right password works) ...
    r = verify_with_bans(digest, bans, _answered(digest, OFFICE, 1, "right", T0 + 1), OFFICE,
                         CREDS.get, T0 + 1)
    assert r.ok
    # ... the one after within 5 s is not verified at all: refused even with the right password
    r = verify_with_bans(digest, bans, _answered(digest, OFFICE, 2, "right", T0 + 2), OFFICE,
                         CREDS.get, T0 + 2)
    assert not r.ok and r.reason is AuthFailure.WRONG_RESPONSE
    assert bans.stats["slowed"] == 1
