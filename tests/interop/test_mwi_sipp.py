"""Message waiting indication over real SIP (RFC 3842 over RFC 6665), on loopback:

* a phone SUBSCRIBEs to ``message-summary``: 407, then 200 with the granted Expires and at once
  a NOTIFY ``active`` with the box's counts; another package gets 489 with Allow-Events;
* a change of the box (``voicemail.changed`` on the server's bus) NOTIFYs ``Messages-Waiting:
  yes`` and ``Voice-Message: 1/0``; a refresh in the dialog gets 200 and a NOTIFY;
* ``*99`` dialled from a SIPp phone clears the lamp (NOTIFY ``no``) until the next change;
* ``Expires: 0`` ends it: 200, a final NOTIFY ``terminated``; a later refresh gets 481;
* a phone that never subscribed gets an unsolicited NOTIFY when its user turned
  ``mwi.unsolicited`` on.

The server runs in-process (tests/interop/inprocess.py) so the test can stand in for the
voicemail box: it sets the counts and publishes the box's change event as the box does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sipcore.message import Response
from tests.interop.inprocess import serving
from tests.interop.mwi_phone import MwiPhone
from tests.interop.test_calls_sipp import USERS

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]

CONFIG = "[media]\nport_min = 43000\nport_max = 43499\n"


def _changed(server: object, user_id: int, counts: tuple[int, int, int, int]) -> None:
    new, old, new_urgent, old_urgent = counts
    server.events.publish("voicemail.changed", {  # type: ignore[attr-defined]
        "tenant": "default", "user": "100", "user_id": user_id, "new": new, "old": old,
        "new_urgent": new_urgent, "old_urgent": old_urgent})


async def test_subscribe_notify_refresh_clear_unsubscribe(tmp_path: Path) -> None:
    from tests.interop.test_feature_codes_sipp import dial_code

    async with serving(tmp_path, USERS, CONFIG) as (server, files):
        assert server.mwi is not None
        user = server.directory.user(server.domain, "100")
        assert user is not None
        box = {user.id: (0, 0, 0, 0)}
        server.mwi.counts = lambda uid: box.get(uid, (0, 0, 0, 0))
        phone = MwiPhone("100", "pw-100-secret", files.addr("udp"))
        try:
            bad = await phone.response_to(phone.request(event="presence"))
            assert bad.status == 489
            assert "message-summary" in (bad.headers.get("Allow-Events") or "")

            ok = await phone.subscribe()
            assert ok.status == 200, ok
            assert ok.headers.get("Expires") == "600"
            first = await phone.next_notify()
            assert first.state.startswith("active") and "expires=" in first.state
            assert first.summary is not None and not first.summary.waiting
            assert first.summary.voice.new == 0
            assert phone.subscriber.state.value == "active"

            box[user.id] = (1, 0, 0, 0)
            _changed(server, user.id, box[user.id])
            lit = await phone.next_notify()
            assert lit.summary is not None and lit.summary.waiting
            assert (lit.summary.voice.new, lit.summary.voice.old) == (1, 0)
            assert lit.summary.account == f"sip:100@{server.domain}"

            again = await phone.refresh(300)
            assert again.status == 200 and again.headers.get("Expires") == "300"
            refreshed = await phone.next_notify()
            assert refreshed.state.startswith("active")
            assert refreshed.summary is not None and refreshed.summary.waiting

            # *99 from a real phone (SIPp): the lamp goes off, the counts stay
            tone = await asyncio.to_thread(dial_code, files, tmp_path, USERS[0], "*99")
            assert tone == "confirmation"
            cleared = await phone.next_notify(10)
            assert cleared.summary is not None and not cleared.summary.waiting
            assert server.settings.get(user.id, "mwi")["cleared"] is True

            # the next change of the box lights it again (and forgets the *99)
            box[user.id] = (2, 0, 1, 0)
            _changed(server, user.id, box[user.id])
            relit = await phone.next_notify()
            assert relit.summary is not None and relit.summary.waiting
            assert relit.summary.voice.new == 2 and relit.summary.voice.new_urgent == 1
            assert server.settings.get(user.id, "mwi")["cleared"] is False

            bye = await phone.unsubscribe()
            assert bye.status == 200
            final = await phone.next_notify()
            assert final.state.startswith("terminated")
            assert phone.subscriber.state.value == "terminated"
            assert not server.mwi.subscriptions

            gone = await phone.refresh()
            assert gone.status == 481
        finally:
            phone.close()


async def test_unsolicited_notify_to_a_phone_that_does_not_subscribe(tmp_path: Path) -> None:
    async with serving(tmp_path, USERS, CONFIG) as (server, files):
        assert server.mwi is not None
        user = server.directory.user(server.domain, "101")
        assert user is not None
        phone = MwiPhone("101", "pw-101-secret", files.addr("udp"))
        try:
            # the phone registers from its own socket: the unsolicited NOTIFY goes to the
            # registrar's binding
            reg = await _register(phone)
            assert reg.status == 200, reg
            server.mwi.counts = lambda uid: (3, 1, 0, 0)
            _changed(server, user.id, (3, 1, 0, 0))
            with pytest.raises(TimeoutError):  # off by default: nothing
                await phone.next_notify(1.0)
            # the administrator turns it on from the command line (another process's store
            # write: the server's directory picks it up within a second)
            from pbx.cli import main as cli

            assert cli(["settings", "set", "101", "mwi", "unsolicited=true", "--config",
                        str(files.workdir / "asyncpbx.toml"), "--data-dir",
                        str(files.data_dir)]) == 0
            for _ in range(60):
                if server.settings.get(user.id, "mwi")["unsolicited"]:
                    break
                await asyncio.sleep(0.05)
            _changed(server, user.id, (3, 1, 0, 0))
            got = await phone.next_notify()
            assert not got.in_dialog
            assert got.summary is not None and got.summary.waiting
            assert (got.summary.voice.new, got.summary.voice.old) == (3, 1)
        finally:
            phone.close()


async def _register(phone: MwiPhone) -> Response:
    from sipcore.digest import DigestClient
    from sipcore.message import Request, parse_message

    host, port = phone.target

    def register(cseq: int) -> Request:
        text = (f"REGISTER sip:{host}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{phone.port};branch=z9hG4bK-reg{cseq};rport\r\n"
                f"From: <sip:{phone.user}@{host}>;tag=reg1\r\nTo: <sip:{phone.user}@{host}>\r\n"
                f"Call-ID: reg-{phone.call_id}\r\nCSeq: {cseq} REGISTER\r\n"
                f"Contact: <sip:{phone.user}@127.0.0.1:{phone.port}>\r\n"
                "Max-Forwards: 70\r\nExpires: 300\r\nContent-Length: 0\r\n\r\n")
        req = parse_message(text.encode())
        assert isinstance(req, Request)
        return req

    first = register(1)
    resp = await phone.response_to(first)
    if resp.status == 401:
        again = DigestClient().authorize(register(2), resp, phone.user, phone.password,
                                         realm="asyncpbx-test")
        resp = await phone.response_to(again)
    return resp
