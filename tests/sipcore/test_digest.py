"""Digest authentication: RFC 7616 vectors, client↔server, nonces, replay, enumeration, parsing."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipcore.digest import (
    AuthFailure,
    AuthStatus,
    Credentials,
    DigestClient,
    DigestServer,
    compute_ha1,
    compute_response,
    format_auth_header,
    make_credentials,
    parse_auth_header,
)
from sipcore.errors import LocalProtocolError, ParseError
from sipcore.message import Request, Response, parse_message

REALM = "pbx.example.com"
SECRET = b"0123456789abcdef0123456789abcdef"
ALICE = "10.0.0.5"
MALLORY = "10.0.0.66"
T0 = 1_700_000_000.0


def register(user: str = "alice", cseq: int = 1, uri: str = f"sip:{REALM}") -> Request:
    raw = (
        f"REGISTER {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {ALICE}:5060;branch=z9hG4bK{cseq}x;rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@{REALM}>;tag=f1\r\n"
        f"To: <sip:{user}@{REALM}>\r\n"
        "Call-ID: call-1@10.0.0.5\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:{user}@{ALICE}:5060>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    msg = parse_message(raw)
    assert isinstance(msg, Request)
    return msg


USERS = {
    "alice": make_credentials("alice", REALM, "correct horse"),
    "bob": make_credentials("bob", REALM, "battery staple"),
}


def lookup(name: str) -> Credentials | None:
    return USERS.get(name)


def server(**kw: object) -> DigestServer:
    return DigestServer(REALM, SECRET, **kw)  # type: ignore[arg-type]


def counter_cnonce() -> DigestClient:
    n = iter(range(1, 1_000_000))
    return DigestClient(cnonce_factory=lambda: f"cnonce{next(n)}")


def authorized(
    srv: DigestServer,
    user: str = "alice",
    password: str = "correct horse",
    *,
    now: float = T0,
    peer: str = ALICE,
    client: DigestClient | None = None,
    request: Request | None = None,
) -> Request:
    req = request or register(user)
    challenge = srv.challenge(req, peer, now)
    return (client or DigestClient()).authorize(req, challenge, user, password, realm=REALM)


def with_params(req: Request, header: str, **changes: str | None) -> Request:
    """A copy of ``req`` whose credentials header has parameters replaced (None removes)."""
    parsed = parse_auth_header(req.headers.get(header) or "")
    params = dict(parsed.params)
    for k, v in changes.items():
        if v is None:
            params.pop(k, None)
        else:
            params[k] = v
    unquoted = {"algorithm", "qop", "nc", "stale", "userhash"}
    value = format_auth_header("Digest", [(k, v, k not in unquoted) for k, v in params.items()])
    headers = req.headers.copy()
    headers.set(header, value)
    return Request(req.method, req.uri, headers, req.body)


# -- RFC 7616 §3.9.1 example -----------------------------------------------------------------

RFC_USER, RFC_PASSWORD, RFC_REALM = "Mufasa", "Circle of Life", "http-auth@example.org"
RFC_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
# The responses printed in RFC 7616 §3.9.1.
RFC_RESPONSES = {
    "MD5": "8ca523f5e9506fed4657c9700eebdbec",
    "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
}


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_rfc7616_example_vectors(algorithm: str) -> None:
    ha1 = compute_ha1(algorithm, RFC_USER, RFC_REALM, RFC_PASSWORD)
    response = compute_response(
        algorithm,
        ha1,
        method="GET",
        uri="/dir/index.html",
        nonce=RFC_NONCE,
        qop="auth",
        nc="00000001",
        cnonce=RFC_CNONCE,
    )
    assert response == RFC_RESPONSES[algorithm]
    creds = make_credentials(RFC_USER, RFC_REALM, RFC_PASSWORD)
    assert creds.ha1_for(algorithm) == ha1


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_rfc7616_example_authorization_header_parses(algorithm: str) -> None:
    header = (
        f'Digest username="{RFC_USER}", realm="{RFC_REALM}", uri="/dir/index.html", '
        f'algorithm={algorithm}, nonce="{RFC_NONCE}", nc=00000001, '
        f'cnonce="{RFC_CNONCE}", qop=auth, response="{RFC_RESPONSES[algorithm]}", '
        f'opaque="{RFC_OPAQUE}"'
    )
    parsed = parse_auth_header(header)
    assert parsed.is_digest
    p = parsed.params
    ha1 = compute_ha1(p["algorithm"], p["username"], p["realm"], RFC_PASSWORD)
    assert p["response"] == compute_response(
        p["algorithm"],
        ha1,
        method="GET",
        uri=p["uri"],
        nonce=p["nonce"],
        qop=p["qop"],
        nc=p["nc"],
        cnonce=p["cnonce"],
    )


def test_sess_variant_derives_session_ha1() -> None:
    ha1 = compute_ha1("SHA-256", "u", "r", "p")
    sess = compute_response(
        "SHA-256-sess",
        ha1,
        method="REGISTER",
        uri="sip:r",
        nonce="n",
        qop="auth",
        nc="00000001",
        cnonce="c",
    )

    def h(s: str) -> str:
        return hashlib.sha256(s.encode()).hexdigest()

    expected = h(f"{h(f'{ha1}:n:c')}:n:00000001:c:auth:{h('REGISTER:sip:r')}")
    assert sess == expected


def test_credentials_store_no_password() -> None:
    creds = make_credentials("alice", REALM, "correct horse")
    assert "correct horse" not in repr(creds)
    assert set(creds.ha1) == {"SHA-256", "MD5"}
    assert creds.ha1["MD5"] == hashlib.md5(b"alice:pbx.example.com:correct horse").hexdigest()


# -- challenge shape ---------------------------------------------------------------------------


def challenge_shape(resp: Response) -> tuple[int, str, list[str], list[list[str]]]:
    names = [name for name, _ in resp.headers]
    params = [
        list(parse_auth_header(v).params)
        for name, v in resp.headers
        if name in ("WWW-Authenticate", "Proxy-Authenticate")
    ]
    return resp.status, resp.reason, names, params


def test_challenge_offers_sha256_first_with_qop_auth_and_opaque() -> None:
    srv = server()
    resp = srv.challenge(register(), ALICE, T0)
    assert resp.status == 401
    assert resp.to_tag
    values = resp.headers.get_all("WWW-Authenticate")
    parsed = [parse_auth_header(v) for v in values]
    assert [p.params["algorithm"] for p in parsed] == ["SHA-256", "MD5"]
    for p in parsed:
        assert p.is_digest
        assert p.params["realm"] == REALM
        assert p.params["qop"] == "auth"
        assert p.params["opaque"]
        assert "stale" not in p.params
    assert parsed[0].params["nonce"] != srv.challenge(register(), ALICE, T0).headers.get(
        "WWW-Authenticate"
    )


def test_proxy_mode_uses_407_and_proxy_headers() -> None:
    srv = server(proxy=True)
    req = register()
    resp = srv.challenge(req, ALICE, T0)
    assert resp.status == 407
    assert "WWW-Authenticate" not in resp.headers
    assert len(resp.headers.get_all("Proxy-Authenticate")) == 2
    answered = DigestClient().authorize(req, resp, "alice", "correct horse", realm=REALM)
    assert "Proxy-Authorization" in answered.headers
    assert "Authorization" not in answered.headers
    assert srv.verify(answered, ALICE, lookup, T0 + 1).ok
    # Credentials in the wrong header do not count.
    assert server().verify(answered, ALICE, lookup, T0 + 1).reason is AuthFailure.NO_CREDENTIALS


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "offered", [("SHA-256", "MD5"), ("MD5",), ("SHA-256",), ("MD5", "SHA-256"), ("SHA-256-sess",)]
)
def test_round_trip(offered: tuple[str, ...]) -> None:
    srv = server(algorithms=offered)
    req = authorized(srv)
    result = srv.verify(req, ALICE, lookup, T0 + 2)
    assert result.status is AuthStatus.OK
    assert result.username == "alice"
    expected = (
        "SHA-256-sess"
        if offered == ("SHA-256-sess",)
        else ("SHA-256" if "SHA-256" in offered else "MD5")
    )
    assert result.algorithm == expected
    assert parse_auth_header(req.headers.get("Authorization") or "").params["algorithm"] == (
        expected
    )


def test_client_uses_request_uri_nc_and_cnonce() -> None:
    srv = server()
    req = register()
    challenge = srv.challenge(req, ALICE, T0)
    client = counter_cnonce()
    first = client.authorize(req, challenge, "alice", "correct horse", realm=REALM)
    again = client.authorize(req, challenge, "alice", "correct horse", realm=REALM)
    p1 = parse_auth_header(first.headers.get("Authorization") or "").params
    p2 = parse_auth_header(again.headers.get("Authorization") or "").params
    assert p1["uri"] == str(req.uri)
    assert (p1["nc"], p2["nc"]) == ("00000001", "00000002")
    assert (p1["cnonce"], p2["cnonce"]) == ("cnonce1", "cnonce2")
    assert p1["qop"] == "auth"
    assert p1["opaque"] == srv.opaque
    # The same nonce with a rising nc is accepted each time.
    assert srv.verify(first, ALICE, lookup, T0 + 1).ok
    assert srv.verify(again, ALICE, lookup, T0 + 2).ok
    # The original request is not modified.
    assert "Authorization" not in req.headers


def test_unicode_username_and_quotes_round_trip() -> None:
    name = 'jürgen "j" \\ o'
    users = {name: make_credentials(name, REALM, "pässwörd")}
    srv = server()
    req = authorized(srv, name, "pässwörd", request=register("juergen"))
    assert srv.verify(req, ALICE, users.get, T0 + 1).ok


# -- nonce lifetime, binding, replay ---------------------------------------------------------


def test_stale_after_ttl_only_with_right_password() -> None:
    srv = server(nonce_ttl=300)
    good = authorized(srv, now=T0)
    result = srv.verify(good, ALICE, lookup, T0 + 301)
    assert result.status is AuthStatus.STALE and result.stale
    assert result.username == "alice"
    resp = srv.challenge(good, ALICE, T0 + 301, stale=True)
    assert all(
        parse_auth_header(v).params.get("stale") == "true"
        for v in resp.headers.get_all("WWW-Authenticate")
    )
    # A wrong password never learns about staleness (no oracle for guesses).
    bad = authorized(srv, password="guess", now=T0)
    late = srv.verify(bad, ALICE, lookup, T0 + 301)
    assert late.failed and late.reason is AuthFailure.WRONG_RESPONSE
    # Within the TTL it is fine.
    assert srv.verify(authorized(srv, now=T0), ALICE, lookup, T0 + 299).ok


def test_nonce_from_the_future_is_stale() -> None:
    srv = server()
    req = authorized(srv, now=T0 + 1000)
    assert srv.verify(req, ALICE, lookup, T0).stale


def test_nonce_from_another_source_is_rejected() -> None:
    srv = server()
    req = authorized(srv, peer=ALICE)
    result = srv.verify(req, MALLORY, lookup, T0 + 1)
    assert result.failed and result.reason is AuthFailure.FOREIGN_NONCE
    # …and did not consume the nonce-count: the real client can still use it.
    assert srv.verify(req, ALICE, lookup, T0 + 1).ok


def test_nonce_of_another_server_secret_or_realm_is_bad() -> None:
    other = DigestServer(REALM, b"another secret of 32 bytes......")
    req = authorized(other)
    assert server().verify(req, ALICE, lookup, T0 + 1).reason is AuthFailure.BAD_NONCE


@pytest.mark.parametrize(
    "nonce", ["", "x", "A" * 48, "!" * 48, "AAAAAAAPQkAAAAZeXXUp0btR0TMlgLLvqqFdN_-RAjDGzD7i"]
)
def test_forged_nonce_is_bad(nonce: str) -> None:
    srv = server()
    req = with_params(authorized(srv), "Authorization", nonce=nonce)
    result = srv.verify(req, ALICE, lookup, T0 + 1)
    assert result.failed and result.reason is AuthFailure.BAD_NONCE


def test_tampered_nonce_bit_is_bad() -> None:
    srv = server()
    req = authorized(srv)
    nonce = parse_auth_header(req.headers.get("Authorization") or "").params["nonce"]
    flipped = nonce[:5] + ("B" if nonce[5] != "B" else "C") + nonce[6:]  # inside the timestamp
    result = srv.verify(with_params(req, "Authorization", nonce=flipped), ALICE, lookup, T0 + 1)
    assert result.reason is AuthFailure.BAD_NONCE


def test_replayed_request_is_rejected_and_lower_nc_too() -> None:
    srv = server()
    req = register()
    challenge = srv.challenge(req, ALICE, T0)
    client = DigestClient()
    one = client.authorize(req, challenge, "alice", "correct horse", realm=REALM)
    two = client.authorize(req, challenge, "alice", "correct horse", realm=REALM)
    assert srv.verify(two, ALICE, lookup, T0 + 1).ok  # nc=2 first
    replay = srv.verify(two, ALICE, lookup, T0 + 2)
    assert replay.failed and replay.reason is AuthFailure.NC_REPLAY
    older = srv.verify(one, ALICE, lookup, T0 + 3)  # nc=1 < 2
    assert older.failed and older.reason is AuthFailure.NC_REPLAY


def test_wrong_password_does_not_consume_nonce_count() -> None:
    srv = server()
    req = register()
    challenge = srv.challenge(req, ALICE, T0)
    guess = DigestClient().authorize(req, challenge, "alice", "nope", realm=REALM)
    assert srv.verify(guess, ALICE, lookup, T0 + 1).reason is AuthFailure.WRONG_RESPONSE
    good = DigestClient().authorize(req, challenge, "alice", "correct horse", realm=REALM)
    assert srv.verify(good, ALICE, lookup, T0 + 2).ok


def test_nonce_table_is_bounded_and_eviction_never_reopens_replay() -> None:
    srv = server(max_nonces=4, nonce_ttl=300)
    requests = [authorized(srv, now=T0 + i) for i in range(10)]
    for i, req in enumerate(requests):
        assert srv.verify(req, ALICE, lookup, T0 + 10 + i).ok
        assert srv.nonce_table_size() <= 4
    # The first ones were evicted: replaying them is not accepted (at most re-challenged).
    for req in requests:
        assert not srv.verify(req, ALICE, lookup, T0 + 30).ok


def test_nonce_table_is_pruned_by_age() -> None:
    srv = server(nonce_ttl=60)
    for i in range(5):
        assert srv.verify(authorized(srv, now=T0 + i), ALICE, lookup, T0 + i).ok
    assert srv.nonce_table_size() == 5
    assert srv.verify(authorized(srv, now=T0 + 500), ALICE, lookup, T0 + 500).ok
    assert srv.nonce_table_size() == 1


# -- what each failure is reported as ---------------------------------------------------------


def test_failure_reasons() -> None:
    srv = server(algorithms=("SHA-256",))
    good = authorized(srv)
    H = "Authorization"

    def reason(req: Request) -> AuthFailure | None:
        return srv.verify(req, ALICE, lookup, T0 + 1).reason

    assert reason(register()) is AuthFailure.NO_CREDENTIALS
    assert reason(authorized(srv, "nobody", "x")) is AuthFailure.UNKNOWN_USER
    assert reason(authorized(srv, "alice", "wrong")) is AuthFailure.WRONG_RESPONSE
    assert reason(with_params(good, H, realm="evil.example")) is AuthFailure.REALM_MISMATCH
    assert reason(with_params(good, H, uri="sip:other.example")) is AuthFailure.URI_MISMATCH
    assert reason(with_params(good, H, algorithm="MD5")) is AuthFailure.UNSUPPORTED_ALGORITHM
    assert reason(with_params(good, H, algorithm="SHA-1")) is AuthFailure.UNSUPPORTED_ALGORITHM
    assert reason(with_params(good, H, qop="auth-int")) is AuthFailure.UNSUPPORTED_QOP
    assert reason(with_params(good, H, qop=None, nc=None, cnonce=None)) is (
        AuthFailure.UNSUPPORTED_QOP
    )
    assert reason(with_params(good, H, nc="1")) is AuthFailure.MALFORMED
    assert reason(with_params(good, H, nc="0000000g")) is AuthFailure.MALFORMED
    assert reason(with_params(good, H, cnonce=None)) is AuthFailure.MALFORMED
    assert reason(with_params(good, H, response=None)) is AuthFailure.MALFORMED
    assert reason(with_params(good, H, opaque="xyz")) is AuthFailure.BAD_OPAQUE
    assert reason(with_params(good, H, response="0" * 64)) is AuthFailure.WRONG_RESPONSE
    assert reason(with_params(good, H, response="ü" * 64)) is AuthFailure.WRONG_RESPONSE
    # A different user's name with alice's response is simply wrong.
    assert reason(with_params(good, H, username="bob")) is AuthFailure.WRONG_RESPONSE
    # An equivalent spelling of the Request-URI is accepted (RFC 3261 §19.1.4).
    assert (
        srv.verify(with_params(good, H, uri="sip:PBX.example.com"), ALICE, lookup, T0).reason
        is AuthFailure.WRONG_RESPONSE
    )  # accepted as the same URI; the hash covers the spelling
    # Credentials stored for another realm are treated as an unknown user.
    foreign = {"alice": make_credentials("alice", "other.realm", "correct horse")}
    assert srv.verify(good, ALICE, foreign.get, T0 + 1).reason is AuthFailure.UNKNOWN_USER
    # Non-Digest schemes and garbage.
    basic = register()
    basic.headers.add("Authorization", "Basic YWxpY2U6cGFzcw==")
    assert reason(basic) is AuthFailure.MALFORMED
    assert srv.verify(good, ALICE, lookup, T0 + 1).ok


def test_is_guess_marks_password_attempts_only() -> None:
    srv = server()
    results = {
        "unknown": srv.verify(authorized(srv, "nobody", "x"), ALICE, lookup, T0),
        "wrong": srv.verify(authorized(srv, "alice", "x"), ALICE, lookup, T0),
        "none": srv.verify(register(), ALICE, lookup, T0),
        "foreign": srv.verify(authorized(srv), MALLORY, lookup, T0),
    }
    assert {k for k, r in results.items() if r.is_guess} == {"unknown", "wrong"}


def test_picks_our_realm_among_several_credentials() -> None:
    srv = server()
    req = authorized(srv)
    headers = req.headers.copy()
    headers.insert(
        "Authorization",
        'Digest username="x", realm="upstream.example", nonce="n", uri="sip:a", response="r"',
    )
    assert srv.verify(Request(req.method, req.uri, headers), ALICE, lookup, T0).ok


# -- the digest uri: SIPp 3.6's host:port form (issue 11 §4) -----------------------------------


def invite_to(ruri: str) -> Request:
    raw = (
        f"INVITE {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {ALICE}:5060;branch=z9hG4bKinv1;rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@{REALM}>;tag=f1\r\n"
        f"To: <sip:202@{REALM}>\r\n"
        "Call-ID: inv-1@10.0.0.5\r\n"
        "CSeq: 2 INVITE\r\n"
        f"Contact: <sip:alice@{ALICE}:5060>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    msg = parse_message(raw)
    assert isinstance(msg, Request)
    return msg


def answered_over(srv: DigestServer, request: Request, digest_uri: str,
                  password: str = "correct horse", nc: str = "00000001") -> Request:
    """``request`` with Proxy-Authorization computed over ``digest_uri`` (as SIPp does)."""
    challenge = srv.challenge(request, ALICE, T0)
    nonce = parse_auth_header(challenge.headers.get("Proxy-Authenticate") or "").params["nonce"]
    ha1 = compute_ha1("MD5", "alice", REALM, password)
    response = compute_response("MD5", ha1, method=request.method, uri=digest_uri, nonce=nonce,
                                qop="auth", nc=nc, cnonce="abc")
    value = format_auth_header("Digest", [
        ("username", "alice", True), ("realm", REALM, True), ("nonce", nonce, True),
        ("uri", digest_uri, True), ("response", response, True), ("algorithm", "MD5", False),
        ("qop", "auth", False), ("nc", nc, False), ("cnonce", "abc", True),
    ])
    headers = request.headers.copy()
    headers.add("Proxy-Authorization", value)
    return Request(request.method, request.uri, headers, request.body)


RURI = "sip:202@192.0.2.7:5070"


@pytest.mark.parametrize("digest_uri", [
    "sip:192.0.2.7:5070",  # SIPp 3.6 [authentication] without -auth_uri
    RURI,
    "sip:202@192.0.2.7:5070;transport=udp",  # §19.1.4: a parameter only one side has
    "sip:192.0.2.7:5070;transport=udp",
])
def test_lenient_digest_uri_accepts_the_request_uris_host_and_port(digest_uri: str) -> None:
    srv = server(proxy=True, algorithms=("MD5",))
    assert srv.verify(answered_over(srv, invite_to(RURI), digest_uri), ALICE, lookup, T0).ok


@pytest.mark.parametrize("digest_uri", [
    "sip:192.0.2.7",  # no port: not the same host and port
    "sip:192.0.2.7:5071",
    "sip:192.0.2.8:5070",
    "sip:203@192.0.2.7:5070",  # another user
    "sips:192.0.2.7:5070",
    "sip:x:pw@192.0.2.7:5070",
    "tel:+4930123",
    "not a uri",
])
def test_lenient_digest_uri_refuses_another_target(digest_uri: str) -> None:
    srv = server(proxy=True, algorithms=("MD5",))
    result = srv.verify(answered_over(srv, invite_to(RURI), digest_uri), ALICE, lookup, T0)
    assert result.reason is AuthFailure.URI_MISMATCH


def test_lenient_digest_uri_still_needs_the_hash_over_the_uri_given() -> None:
    srv = server(proxy=True, algorithms=("MD5",))
    req = answered_over(srv, invite_to(RURI), "sip:192.0.2.7:5070")
    # the hash is over the host:port form; claiming the full Request-URI instead breaks it
    swapped = with_params(req, "Proxy-Authorization", uri=RURI)
    assert srv.verify(swapped, ALICE, lookup, T0).reason is AuthFailure.WRONG_RESPONSE
    wrong = answered_over(srv, invite_to(RURI), "sip:192.0.2.7:5070", password="nope")
    assert srv.verify(wrong, ALICE, lookup, T0).reason is AuthFailure.WRONG_RESPONSE
    # and the host:port form is replay-protected like any other
    assert srv.verify(req, ALICE, lookup, T0).ok
    assert srv.verify(req, ALICE, lookup, T0).reason is AuthFailure.NC_REPLAY


def test_strict_digest_uri_refuses_the_host_port_form() -> None:
    srv = server(proxy=True, algorithms=("MD5",), strict_uri=True)
    req = invite_to(RURI)
    result = srv.verify(answered_over(srv, req, "sip:192.0.2.7:5070"), ALICE, lookup, T0)
    assert result.reason is AuthFailure.URI_MISMATCH
    assert srv.verify(answered_over(srv, req, RURI), ALICE, lookup, T0).ok
    ipv6 = invite_to("sip:202@[2001:db8::1]:5070")
    assert srv.verify(answered_over(srv, ipv6, "sip:202@[2001:db8:0::1]:5070"), ALICE,
                      lookup, T0).ok


# -- enumeration: identical challenges --------------------------------------------------------


def test_unknown_user_wrong_password_and_no_credentials_get_identical_challenges() -> None:
    srv = server()
    cases = {
        "no credentials": register("alice"),
        "unknown user": authorized(srv, "mallory", "guess", request=register("mallory")),
        "wrong password": authorized(srv, "alice", "guess"),
        "known user, no credentials": register("bob"),
    }
    shapes = {}
    for name, req in cases.items():
        result = srv.verify(req, ALICE, lookup, T0 + 1)
        assert result.failed and not result.stale, name
        resp = srv.challenge(req, ALICE, T0 + 1, stale=result.stale)
        shapes[name] = challenge_shape(resp)
    first = next(iter(shapes.values()))
    assert first[0] == 401
    for name, shape in shapes.items():
        assert shape == first, name


def test_challenge_values_differ_only_in_nonce() -> None:
    srv = server()
    a = srv.challenge(register("alice"), ALICE, T0)
    b = srv.challenge(register("nobody"), ALICE, T0)
    pa = [dict(parse_auth_header(v).params) for v in a.headers.get_all("WWW-Authenticate")]
    pb = [dict(parse_auth_header(v).params) for v in b.headers.get_all("WWW-Authenticate")]
    for x, y in zip(pa, pb, strict=True):
        assert x.pop("nonce") != y.pop("nonce")
        assert x == y


# -- client safety -----------------------------------------------------------------------------


def test_client_refuses_challenge_for_another_realm() -> None:
    attacker = DigestServer("attacker.example", SECRET)
    req = register()
    challenge = attacker.challenge(req, ALICE, T0)
    with pytest.raises(LocalProtocolError, match="realm"):
        DigestClient().authorize(req, challenge, "trunkuser", "trunkpass", realm=REALM)


def test_client_refuses_non_challenges_and_unusable_offers() -> None:
    req = register()
    client = DigestClient()
    ok = Response(200, "OK")
    with pytest.raises(LocalProtocolError):
        client.authorize(req, ok, "u", "p", realm=REALM)
    only_int = Response(401, "Unauthorized")
    only_int.headers.add("WWW-Authenticate", f'Digest realm="{REALM}", nonce="abc", qop="auth-int"')
    with pytest.raises(LocalProtocolError):
        client.authorize(req, only_int, "u", "p", realm=REALM)
    garbage = Response(401, "Unauthorized")
    garbage.headers.add("WWW-Authenticate", 'Digest realm="unterminated')
    garbage.headers.add("WWW-Authenticate", 'Basic realm="x"')
    with pytest.raises(LocalProtocolError):
        client.authorize(req, garbage, "u", "p", realm=REALM)


def test_client_stops_when_credentials_are_rejected_but_follows_stale() -> None:
    srv = server()
    client = DigestClient()
    req = register()
    answered = client.authorize(req, srv.challenge(req, ALICE, T0), "alice", "bad", realm=REALM)
    rejected = srv.challenge(answered, ALICE, T0 + 1)
    with pytest.raises(LocalProtocolError, match="rejected"):
        client.authorize(answered, rejected, "alice", "bad", realm=REALM)
    stale = srv.challenge(answered, ALICE, T0 + 1, stale=True)
    again = client.authorize(answered, stale, "alice", "correct horse", realm=REALM)
    assert len(again.headers.get_all("Authorization")) == 1  # replaced, not added
    assert srv.verify(again, ALICE, lookup, T0 + 2).ok


def test_client_prefers_sha256_even_when_offered_last() -> None:
    resp = Response(401, "Unauthorized")
    resp.headers.add(
        "WWW-Authenticate", f'Digest realm="{REALM}", nonce="n1", algorithm=MD5, qop="auth"'
    )
    resp.headers.add(
        "WWW-Authenticate",
        f'Digest realm="{REALM}", nonce="n1", algorithm=sha-256, qop="auth,auth-int"',
    )
    out = DigestClient().authorize(register(), resp, "alice", "pw", realm=REALM)
    assert (
        parse_auth_header(out.headers.get("Authorization") or "").params["algorithm"] == "SHA-256"
    )


def test_client_answers_rfc2069_challenge_without_qop() -> None:
    resp = Response(401, "Unauthorized")
    resp.headers.add("WWW-Authenticate", f'Digest realm="{REALM}", nonce="legacy"')
    req = register()
    out = DigestClient().authorize(req, resp, "alice", "pw", realm=REALM)
    p = parse_auth_header(out.headers.get("Authorization") or "").params
    assert "qop" not in p and "nc" not in p and "cnonce" not in p
    assert p["algorithm"] == "MD5"
    ha1 = compute_ha1("MD5", "alice", REALM, "pw")
    assert p["response"] == compute_response(
        "MD5", ha1, method="REGISTER", uri=str(req.uri), nonce="legacy"
    )


def test_client_refuses_header_injection() -> None:
    srv = server()
    req = register()
    with pytest.raises(LocalProtocolError):
        DigestClient().authorize(
            req, srv.challenge(req, ALICE, T0), "alice\r\nX: y", "pw", realm=REALM
        )


# -- parsing -----------------------------------------------------------------------------------


def test_parse_quoted_strings_escapes_and_commas() -> None:
    h = parse_auth_header(
        'Digest  realm="a, \\"b\\" \\\\ c",nonce=xyz ,, qop="auth,auth-int", Stale=TRUE,'
    )
    assert h.scheme == "Digest"
    assert dict(h.params) == {
        "realm": 'a, "b" \\ c',
        "nonce": "xyz",
        "qop": "auth,auth-int",
        "stale": "TRUE",
    }
    assert parse_auth_header("digest realm=x").is_digest


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "Digest realm",
        'Digest realm="unterminated',
        "Digest realm=a realm2=b",
        "Digest realm=a, realm=b",
        'Digest realm="a"x',
        "Digest =a",
        'Digest realm="a" , nonce',
        "Digest realm=a" + ", x=1" * 40,
        "Digest realm=" + "a" * 5000,
        '"Digest" realm=a',
    ],
)
def test_parse_rejects_garbage(text: str) -> None:
    with pytest.raises(ParseError):
        parse_auth_header(text)


_names = st.from_regex(r"[a-z][a-z0-9\-]{0,8}", fullmatch=True)
_values = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\x00"),
    max_size=30,
)


@given(st.dictionaries(_names, _values, max_size=10))
def test_format_parse_round_trip(params: dict[str, str]) -> None:
    text = format_auth_header("Digest", [(k, v, True) for k, v in params.items()])
    parsed = parse_auth_header(text)
    assert parsed.scheme == "Digest"
    assert dict(parsed.params) == params


@given(st.text(max_size=300))
def test_parse_raises_only_parse_error(text: str) -> None:
    try:
        parse_auth_header(text)
    except ParseError:
        pass


_GOOD = None


def _good_value() -> str:
    global _GOOD
    if _GOOD is None:
        _GOOD = authorized(server()).headers.get("Authorization")
    assert _GOOD is not None
    return _GOOD


@given(st.text(max_size=300))
def test_verify_arbitrary_authorization_text_fails_cleanly(text: str) -> None:
    srv = server()
    req = register()
    req.headers.add("Authorization", text)
    result = srv.verify(req, ALICE, lookup, T0)
    assert result.status is AuthStatus.FAILED
    assert result.reason is not None


@given(st.integers(min_value=0, max_value=400), st.text(max_size=20), st.integers(0, 40))
def test_verify_mutated_authorization_fails_cleanly(pos: int, insert: str, cut: int) -> None:
    good = _good_value()
    pos = min(pos, len(good))
    mutated = good[:pos] + insert + good[pos + cut :]
    srv = server()
    req = register()
    req.headers.add("Authorization", mutated)
    result = srv.verify(req, ALICE, lookup, T0 + 1)
    # Never raises; success only if the mutation left every signed value intact.
    assert result.status in (AuthStatus.OK, AuthStatus.FAILED)
    if result.ok:
        before = parse_auth_header(good).params
        after = parse_auth_header(mutated).params
        for key in ("username", "realm", "nonce", "uri", "nc", "cnonce", "qop"):
            assert after[key] == before[key]
        assert after["response"].lower() == before["response"]


def test_server_rejects_bad_configuration() -> None:
    with pytest.raises(LocalProtocolError):
        DigestServer(REALM, b"short")
    with pytest.raises(LocalProtocolError):
        DigestServer("a\r\nb", SECRET)
    with pytest.raises(LocalProtocolError):
        DigestServer(REALM, SECRET, algorithms=("SHA-1",))
    with pytest.raises(LocalProtocolError):
        make_credentials("a", "b", "c", algorithms=("CRC32",))


def test_client_refuses_stale_challenge_repeating_the_used_nonce() -> None:
    req = register()
    first = Response(401, "Unauthorized")
    first.headers.add("WWW-Authenticate", f'Digest realm="{REALM}", nonce="same", qop="auth"')
    client = DigestClient()
    answered = client.authorize(req, first, "alice", "pw", realm=REALM)
    again = Response(401, "Unauthorized")
    again.headers.add(
        "WWW-Authenticate", f'Digest realm="{REALM}", nonce="same", qop="auth", stale=true'
    )
    with pytest.raises(LocalProtocolError, match="rejected"):
        client.authorize(answered, again, "alice", "pw", realm=REALM)


def test_long_secret_is_accepted() -> None:
    srv = DigestServer(REALM, b"s" * 200)
    assert srv.verify(authorized(srv), ALICE, lookup, T0 + 1).ok


def test_restart_with_same_secret_does_not_reopen_replay() -> None:
    before = server()
    req = authorized(before, now=T0)
    assert before.verify(req, ALICE, lookup, T0 + 1).ok
    after = server(start_time=T0 + 2)  # restarted: the nonce-count table is gone
    result = after.verify(req, ALICE, lookup, T0 + 3)
    assert result.stale and not result.ok
    assert after.verify(authorized(after, now=T0 + 3), ALICE, lookup, T0 + 4).ok
