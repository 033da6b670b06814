"""The conference API over real SIP/RTP: 100 calls 101, adds 102 with ``*3``; the API mutes 102
(100 and 101 stop hearing its tone, 102 still hears them), unmutes it (heard again), drops it
(102 gets BYE, the call goes on with two) — then 101 hangs up and the conference ends."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.harness import PbxProcess
from tests.interop.test_conference_sipp import (
    Phones,
    assert_hears_exactly,
    events,
    heard,
    pbx_for_conference,
    phones,
    wait_until,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]


def _api(base: str, token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            text = resp.read()
            return resp.status, json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@contextlib.contextmanager
def _api_pbx(tmp_path: Path) -> Iterator[tuple[PbxProcess, Phones, str, str]]:
    """A PBX for conferences with its phones, the API's base URL and a tenant admin's token
    (made in the store before the start, as `asyncpbx token create` does)."""
    tokens: dict[str, str] = {}

    def setup(store: Any) -> None:
        tenant = store.user("100")
        tokens["admin"] = store.create_api_token(role="tenant_admin",
                                                 tenant_id=tenant.tenant_id,
                                                 now=time.time())[0]

    with pbx_for_conference(tmp_path, setup=setup) as pbx, phones(pbx, tmp_path) as ph:
        host, port = pbx.addr("http")
        yield pbx, ph, f"http://{host}:{port}/api/v1", tokens["admin"]


def test_api_mutes_unmutes_and_drops_a_participant(tmp_path: Path) -> None:
    with _api_pbx(tmp_path) as (pbx, ph, base, tok):
        ph.callee("101", "call_uas_bye.xml", pause_ms=16000)
        ph.callee("102", "call_uas_answer.xml")
        ph.dial("100", "101", "call_uac_wait_bye.xml")
        wait_until(lambda: ph.peer("101").first_packet() is not None, 10, "the answer")
        ph.peer("100").press("*3102#")
        wait_until(lambda: ph.peer("102").first_packet() is not None, 10, "102 to join")
        status, page = _api(base, tok, "GET", "/calls")
        assert status == 200 and page["items"][0]["conference"] is True, page
        call = page["items"][0]["call_id"]
        status, conf = _api(base, tok, "GET", f"/calls/{call}/conference")
        assert status == 200 and len(conf["participants"]) == 3, conf
        (p102,) = [p["id"] for p in conf["participants"] if "102" in p["party"]]

        def window() -> tuple[float, float]:
            start = time.monotonic() + 0.5
            time.sleep(2.7)
            return start, start + 2.2

        w_all = window()
        assert _api(base, tok, "PATCH", f"/calls/{call}/conference/participants/{p102}",
                    {"muted": True})[0] == 200
        w_muted = window()
        assert _api(base, tok, "PATCH", f"/calls/{call}/conference/participants/{p102}",
                    {"muted": False})[0] == 200
        w_back = window()
        for w in (w_all, w_back):
            for ext, others in (("100", ["101", "102"]), ("101", ["100", "102"]),
                                ("102", ["100", "101"])):
                assert_hears_exactly(ext, ph.peer(ext).pcm(*w), others)
        assert heard(ph.peer("100").pcm(*w_muted))["102"] < 0.02
        assert heard(ph.peer("101").pcm(*w_muted))["102"] < 0.02
        assert_hears_exactly("102", ph.peer("102").pcm(*w_muted), ["100", "101"])
        assert_hears_exactly("100", ph.peer("100").pcm(*w_muted), ["101"])
        status, _ = _api(base, tok, "DELETE", f"/calls/{call}/conference/participants/{p102}")
        assert status == 204
        rc, out = ph.uas["102"].result()
        assert rc == 0, out  # 102 got the BYE
        status, conf = _api(base, tok, "GET", f"/calls/{call}/conference")
        assert status == 200 and len(conf["participants"]) == 2, conf
        rc, out = ph.uac_result("100")  # 101 hung up: fewer than two, the PBX's BYE to 100
        assert rc == 0, out
        rc, out = ph.uas["101"].result()
        assert rc == 0, out
        assert len(events(pbx, "conference.ended")) == 1


def test_api_adds_the_users_second_call_to_the_conference(tmp_path: Path) -> None:
    """100 calls 101, then (a second call from the same phone account) 102; the API adds the
    second call to the first (``call_id`` instead of ``number``): 102 joins the conference
    now, 100's leg of the second call gets BYE, and each of the three hears exactly the other
    two. Then the API drops 102 and the call goes on until 101 hangs up."""
    from tests.interop.test_conference_sipp import PASSWORD, TONES, TonePeer

    with _api_pbx(tmp_path) as (pbx, ph, base, tok):
        ph.callee("101", "call_uas_bye.xml", pause_ms=20000)
        ph.callee("102", "call_uas_answer.xml")
        ph.dial("100", "101", "call_uac_wait_bye.xml")
        wait_until(lambda: ph.peer("101").first_packet() is not None, 10, "the first answer")
        ph.rtp["100b"] = TonePeer(TONES["100"])  # the phone's second line, the same voice
        ph.dial("100b", "102", "call_uac_wait_bye.xml", account=("100", PASSWORD["100"]))
        wait_until(lambda: ph.peer("102").first_packet() is not None, 10, "the second answer")
        status, page = _api(base, tok, "GET", "/calls")
        assert status == 200 and page["total"] == 2, page
        by_callee = {c["callee"].split("@")[0].removeprefix("sip:"): c["call_id"]
                     for c in page["items"]}
        first, second = by_callee["101"], by_callee["102"]
        status, added = _api(base, tok, "POST", f"/calls/{first}/conference/participants",
                             {"call_id": second})
        assert status == 202 and len(added["legs"]) == 1, added
        rc, out = ph.uac_result("100b", timeout=10)
        assert rc == 0, out  # the second line got its BYE
        status, page = _api(base, tok, "GET", "/calls")
        assert page["total"] == 1 and page["items"][0]["conference"] is True, page
        status, conf = _api(base, tok, "GET", f"/calls/{first}/conference")
        assert status == 200 and len(conf["participants"]) == 3, conf
        start = time.monotonic() + 0.5
        time.sleep(2.7)
        for ext, others in (("100", ["101", "102"]), ("101", ["100", "102"]),
                            ("102", ["100", "101"])):
            assert_hears_exactly(ext, ph.peer(ext).pcm(start, start + 2.2), others)
        (p102,) = [p["id"] for p in conf["participants"] if "102" in p["party"]]
        status, _ = _api(base, tok, "DELETE", f"/calls/{first}/conference/participants/{p102}")
        assert status == 204
        rc, out = ph.uas["102"].result()
        assert rc == 0, out
        rc, out = ph.uac_result("100")  # 101 hung up: fewer than two, the PBX's BYE to 100
        assert rc == 0, out
        assert _api(base, tok, "POST", f"/calls/{first}/conference/participants",
                    {"call_id": first})[0] == 404  # the call is over
        assert len(events(pbx, "conference.merged")) == 1


def test_api_adds_a_number_to_a_two_party_call(tmp_path: Path) -> None:
    """100 calls 101; the API adds 102 by number (the PBX rings it and joins it when it
    answers: the two-party call becomes a conference); each of the three hears exactly the
    other two, and the conference.joined events name the call."""
    with _api_pbx(tmp_path) as (pbx, ph, base, tok):
        ph.callee("101", "call_uas_bye.xml", pause_ms=12000)
        ph.callee("102", "call_uas_answer.xml")
        ph.dial("100", "101", "call_uac_wait_bye.xml")
        wait_until(lambda: ph.peer("101").first_packet() is not None, 10, "the answer")
        status, page = _api(base, tok, "GET", "/calls")
        assert status == 200 and page["total"] == 1, page
        call = page["items"][0]["call_id"]
        assert page["items"][0]["conference"] is False
        status, added = _api(base, tok, "POST", f"/calls/{call}/conference/participants",
                             {"number": "102"})
        assert status == 202 and added["legs"], added
        wait_until(lambda: ph.peer("102").first_packet() is not None, 10, "102 to answer")
        status, conf = _api(base, tok, "GET", f"/calls/{call}/conference")
        assert status == 200 and len(conf["participants"]) == 3, conf
        start = time.monotonic() + 0.8
        time.sleep(3.0)
        for ext, others in (("100", ["101", "102"]), ("101", ["100", "102"]),
                            ("102", ["100", "101"])):
            assert_hears_exactly(ext, ph.peer(ext).pcm(start, start + 2.2), others)
        assert _api(base, tok, "POST", f"/calls/{call}/conference/participants",
                    {"number": "999999"})[0] == 422  # reaches nobody
        rc, out = ph.uas["101"].result()  # 101 hangs up: 100 and 102 go on
        assert rc == 0, out
        status, conf = _api(base, tok, "GET", f"/calls/{call}/conference")
        assert status == 200 and len(conf["participants"]) == 2, conf
        status, _ = _api(base, tok, "DELETE", f"/calls/{call}")
        assert status == 204
        rc, out = ph.uac_result("100")
        assert rc == 0, out
        joined = events(pbx, "conference.joined")
        assert len(joined) >= 3 and all(e.get("call_id") == call for e in joined), joined
