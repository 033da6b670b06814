"""pbx.trunks without a network: trunk config, inbound identification and header stripping,
the outbound request builder, and answering a carrier's challenge only under the trunk's rules."""

from __future__ import annotations

import pytest

from pbx.trunks import (
    ChallengeRefusedError,
    TrunkConfig,
    TrunkManager,
    answer_challenge,
    build_outbound_request,
    identify_trunk,
    parse_source,
    sanitize_inbound,
)
from sipcore.digest import DigestClient, DigestServer, make_credentials, parse_auth_header
from sipcore.errors import LocalProtocolError
from sipcore.message import Request, parse_message
from sipcore.transport import Peer
from sipcore.uri import SipURI

CONTACT = "sip:192.0.2.1:5060"


def trunk(**kw: object) -> TrunkConfig:
    args: dict[str, object] = dict(name="telco", kind="ip", host="203.0.113.10", realm="telco.example",
                                   username="pbx1", password="pw-telco")
    args.update(kw)
    return TrunkConfig(**args)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"name": ""}, "trunk.name"),
        ({"kind": "sip"}, "trunk.kind"),
        ({"host": ""}, "trunk.host"),
        ({"host": "a b"}, "trunk.host"),
        ({"port": 0}, "trunk.port"),
        ({"port": 70000}, "trunk.port"),
        ({"transport": "sctp"}, "trunk.transport"),
        ({"kind": "register", "username": ""}, "trunk.username"),
        ({"kind": "register", "register_expiry": 0}, "trunk.register_expiry"),
        ({"allowed_sources": ("not-an-ip",)}, r"trunk.allowed_sources\[0\]: allowed source"),
        ({"allowed_sources": ("10.0.0.1", "1.2.3.4:99999")},
         r"trunk.allowed_sources\[1\]: .* port 99999 is outside 1-65535"),
    ],
)
def test_bad_config_names_the_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        trunk(**kw)


def test_password_is_not_in_repr() -> None:
    assert "pw-telco" not in repr(trunk())


def test_uri_host_and_peer() -> None:
    t = trunk(host="2001:db8::5", port=5061, transport="tls")
    assert t.uri_host == "[2001:db8::5]" and t.uri_params == ";transport=tls"
    assert t.peer == Peer("tls", "2001:db8::5", 5061)
    assert trunk(port=5080).uri_host == "203.0.113.10:5080"
    assert trunk(domain="telco.example").aor_domain == "telco.example"
    assert trunk().aor_domain == "203.0.113.10"


# ------------------------------------------------------------------------------------ sources
@pytest.mark.parametrize(
    ("rule", "peer", "match"),
    [
        ("203.0.113.10", Peer("udp", "203.0.113.10", 5060), True),
        ("203.0.113.10", Peer("tcp", "203.0.113.10", 40000), True),
        ("203.0.113.10", Peer("udp", "203.0.113.11", 5060), False),
        ("203.0.113.0/24", Peer("udp", "203.0.113.99", 5060), True),
        ("203.0.113.0/24", Peer("udp", "203.0.114.1", 5060), False),
        ("203.0.113.10:5060", Peer("udp", "203.0.113.10", 5060), True),
        ("203.0.113.10:5060", Peer("udp", "203.0.113.10", 5061), False),
        ("tcp:203.0.113.10", Peer("udp", "203.0.113.10", 5060), False),
        ("tcp:203.0.113.10", Peer("tcp", "203.0.113.10", 5060), True),
        ("tls:[2001:db8::1]:5061", Peer("tls", "2001:db8::1", 5061), True),
        ("tls:[2001:db8::1]:5061", Peer("tls", "2001:db8::1", 5062), False),
        ("2001:db8::/32", Peer("udp", "[2001:db8:1::7]", 5060), True),
        ("2001:db8::/32", Peer("udp", "203.0.113.10", 5060), False),
        ("203.0.113.10", Peer("udp", "::ffff:203.0.113.10", 5060), True),  # dual-stack socket
        ("203.0.113.10", Peer("udp", "carrier.example", 5060), False),
    ],
)
def test_source_rules(rule: str, peer: Peer, match: bool) -> None:
    assert parse_source(rule).matches(peer) is match


def test_identify_by_source_and_default_to_the_host() -> None:
    a = trunk(name="a", host="203.0.113.10")
    b = trunk(name="b", host="sbc.carrier.example", allowed_sources=("198.51.100.0/28",))
    named = trunk(name="c", host="sbc.other.example")  # a name and no sources: matches nothing
    trunks = [a, b, named]
    assert identify_trunk(trunks, Peer("udp", "203.0.113.10", 5060)) is a
    assert identify_trunk(trunks, Peer("udp", "198.51.100.7", 5060)) is b
    assert identify_trunk(trunks, Peer("udp", "198.51.100.77", 5060)) is None
    assert identify_trunk(trunks, Peer("udp", "127.0.0.1", 5060)) is None
    assert named.sources == ()


# ------------------------------------------------------------------------------------ inbound
SMUGGLED = (
    b"INVITE sip:+493012345@192.0.2.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.66;branch=z9hG4bKabc\r\n"
    b"From: <sip:100@192.0.2.1>;tag=1\r\nTo: <sip:+493012345@192.0.2.1>\r\n"
    b"Call-ID: c1\r\nCSeq: 1 INVITE\r\n"
    b"P-Asserted-Identity : <sip:+4930999@telco>\r\n"  # whitespace before the colon
    b"p-asserted-identity: <sip:+4930888@telco>\r\n"
    b"P-Preferred-Identity: <sip:+4930777@telco>\r\n"
    b"Remote-party-ID: <sip:+4930666@telco>;party=calling\r\n"
    b"route: <sip:203.0.113.10;lr>\r\n"
    b"P-Charging-Vector: icid-value=1\r\n"
    b"Privacy: none\r\nSubject: hello\r\nContent-Length: 0\r\n\r\n"
)


def _smuggled() -> Request:
    message = parse_message(SMUGGLED)
    assert isinstance(message, Request)
    return message


def test_untrusted_request_loses_identity_routing_and_private_headers() -> None:
    request = _smuggled()
    removed = sanitize_inbound(request, trusted=False)
    assert removed == ["p-asserted-identity", "p-charging-vector", "p-preferred-identity",
                       "remote-party-id", "route"]
    names = {name.lower() for name, _ in request.headers.items()}
    assert not {n for n in names if n.startswith("p-")} and "route" not in names
    assert "remote-party-id" not in names
    assert {"privacy", "subject", "from", "via"} <= names
    assert request.routes == []


def test_trusted_trunk_keeps_its_asserted_identity() -> None:
    request = _smuggled()
    assert sanitize_inbound(request, trusted=True) == []
    assert len(request.headers.get_all("P-Asserted-Identity")) == 2


def test_manager_inbound_identifies_and_strips_per_trust() -> None:
    trusted = trunk(name="trusted", host="203.0.113.10", trusted=True)
    untrusted = trunk(name="plain", host="203.0.113.20")
    manager = TrunkManager([trusted, untrusted])
    request = _smuggled()
    assert manager.inbound(request, Peer("udp", "203.0.113.10", 5060)) is trusted
    assert "P-Asserted-Identity" in request.headers
    request = _smuggled()
    assert manager.inbound(request, Peer("udp", "203.0.113.20", 5060)) is untrusted
    assert "P-Asserted-Identity" not in request.headers
    request = _smuggled()  # a phone or a stranger
    assert manager.inbound(request, Peer("udp", "198.51.100.66", 5060)) is None
    assert "P-Asserted-Identity" not in request.headers and "Route" not in request.headers


def test_duplicate_trunk_names_are_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        TrunkManager([trunk(), trunk()])


# ----------------------------------------------------------------------------------- outbound
def test_outbound_invite_to_a_trusted_trunk() -> None:
    t = trunk(trusted=True, domain="telco.example")
    body = b"v=0\r\n"
    request = build_outbound_request(
        t, number="+49301234567", caller_did="+49309876543", caller_name="Anna Beispiel",
        contact=CONTACT, call_id="call-1", from_tag="tag-1", body=body,
    )
    assert "Via" not in request.headers  # the endpoint adds its own
    request.headers.insert("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx1;rport")
    again = parse_message(request.serialize())  # what the carrier reads
    assert isinstance(again, Request)
    assert str(again.uri) == "sip:+49301234567@203.0.113.10"
    assert isinstance(again.uri, SipURI) and again.uri.user == "+49301234567"
    assert again.from_.display == "Anna Beispiel"
    assert str(again.from_.uri) == "sip:+49309876543@telco.example" and again.from_tag == "tag-1"
    assert str(again.to.uri) == "sip:+49301234567@telco.example" and again.to_tag is None
    assert again.headers.get("P-Asserted-Identity") == "<sip:+49309876543@telco.example>"
    assert again.cseq.seq == 1 and again.cseq.method == "INVITE" and again.call_id == "call-1"
    assert again.contacts[0].uri == SipURI(host="192.0.2.1", port=5060)
    assert again.body == body and again.content_type == "application/sdp"
    assert "Privacy" not in again.headers


def test_outbound_invite_to_an_untrusted_trunk_has_no_asserted_identity() -> None:
    request = build_outbound_request(trunk(transport="tcp", port=5080), number="+4930123",
                                     caller_did="+4930999", contact=CONTACT)
    assert "P-Asserted-Identity" not in request.headers
    assert str(request.uri) == "sip:+4930123@203.0.113.10:5080;transport=tcp"
    assert str(request.from_.uri) == "sip:+4930999@203.0.113.10"


@pytest.mark.parametrize("trusted", [True, False])
def test_clir_sends_anonymous_with_privacy(trusted: bool) -> None:
    request = build_outbound_request(trunk(trusted=trusted), number="+4930123",
                                     caller_did="+4930999", contact=CONTACT, anonymous=True,
                                     caller_name="Secret Person")
    assert str(request.from_.uri) == "sip:anonymous@anonymous.invalid"
    assert request.from_.display == "Anonymous"
    assert request.headers.get("Privacy") == "id"
    assert "Secret Person" not in request.serialize().decode()
    # the real identity goes only to a trusted trunk (which must withhold it: Privacy: id)
    assert ("P-Asserted-Identity" in request.headers) is trusted


def test_emergency_short_code_is_dialable() -> None:
    request = build_outbound_request(trunk(), number="112", caller_did="+4930999",
                                     contact=CONTACT)
    assert str(request.uri) == "sip:112@203.0.113.10"


@pytest.mark.parametrize("number", ["", "0301234567;x", "sip:evil", "+49 30", "1" * 16,
                                    "+4930\r\nRoute: <sip:x>"])
def test_undialable_numbers_are_local_errors(number: str) -> None:
    with pytest.raises(LocalProtocolError):
        build_outbound_request(trunk(), number=number, caller_did=None, contact=CONTACT)
    with pytest.raises(LocalProtocolError):
        build_outbound_request(trunk(), number="+4930", caller_did=number or "x",
                               contact=CONTACT)


# ---------------------------------------------------------------------------------- challenges
def _carrier(realm: str = "telco.example", proxy: bool = True) -> DigestServer:
    return DigestServer(realm, b"c" * 32, algorithms=("SHA-256", "MD5"), proxy=proxy)


def _sent_invite(t: TrunkConfig) -> Request:
    request = build_outbound_request(t, number="+4930123", caller_did="+4930999",
                                     contact=CONTACT, call_id="call-7", cseq=1)
    # what the endpoint did when sending it
    request.headers.insert("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKsent1;rport")
    return request


@pytest.mark.parametrize("proxy", [True, False])
def test_carrier_challenge_is_answered_with_the_trunk_credentials(proxy: bool) -> None:
    t = trunk()
    carrier = _carrier(proxy=proxy)
    sent = _sent_invite(t)
    challenge = carrier.challenge(sent, "192.0.2.1", 100.0)
    again = answer_challenge(t, DigestClient(), sent, challenge, sent_to=t.peer,
                             source=Peer("udp", "203.0.113.10", 5060))
    assert again.cseq.seq == 2 and again.cseq.method == "INVITE"
    assert again.call_id == "call-7" and again.from_tag == sent.from_tag
    assert "Via" not in again.headers
    header = "Proxy-Authorization" if proxy else "Authorization"
    assert parse_auth_header(again.headers.get(header) or "").params["username"] == "pbx1"
    creds = make_credentials("pbx1", "telco.example", "pw-telco")
    assert carrier.verify(again, "192.0.2.1", {"pbx1": creds}.get, 100.0).ok


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("realm", "evil.example"),
        ("sent_to", "request went to"),
        ("source", "challenge came from"),
        ("no_realm", "no realm"),
        ("not_challenge", "not a challenge"),
        ("rejected", "rejected"),
    ],
)
def test_challenge_refused(case: str, message: str) -> None:
    t = trunk(realm="" if case == "no_realm" else "telco.example")
    carrier = _carrier(realm="evil.example" if case == "realm" else "telco.example")
    sent = _sent_invite(t)
    challenge = carrier.challenge(sent, "192.0.2.1", 100.0)
    sent_to, source = t.peer, None
    if case == "sent_to":
        sent_to = Peer("udp", "198.51.100.66", 5060)
    if case == "source":
        source = Peer("udp", "198.51.100.66", 5060)
    if case == "not_challenge":
        challenge.status = 403
    client = DigestClient()
    if case == "rejected":  # our credentials were already in the request and got refused
        sent = answer_challenge(t, client, sent, challenge, sent_to=sent_to)
        challenge = carrier.challenge(sent, "192.0.2.1", 100.0)
    with pytest.raises(ChallengeRefusedError, match=message):
        answer_challenge(t, client, sent, challenge, sent_to=sent_to, source=source)


def test_manager_answer_challenge_logs_and_returns_none_when_refused() -> None:
    t = trunk()
    manager = TrunkManager([t])
    sent = _sent_invite(t)
    evil = _carrier(realm="evil.example").challenge(sent, "192.0.2.1", 1.0)
    assert manager.answer_challenge("telco", sent, evil, sent_to=t.peer) is None
    assert manager.answer_challenge("nope", sent, evil, sent_to=t.peer) is None
    assert manager.health()["telco"]["refused_challenges"] == 1
    good = _carrier().challenge(sent, "192.0.2.1", 1.0)
    answered = manager.answer_challenge("telco", sent, good, sent_to=t.peer)
    assert answered is not None and "Proxy-Authorization" in answered.headers


def test_health_without_a_running_endpoint() -> None:
    manager = TrunkManager([trunk(), trunk(name="reg", kind="register")])
    health = manager.health()
    assert health["telco"]["state"] == "ip" and health["reg"]["state"] == "idle"
    assert manager.states() == {"telco": "ip", "reg": "idle"}
    with pytest.raises(RuntimeError):
        manager.contact_for(trunk())


# ------------------------------------------------------------------------------ store rows
class _Row:
    """The shape of pbx.store.Trunk (duck-typed: TrunkConfig.from_store reads attributes)."""

    def __init__(self, **kw: object) -> None:
        defaults: dict[str, object] = dict(
            id=1, tenant_id=7, name="telco", kind="register", host="203.0.113.10", port=5080,
            transport="tcp", username="pbx1", password="pw", realm="telco.example",
            allowed_sources=("203.0.113.0/24",), trusted=True, register_expiry=900)
        defaults.update(kw)
        self.__dict__.update(defaults)


def test_from_store_row_keys_by_tenant() -> None:
    config = TrunkConfig.from_store(_Row(), domain="telco.example")  # type: ignore[arg-type]
    assert config.key == "7/telco" and config.tenant_id == 7
    assert (config.kind, config.port, config.transport, config.register_expiry) == \
        ("register", 5080, "tcp", 900)
    assert config.trusted and config.aor_domain == "telco.example"
    assert config.matches_source(Peer("tcp", "203.0.113.99", 1234))
    other = TrunkConfig.from_store(_Row(tenant_id=8))  # type: ignore[arg-type]
    manager = TrunkManager([config, other])  # same name in two tenants
    assert set(manager.trunks) == {"7/telco", "8/telco"}
    assert trunk().key == "telco"


@pytest.mark.parametrize(("kw", "field"), [({"kind": "sip"}, "trunk.kind"),
                                           ({"transport": "sctp"}, "trunk.transport"),
                                           ({"port": 0}, "trunk.port")])
def test_from_store_bad_row(kw: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        TrunkConfig.from_store(_Row(**kw))  # type: ignore[arg-type]
