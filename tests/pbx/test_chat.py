"""Chat (pbx.chat.content, pbx.store.chat): what a MESSAGE may carry, its id, the MESSAGE we
send, and the store's per-conversation history with pending delivery."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbx.chat import MESSAGE_ID_HEADER, Incoming, Refusal, check
from pbx.chat.content import cpim_id, delivery
from pbx.store import Store
from sipcore.message import Request, parse_message

CPIM = (b"From: <sip:100@pbx.test>\r\nTo: <sip:101@pbx.test>\r\nNS: imdn <urn:ietf:params:imdn>\r\n"
        b"imdn.Message-ID: 34jk324j\r\nDateTime: 2026-12-07T01:00:00Z\r\n\r\n"
        b"Content-Type: text/plain\r\n\r\nHello")


def message(body: bytes, content_type: str = "text/plain;charset=utf-8",
            call_id: str = "abc@1", cseq: int = 1) -> Request:
    text = (f"MESSAGE sip:101@pbx.test SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
            "From: <sip:100@pbx.test>;tag=t1\r\nTo: <sip:101@pbx.test>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq} MESSAGE\r\nMax-Forwards: 70\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n")
    msg = parse_message(text.encode() + body)
    assert isinstance(msg, Request)
    return msg


def test_plain_text_is_taken_with_an_id_stable_for_the_same_request() -> None:
    got = check(message(b"hello"), 100)
    assert isinstance(got, Incoming) and got.content_type == "text/plain"
    again = check(message(b"hello"), 100)
    other = check(message(b"hello", cseq=2), 100)
    assert isinstance(again, Incoming) and isinstance(other, Incoming)
    assert got.message_id == again.message_id != other.message_id


def test_cpim_keeps_the_clients_own_message_id() -> None:
    got = check(message(CPIM, "message/cpim"), 1000)
    assert isinstance(got, Incoming) and got.message_id == "34jk324j" and got.body == CPIM
    assert cpim_id(b"From: <sip:a@b>\r\n\r\nbody") is None


@pytest.mark.parametrize(("body", "ctype", "status"), [
    (b"x" * 101, "text/plain", 413),
    (b"{}", "application/json", 415),
    (b"<a/>", "application/im-iscomposing+xml", 415),
    (b"  \r\n", "text/plain", 400),
])
def test_refused_content(body: bytes, ctype: str, status: int) -> None:
    got = check(message(body, ctype), 100)
    assert isinstance(got, Refusal) and got.status == status
    if status == 415:
        assert ("Accept", "text/plain, message/cpim") in got.headers


def test_the_delivery_names_sender_recipient_and_the_id() -> None:
    req = delivery(contact="sip:101@127.0.0.1:5072;transport=udp?X-Evil=1", route=("<sip:p>",),
                   sender_aor="sip:100@pbx.test", sender_name='An"na',
                   recipient_aor="sip:101@pbx.test", content_type="text/plain", body=b"hi",
                   message_id="m-1")
    req.headers.add("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK2")  # the endpoint's
    req.headers.add("Max-Forwards", "70")
    again = parse_message(req.serialize())
    assert isinstance(again, Request) and again.method == "MESSAGE"
    assert str(again.uri) == "sip:101@127.0.0.1:5072;transport=udp"
    assert again.headers.get(MESSAGE_ID_HEADER) == "m-1"
    assert str(again.headers.get("From")).startswith('"Anna" <sip:100@pbx.test>;tag=')
    assert again.headers.get("Route") == "<sip:p>" and again.body == b"hi"


def test_store_keeps_conversations_and_what_waits(tmp_path: Path) -> None:
    store = Store(tmp_path, domain="pbx.test")
    try:
        store.ensure_default_tenant("pbx.test", "pbx.test")
        a, b, c = (store.add_user(ext, f"pw-{ext}-x") for ext in ("100", "101", "102"))
        tenant = a.tenant_id
        m1 = store.chat_add(tenant_id=tenant, sender_id=a.id, recipient_id=b.id,
                            message_id="1", content_type="text/plain", body=b"one", now=1.0)
        dup = store.chat_add(tenant_id=tenant, sender_id=a.id, recipient_id=b.id,
                             message_id="1", content_type="text/plain", body=b"one", now=2.0)
        assert dup.id == m1.id  # the same message sent again is kept once
        store.chat_add(tenant_id=tenant, sender_id=b.id, recipient_id=a.id, message_id="2",
                       content_type="text/plain", body=b"two", now=3.0)
        store.chat_add(tenant_id=tenant, sender_id=c.id, recipient_id=b.id, message_id="3",
                       content_type="text/plain", body=b"other", now=4.0)
        assert [m.body for m in store.chat_conversation(a.id, b.id)] == [b"one", b"two"]
        assert [m.body for m in store.chat_pending(b.id)] == [b"one", b"other"]
        store.chat_delivered(m1.id, 5.0)
        store.chat_delivered(m1.id, 6.0)  # the first delivery counts
        assert [m.body for m in store.chat_pending(b.id)] == [b"other"]
        assert store.chat_conversation(a.id, b.id)[0].delivered_at == 5.0
    finally:
        store.close()


def test_a_refresh_delivers_only_for_users_known_to_wait(tmp_path: Path) -> None:
    from types import SimpleNamespace
    from typing import Any

    from pbx.chat import ChatService
    from pbx.directory import Directory
    from sipcore.registrar import Binding

    store = Store(tmp_path, domain="pbx.test")
    try:
        store.ensure_default_tenant("pbx.test", "pbx.test")
        user = store.add_user("101", "pw-101-x")
        spawned: list[str] = []

        def spawn(coro: Any, name: str) -> None:
            coro.close()
            spawned.append(name)

        b2b = SimpleNamespace(ensure_tasks=lambda: None, tasks=SimpleNamespace(spawn=spawn))
        chat = ChatService(b2b, store, Directory(store))  # type: ignore[arg-type]
        binding = Binding(aor="sip:101@pbx.test", uri="sip:101@127.0.0.1:5072",
                          contact="<sip:101@127.0.0.1:5072>", expires_at=1e12)
        chat.registered(binding, refresh=True)
        assert spawned == []  # nothing known to wait: no store query per refresh
        chat.waiting.add(user.id)
        chat.registered(binding, refresh=True)
        assert spawned == [f"chat-pending-{user.id}"] and user.id not in chat.waiting
        chat.registered(binding)  # a new binding always looks
        assert len(spawned) == 2
    finally:
        store.close()
