"""Replay (SECURITY.md): an authenticated REGISTER captured on the wire (user 100 on 127.0.0.4
binding a contact) is replayed after the user removed that binding — later from the same
address, from another address (127.0.0.5), and after its nonce expired. The bindings stay as the
user left them: empty.
Each replay is sent as captured (inside the server transaction's lifetime that is a
retransmission, answered from the transaction) and rewritten with a fresh Via branch, Call-ID
and From tag — none covered by the digest — so neither the transaction layer, the merged-request
check nor the registrar's CSeq order stands in the way: the rewritten copy must be refused by
the digest check itself (401), and the bindings must stay empty either way."""

from __future__ import annotations

import itertools
import os
import re
import time
from pathlib import Path

import pytest

from sipcore.message import Response
from tests.interop.harness import running_pbx
from tests.security.test_enumeration import record
from tests.security.wire import REALM, SipClient, need_aliases

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

USERS = [("100", "pw-100-secret")]
USER = "127.0.0.4"
THIEF = "127.0.0.5"
NONCE_TTL = 10


def bindings(client: SipClient, cseq: int) -> list[str]:
    """The user's bindings, by an authenticated REGISTER without Contact (a query)."""
    _, answer = client.register("100", USERS[0][1], cseq, call_id=f"query-{cseq}",
                                contact_port=None, expires=None)
    assert answer.status == 200, answer
    return answer.headers.get_all("Contact")


def test_replayed_register_changes_nothing(tmp_path: Path) -> None:
    need_aliases(USER, THIEF)
    config = (f'[auth]\nrealm = "{REALM}"\nnonce_ttl = {NONCE_TTL}\n'
              '[security]\ntrusted = ["127.0.0.1"]\n')
    answers: dict[str, int | None] = {}
    with running_pbx(tmp_path, transports=("udp",), users=USERS, config_extra=config) as pbx:
        server = pbx.addr("udp")
        with SipClient(USER, server) as phone, SipClient(THIEF, server) as thief:
            captured, ok = phone.register("100", USERS[0][1], 1, call_id="captured",
                                          contact_port=40123)
            assert ok.status == 200 and len(ok.headers.get_all("Contact")) == 1, ok
            issued = time.monotonic()
            wire = captured.serialize()
            # the user removes that binding (another Call-ID, so CSeq order does not matter)
            _, gone = phone.register("100", USERS[0][1], 10, call_id="remove",
                                     contact_port=40123, expires=0)
            assert gone.status == 200
            assert bindings(phone, 20) == []

            def replay(client: SipClient, label: str, refusals: tuple[int | None, ...]) -> None:
                # the captured bytes as they are: inside the server transaction's lifetime
                # (Timer J, 32 s) this is a retransmission, answered from the transaction with
                # the answer it had (no new processing); what matters is that nothing changes
                exact = client.send_raw(wire)
                answers[f"{label}, exact bytes"] = (exact.response.status if exact else None)
                assert bindings(phone, next(cseqs)) == [], label
                # rewritten as a replayer would to get it processed anew — a fresh Via branch,
                # Call-ID and From tag (none of them is covered by the digest): only the digest
                # check (nonce-count, nonce bound to the source, expiry) can refuse it
                fresh = re.sub(rb"branch=z9hG4bK[0-9a-f]+",
                               b"branch=z9hG4bK" + os.urandom(6).hex().encode(), wire)
                fresh = fresh.replace(f"{phone.host}:{phone.port}".encode(),
                                      f"{client.host}:{client.port}".encode())
                fresh = fresh.replace(b"Call-ID: captured", b"Call-ID: replay-" +
                                      os.urandom(4).hex().encode())
                fresh = re.sub(rb"(From: [^\r]*;tag=)\w+", rb"\g<1>r" +
                               os.urandom(3).hex().encode(), fresh)
                assert fresh != wire
                answer = client.send_raw(fresh)
                status = answer.response.status if answer is not None else None
                answers[label] = status
                assert status in refusals, (label, answer)
                if status == 401:
                    assert answer is not None and isinstance(answer.response, Response)
                    assert answer.response.headers.get("WWW-Authenticate"), label

            cseqs = itertools.count(100, 10)
            time.sleep(1.0)
            replay(phone, "later, same address", (401,))
            replay(thief, "from another address", (401,))
            time.sleep(max(0.0, issued + NONCE_TTL + 1.5 - time.monotonic()))
            replay(phone, "after expiry", (401,))
            replay(thief, "after expiry, another address", (401,))
            assert bindings(phone, 50) == []
    record("replay", {"answers": answers, "bindings_after": 0})
