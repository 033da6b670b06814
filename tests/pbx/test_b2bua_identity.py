"""What the far ends see of a caller (RFC 3323/3325) when the B2BUA builds the INVITEs: CLIR
(anonymous From, ``Privacy: id``, P-Asserted-Identity only toward a trusted trunk), the per-call
codes ``*67``/``*65``, the displayed number, a phone's own ``Privacy: id``, and anonymous
rejection (433, with the announcement as early media when a prompt can be played, without it
while none can).

The B2BUA runs with a fake SIP endpoint (records what would be sent), a real media engine on
loopback and the real store → directory → router → features; user 100 calls from a
digest-authenticated phone, user 101 has one registered device."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog.testing

from features import default_features
from media.aio import MediaEngine
from media.port import Frame
from pbx.b2bua import B2bua
from pbx.callcontrol import CallRecord, FeatureRegistry, Prompt
from pbx.directory import Directory
from pbx.origin import asserted_number, presentation_of
from pbx.routing.router import Router
from pbx.store import Store
from pbx.trunks import TrunkConfig
from sipcore.digest import DigestClient, DigestServer
from sipcore.message import Request, parse_message
from sipcore.registrar import Binding
from sipcore.transaction import RequestReceived
from sipcore.transport import Peer
from sipcore.uri import SipURI
from tests.pbx.test_b2bua_trunk_unresolved import FakeSip, FakeTrunks, LogRecorder, until

REALM = "asyncpbx"
PHONE = Peer("udp", "127.0.0.1", 5099)
CARRIER = Peer("udp", "192.0.2.7", 5060)
DEVICE_101 = "sip:101@127.0.0.1:5098"
DID_100, DID_100B, DID_101 = "+49309876543", "+49309876544", "+49309876501"
ANONYMOUS_FROM = '"Anonymous" <sip:anonymous@anonymous.invalid>'


class CarrierTrunks(FakeTrunks):
    """The fake trunk manager, recognising the carrier's address as the trunk."""

    def inbound(self, request: Request, peer: Peer) -> TrunkConfig | None:
        trunk = next(iter(self.trunks.values()))
        return trunk if peer.host == CARRIER.host else None


class Registrar:
    """User 101 has one registered device."""

    def bindings(self, aor: str, now: float) -> list[Binding]:
        if not aor.startswith("sip:101@"):
            return []
        return [Binding(aor=aor, uri=DEVICE_101, contact=f"<{DEVICE_101}>",
                        expires_at=now + 600)]


class Announcement:
    """A prompt of ``frames`` 20 ms frames (then it runs dry)."""

    def __init__(self, rate: int, frames: int = 5) -> None:
        self.sample_rate = rate
        self.left = frames

    def get_frame(self) -> Frame | None:
        if self.left <= 0:
            return None
        self.left -= 1
        return np.full(self.sample_rate // 50, 1000, np.int16)

    def put_frame(self, frame: Frame) -> None:
        pass


def invite(call_id: str, dialled: str, *, sender: str = "100", extra: str = "",
           host: str = "127.0.0.1", via: Peer = PHONE) -> Request:
    sdp = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
           "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")
    text = (f"INVITE sip:{dialled}@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {via.host}:{via.port};branch=z9hG4bK-{call_id};rport\r\n"
            f"From: <sip:{sender}@{host}>;tag=caller1\r\n"
            f"To: <sip:{dialled}@127.0.0.1>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:{sender}@{via.host}:{via.port}>\r\nMax-Forwards: 70\r\n{extra}"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}")
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


class Pbx:
    """The B2BUA and its store, with helpers to set settings and place calls."""

    def __init__(self, b2b: B2bua, sip: FakeSip, store: Store, log: LogRecorder,
                 records: list[CallRecord]) -> None:
        self.b2b, self.sip, self.store, self.log, self.records = b2b, sip, store, log, records

    def set(self, ext: str, feature: str, **values: Any) -> None:
        schema = self.b2b.services.registry.schema(feature)
        assert schema is not None
        self.store.set_feature_settings(self.store.user(ext).id, feature, schema, values)

    async def call(self, call_id: str, dialled: str, extra: str = "") -> Request:
        """100 dials ``dialled``; the INVITE the PBX sent on for it."""
        first = invite(call_id, dialled, extra=extra)
        self.b2b.handle_event(RequestReceived(first, PHONE, f"{call_id}-tx1"))
        (challenge,) = self.sip.finals(f"{call_id}-tx1")
        again = DigestClient().authorize(first, challenge, "100", "pw100", realm=REALM)
        self.b2b.handle_event(RequestReceived(again, PHONE, f"{call_id}-tx2"))
        await until(lambda: bool(self.sent(call_id)))
        return self.sent(call_id)[0]

    def sent(self, call_id: str) -> list[Request]:
        """INVITEs the PBX sent for the caller's call ``call_id``."""
        calls = [c for c in self.b2b.calls.values() if c.record.call_id == call_id]
        ids = {invite.call_id for c in calls for leg in c.legs if leg is not c.caller
               and (invite := getattr(leg, "invite", None)) is not None}
        return [r for r, _ in self.sip.requests if r.method == "INVITE" and r.call_id in ids]


@asynccontextmanager
async def running(tmp_path: Path, *, trusted: bool = False) -> AsyncIterator[Pbx]:
    store = Store(tmp_path, domain="127.0.0.1")
    store.ensure_default_tenant("127.0.0.1", REALM)
    directory = Directory(store)
    store.add_user("100", "pw100", REALM, "Anna Schmidt")
    store.add_user("101", "pw101", REALM, "Ben Weber")
    for did, ext in ((DID_100, "100"), (DID_100B, "100"), (DID_101, "101")):
        store.add_number(did, user=ext)
    row = store.add_trunk("carrier", kind="ip", host=CARRIER.host, trusted=trusted)
    trunk = TrunkConfig.from_store(row, tenant="default")
    sip, log = FakeSip(), LogRecorder()
    records: list[CallRecord] = []
    digest = DigestServer(REALM, b"n" * 32, proxy=True, algorithms=("MD5",))

    def lookup(username: str) -> Any:
        return directory.credentials(REALM, username)

    engine = MediaEngine("127.0.0.1", (48000, 48999))
    await engine.start()
    b2b = B2bua(sip, engine, digest=digest, lookup=lookup, registrar=Registrar(),  # type: ignore[arg-type]
                domain="127.0.0.1", user_exists=lambda ext: False, log=log, seclog=log,
                on_record=records.append, features=FeatureRegistry(default_features()))
    b2b.auth_for = lambda request: (digest, lookup)
    b2b.router = Router(directory)
    b2b.trunks = CarrierTrunks(trunk)  # type: ignore[assignment]
    b2b.services.directory = directory
    try:
        yield Pbx(b2b, sip, store, log, records)
    finally:
        await b2b.close()
        await engine.close()
        store.close()


def from_user(request: Request) -> str | None:
    uri = request.from_.uri
    assert isinstance(uri, SipURI)
    return uri.user


def header(request: Request, name: str) -> list[str]:
    return request.headers.get_all(name)


# -- toward a trunk -----------------------------------------------------------------------------


@pytest.mark.parametrize("trusted", [False, True])
async def test_clir_toward_a_trunk(tmp_path: Path, trusted: bool) -> None:
    async with running(tmp_path, trusted=trusted) as pbx:
        shown = await pbx.call("shown", "0301234567")
        assert from_user(shown) == DID_100 and header(shown, "Privacy") == []
        assert header(shown, "P-Asserted-Identity") == (
            [f"<sip:{DID_100}@{CARRIER.host}>"] if trusted else [])

        pbx.set("100", "clir", enabled=True)
        with structlog.testing.capture_logs() as logged:
            hidden = await pbx.call("hidden", "0301234567")
        assert str(hidden.headers.get("From")).startswith(ANONYMOUS_FROM)
        assert header(hidden, "Privacy") == ["id"]
        # only a trusted carrier learns who it is (and is asked to withhold it)
        assert header(hidden, "P-Asserted-Identity") == (
            [f"<sip:{DID_100}@{CARRIER.host}>"] if trusted else [])
        assert DID_100 not in str(hidden.headers.get("Contact"))
        assert "Anna" not in hidden.serialize().decode()
        # the PBX keeps the real identity: the history and the log
        assert next(r.caller for r in pbx.records if r.call_id == "hidden") == "100"
        assert [e["user"] for e in logged if e["event"] == "call.identity_withheld"] == ["100"]


async def test_star67_and_star65_choose_for_one_call(tmp_path: Path) -> None:
    async with running(tmp_path) as pbx:
        once = await pbx.call("once", "*670301234567")
        assert from_user(once) == "anonymous" and header(once, "Privacy") == ["id"]
        assert str(once.uri).startswith("sip:+49301234567@")  # routed without the prefix
        pbx.set("100", "clir", enabled=True)
        shown = await pbx.call("shown", "*650301234567")
        assert from_user(shown) == DID_100 and header(shown, "Privacy") == []


async def test_the_displayed_number_goes_to_the_carrier(tmp_path: Path) -> None:
    async with running(tmp_path, trusted=True) as pbx:
        pbx.set("100", "displayed_number", number=DID_100B)
        request = await pbx.call("displayed", "0301234567")
        assert from_user(request) == DID_100B
        assert header(request, "P-Asserted-Identity") == [f"<sip:{DID_100B}@{CARRIER.host}>"]


async def test_a_phone_asking_for_privacy_itself_is_withheld(tmp_path: Path) -> None:
    async with running(tmp_path) as pbx:
        request = await pbx.call("phone-private", "0301234567", extra="Privacy: id\r\n")
        assert from_user(request) == "anonymous" and header(request, "Privacy") == ["id"]


# -- toward a user ------------------------------------------------------------------------------


async def test_clir_toward_a_user(tmp_path: Path) -> None:
    async with running(tmp_path) as pbx:
        shown = await pbx.call("to-user-shown", "101")
        assert from_user(shown) == "100" and header(shown, "Privacy") == []
        pbx.set("100", "clir", enabled=True)
        hidden = await pbx.call("to-user-hidden", "101")
        assert str(hidden.uri) == DEVICE_101
        assert str(hidden.headers.get("From")).startswith(ANONYMOUS_FROM)
        assert header(hidden, "Privacy") == ["id"]
        assert header(hidden, "P-Asserted-Identity") == []
        assert "Anna" not in hidden.serialize().decode()


# -- anonymous rejection ------------------------------------------------------------------------


async def anonymous_call(pbx: Pbx, call_id: str) -> list[int]:
    """An anonymous caller from the carrier calls 101's DID; the statuses it got."""
    request = invite(call_id, DID_101, sender="anonymous", host="anonymous.invalid", via=CARRIER)
    pbx.b2b.handle_event(RequestReceived(request, CARRIER, f"{call_id}-tx"))
    await until(lambda: bool(pbx.sip.finals(f"{call_id}-tx")))
    return [r.status for r, tx in pbx.sip.responses if tx == f"{call_id}-tx"]


async def test_433_without_the_announcement_while_no_prompt_can_be_played(
        tmp_path: Path) -> None:
    async with running(tmp_path) as pbx:
        pbx.set("101", "anonymous_rejection", enabled=True)
        assert await anonymous_call(pbx, "anon-1") == [433]
        assert pbx.log.events("call.prompt_missing")[0]["prompt"] == "anonymous_rejected"
        assert pbx.sent("anon-1") == []  # the device never rang


async def test_433_after_the_announcement_as_early_media(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    async with running(tmp_path) as pbx:
        asked: list[Prompt] = []

        def prompt(p: Prompt, language: str, rate: int, tenant_id: int | None = None) -> Any:
            asked.append(p)
            return Announcement(rate)

        monkeypatch.setattr(pbx.b2b, "prompt", prompt)
        pbx.set("101", "anonymous_rejection", enabled=True)
        statuses = await anonymous_call(pbx, "anon-2")
        assert statuses == [183, 433]
        assert asked == [Prompt("anonymous_rejected")]
        (final,) = pbx.sip.finals("anon-2-tx")
        assert final.reason == "Anonymity Disallowed"


async def test_a_presented_caller_rings_with_rejection_on(tmp_path: Path) -> None:
    async with running(tmp_path) as pbx:
        pbx.set("101", "anonymous_rejection", enabled=True)
        request = invite("named", DID_101, sender="+4917012345", via=CARRIER)
        pbx.b2b.handle_event(RequestReceived(request, CARRIER, "named-tx"))
        await until(lambda: bool(pbx.sent("named")))
        assert from_user(pbx.sent("named")[0]) == "+4917012345"
        assert pbx.sip.finals("named-tx") == []


async def test_a_trusted_carriers_withheld_caller_is_kept_in_the_history(
        tmp_path: Path) -> None:
    async with running(tmp_path, trusted=True) as pbx:
        request = invite("asserted", DID_101, sender="anonymous", host="anonymous.invalid",
                         via=CARRIER, extra="P-Asserted-Identity: <sip:+4917012345@carrier>\r\n"
                                            "Privacy: id\r\n")
        pbx.b2b.handle_event(RequestReceived(request, CARRIER, "asserted-tx"))
        await until(lambda: bool(pbx.sent("asserted")))
        sent = pbx.sent("asserted")[0]
        assert str(sent.headers.get("From")).startswith(ANONYMOUS_FROM)  # the phone: anonymous
        assert header(sent, "P-Asserted-Identity") == []
        assert "+4917012345" not in sent.serialize().decode()
        (call,) = pbx.b2b.calls.values()
        assert call.record.caller == "+4917012345"  # the history: who it was


# -- reading the caller's INVITE ----------------------------------------------------------------


@pytest.mark.parametrize(("value", "number"), [
    ("<sip:+4917012345@carrier>", "+4917012345"),
    ('"Someone" <sip:+4917012345@carrier;user=phone>, <tel:+4917012345>', "+4917012345"),
    ("<tel:+4930123>", "+4930123"),
    ("<sip:carrier.example>", None),
    ("garbage <", None),
])
def test_asserted_number(value: str, number: str | None) -> None:
    request = invite("x", "101", extra=f"P-Asserted-Identity: {value}\r\n")
    assert asserted_number(request) == number
    assert asserted_number(invite("x", "101")) is None


@pytest.mark.parametrize(("sender", "host", "extra", "withheld"), [
    ("+4917012345", "carrier", "", False),
    ("anonymous", "anonymous.invalid", "", True),
    ("Anonymous", "carrier", "", True),
    ("+4917012345", "carrier", "Privacy: id\r\n", True),
    ("+4917012345", "carrier", "Privacy: header;user\r\n", True),
    ("+4917012345", "carrier", "Privacy: none\r\n", False),
])
def test_presentation_of_an_invite(sender: str, host: str, extra: str, withheld: bool) -> None:
    shown = presentation_of(invite("x", "101", sender=sender, host=host, extra=extra))
    assert (shown.withheld, shown.number) == (withheld, None)


def test_an_invite_without_a_user_part_presents_no_number() -> None:
    request = invite("x", "101")
    request.headers.set("From", "<sip:carrier.example>;tag=a")
    assert presentation_of(request).withheld


async def test_someone_who_is_not_a_user_hears_the_tenants_language(tmp_path: Path) -> None:
    """B2bua.prompt without a language (the listener is no user): the tenant's language."""
    async with running(tmp_path) as pbx:
        # the directory follows the store's change by itself
        acme = pbx.store.add_tenant("acme", "acme.example.com", language="en")
        asked: list[tuple[str, int | None]] = []

        class Prompts:
            def port(self, p: Prompt, language: str, rate: int, tenant_id: int | None) -> Any:
                asked.append((language, tenant_id))
                return Announcement(rate)

        pbx.b2b.prompts = Prompts()  # type: ignore[assignment]
        pbx.b2b.prompt(Prompt("not_available"), "", 8000, acme.id)
        pbx.b2b.prompt(Prompt("not_available"), "de", 8000, acme.id)  # a user's own language
        assert asked == [("en", acme.id), ("de", acme.id)]
