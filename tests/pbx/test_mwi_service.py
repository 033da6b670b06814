"""The MWI service (pbx.mwi) against a recording endpoint: digest before a subscription, only the
user's own box, NOTIFY on every ``voicemail.changed``, ``*99``'s ``mwi.cleared`` until the next
change, expiry, a NOTIFY answered 481 drops its subscription, unsolicited NOTIFY per
``mwi.unsolicited``, shutdown."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from features import default_features
from pbx.callcontrol import FeatureRegistry
from pbx.directory import Directory
from pbx.mwi import MwiService
from pbx.services import EventBus
from pbx.services.settings import SettingsService
from pbx.store import Store
from sipcore.digest import DigestClient, DigestServer
from sipcore.endpoint import RequestReceived
from sipcore.message import Request, Response, make_response, parse_message
from sipcore.message_summary import parse
from sipcore.registrar import Binding, Registrar
from sipcore.transaction import ResponseReceived
from sipcore.transport import Peer

REALM = "asyncpbx-test"
PHONE = Peer("udp", "127.0.0.1", 5070)


class FakeSip:
    """Records what the service sends."""

    def __init__(self) -> None:
        self.responses: list[Response] = []
        self.requests: list[tuple[Request, Peer, Any]] = []

    def send_response(self, response: Response, *, transaction_id: str | None = None) -> bool:
        self.responses.append(response)
        return True

    def send_request(self, request: Request, peer: Peer, *, owner: Any = None) -> str:
        self.requests.append((request, peer, owner))
        return f"tx{len(self.requests)}"


@pytest.fixture
def env(tmp_path: Path) -> Any:
    store = Store(tmp_path)
    store.add_user("100", "pw-100", REALM, "Anna")
    store.add_user("101", "pw-101", REALM, "Ben")
    directory = Directory(store)
    features = FeatureRegistry(default_features())
    bus = EventBus()
    settings = SettingsService(store, directory, bus, features.schema)
    digest = DigestServer(REALM, b"s" * 32, proxy=True)
    sip = FakeSip()
    registrar = Registrar()
    box: dict[int, tuple[int, int, int, int]] = {}
    mwi = MwiService(sip, auth_for=lambda r: (digest, lambda u: directory.credentials(REALM, u)),
                     directory=directory, registrar=registrar, settings=settings,
                     domain="pbx.test", contact_for=lambda p: "<sip:asyncpbx@127.0.0.1:5060>",
                     counts=lambda uid: box.get(uid, (0, 0, 0, 0)))
    mwi.attach(bus)
    yield SimpleEnv(store, directory, settings, bus, sip, mwi, box, registrar)
    store.close()


class SimpleEnv:
    def __init__(self, store: Store, directory: Directory, settings: SettingsService,
                 bus: EventBus, sip: FakeSip, mwi: MwiService,
                 box: dict[int, tuple[int, int, int, int]], registrar: Registrar) -> None:
        self.store, self.directory, self.settings, self.bus = store, directory, settings, bus
        self.sip, self.mwi, self.box, self.registrar = sip, mwi, box, registrar

    def uid(self, ext: str) -> int:
        user = self.directory.user("pbx.test", ext)
        assert user is not None
        return user.id


def request(box: str = "100", *, cseq: int = 1, expires: int = 600, to_tag: str = "",
            event: str = "message-summary") -> Request:
    text = (f"SUBSCRIBE sip:{box}@pbx.test SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{cseq}-{time.monotonic_ns()}\r\n"
            f"From: <sip:100@pbx.test>;tag=ph\r\nTo: <sip:{box}@pbx.test>{to_tag}\r\n"
            f"Call-ID: sub-1\r\nCSeq: {cseq} SUBSCRIBE\r\nContact: <sip:100@127.0.0.1:5070>\r\n"
            f"Event: {event}\r\nExpires: {expires}\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n")
    req = parse_message(text.encode())
    assert isinstance(req, Request)
    return req


def receive(env: SimpleEnv, req: Request) -> Response:
    env.mwi.on_request(RequestReceived(req, PHONE, f"srv-{req.cseq.seq}"))
    return env.sip.responses[-1]


def subscribe(env: SimpleEnv, box: str = "100") -> Response:
    challenge = receive(env, request(box))
    assert challenge.status == 407
    authed = DigestClient().authorize(request(box, cseq=2), challenge, "100", "pw-100",
                                      realm=REALM)
    return receive(env, authed)


def last_notify(env: SimpleEnv) -> tuple[Request, Any]:
    req, _, owner = env.sip.requests[-1]
    assert req.method == "NOTIFY"
    return req, owner


def test_subscribe_needs_digest_and_gets_the_counts(env: SimpleEnv) -> None:
    env.box[env.uid("100")] = (1, 2, 0, 0)
    ok = subscribe(env)
    assert ok.status == 200 and ok.headers.get("Expires") == "600" and ok.to_tag
    notify, _ = last_notify(env)
    assert notify.headers.get("Subscription-State") == "active;expires=600"
    assert notify.headers.get("Event") == "message-summary"
    summary = parse(notify.body)
    assert summary.waiting and (summary.voice.new, summary.voice.old) == (1, 2)
    assert notify.call_id == "sub-1" and notify.to.tag == "ph"


def test_another_users_box_is_forbidden_and_other_packages_489(env: SimpleEnv) -> None:
    assert subscribe(env, box="101").status == 403
    assert not env.mwi.subscriptions
    assert receive(env, request(event="dialog")).status == 489


def test_change_cleared_and_uncleared(env: SimpleEnv) -> None:
    uid = env.uid("100")
    subscribe(env)
    env.box[uid] = (1, 0, 0, 0)
    env.bus.publish("voicemail.changed", {"tenant": "default", "user": "100", "user_id": uid,
                                          "new": 1, "old": 0, "new_urgent": 0, "old_urgent": 0})
    assert parse(last_notify(env)[0].body).waiting
    env.settings.update(uid, "mwi", {"cleared": True}, source="feature_code")  # *99
    cleared = parse(last_notify(env)[0].body)
    assert not cleared.waiting and cleared.voice.old == 1
    sent = len(env.sip.requests)
    env.box[uid] = (2, 0, 0, 0)
    env.bus.publish("voicemail.changed", {"tenant": "default", "user": "100", "user_id": uid,
                                          "new": 2, "old": 0, "new_urgent": 0, "old_urgent": 0})
    assert len(env.sip.requests) == sent + 1  # one NOTIFY, not two
    assert parse(last_notify(env)[0].body).voice.new == 2
    assert env.settings.get(uid, "mwi")["cleared"] is False


def test_recheck_notifies_only_boxes_another_process_changed(env: SimpleEnv) -> None:
    # asyncpbx voicemail delete while the server runs: the directory sees the store change,
    # recheck compares each box with what its phones were told
    uid = env.uid("100")
    env.box[uid] = (1, 0, 0, 0)
    subscribe(env)
    sent = len(env.sip.requests)
    assert env.mwi.recheck() == 0 and len(env.sip.requests) == sent  # nothing changed
    env.box[uid] = (0, 0, 0, 0)  # the message was deleted elsewhere
    assert env.mwi.recheck() == 1
    summary = parse(last_notify(env)[0].body)
    assert not summary.waiting and summary.voice.new == 0
    assert env.mwi.recheck() == 0 and len(env.sip.requests) == sent + 1


def test_refresh_unsubscribe_and_unknown_dialog(env: SimpleEnv) -> None:
    tag = f";tag={subscribe(env).to_tag}"
    again = receive(env, request(cseq=3, expires=120, to_tag=tag))
    assert again.status == 200 and again.headers.get("Expires") == "120"
    assert last_notify(env)[0].headers.get("Subscription-State") == "active;expires=120"
    assert receive(env, request(cseq=4, expires=0, to_tag=tag)).status == 200
    assert (last_notify(env)[0].headers.get("Subscription-State") or "").startswith("terminated")
    assert not env.mwi.subscriptions
    assert receive(env, request(cseq=5, to_tag=tag)).status == 481


def test_expiry_and_a_481_to_notify(env: SimpleEnv) -> None:
    subscribe(env)
    env.mwi.tick(time.time() + 601)
    assert last_notify(env)[0].headers.get("Subscription-State") == "terminated;reason=timeout"
    assert not env.mwi.subscriptions
    subscribe(env)
    notify, owner = last_notify(env)
    owner(ResponseReceived(make_response(notify, 481), "tx", PHONE))
    assert not env.mwi.subscriptions


def test_unsolicited_only_when_on_and_only_to_phones_without_a_subscription(
        env: SimpleEnv) -> None:
    uid = env.uid("101")
    aor = "sip:101@pbx.test"
    other = Peer("udp", "127.0.0.1", 5080)
    env.registrar.restore([Binding(aor, "sip:101@127.0.0.1:5080", "<sip:101@127.0.0.1:5080>",
                                   time.time() + 300, received=other)], time.time())
    assert env.mwi.notify_user(uid, (1, 0, 0, 0)) == 0
    env.settings.update(uid, "mwi", {"unsolicited": True}, source="cli")
    assert env.mwi.notify_user(uid, (1, 0, 0, 0)) == 1
    notify, peer, _ = env.sip.requests[-1]
    assert peer == other and str(notify.uri) == "sip:101@127.0.0.1:5080"
    assert notify.headers.get("Subscription-State") == "active"
    assert parse(notify.body).waiting


def test_shutdown_deactivates(env: SimpleEnv) -> None:
    subscribe(env)
    env.mwi.shutdown()
    state = last_notify(env)[0].headers.get("Subscription-State")
    assert state == "terminated;reason=deactivated"
    assert not env.mwi.subscriptions


def test_star99_is_the_mwi_features_clear_code() -> None:
    registry = FeatureRegistry(default_features())
    found = registry.match("*99")
    assert found is not None and found.feature.name == "mwi"
    assert found.code.action == "clear"
    assert registry.match("78899", digits_only=True) is not None
    rows = {row.key: implemented for row, implemented in registry.rows()}
    assert rows["mwi.clear"] and "voicemail.clear_mwi" not in rows
