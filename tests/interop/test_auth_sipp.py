"""Digest interop with Debian's stock SIPp (issue 11 §4): SIPp 3.6's built-in
``[authentication]`` computes an INVITE's digest over ``uri="sip:host:port"`` when ``-auth_uri``
is not given. asyncpbx accepts that form by default (the hash must still match it) and refuses
it with ``[auth] strict_digest_uri = true``."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.interop.harness import PbxProcess, free_port, read_log, sipp, users_csv
from tests.interop.test_calls_sipp import USERS, SippUas, pbx_with, register_port, responses_by_cseq

pytestmark = pytest.mark.interop


def stock_uac_call(pbx: PbxProcess, tmp: Path) -> tuple[int, int, str, str]:
    """100 calls 101 with the stock-uac scenario, no ``-auth_uri``: (ok, failed, SIPp output,
    the caller's message log)."""
    inf = users_csv(tmp / f"caller-{time.monotonic_ns()}.csv", [USERS[0]])
    log = tmp / "stock-uac-messages.log"
    res = sipp("stock_uac_auth.xml", pbx.addr("udp"), tmp, inf=inf, timeout=30,
               extra=["-s", "101", "-key", "rtp_port", str(free_port()), "-d", "500",
                      "-trace_msg", "-message_file", str(log)])
    return res.successful, res.failed, res.output, read_log(log)


def digest_uris(log: str) -> list[str]:
    return re.findall(r'^Proxy-Authorization:.*?\buri="([^"]*)"', log, re.M | re.I)


def test_stock_uac_authentication_without_auth_uri_is_accepted(tmp_path: Path) -> None:
    with pbx_with(tmp_path) as pbx:
        port = free_port()
        register_port(pbx, "101", USERS[1][1], port)
        uas = SippUas(tmp_path, "call_uas_answer.xml", port, keys={"rtp_port": str(free_port())})
        try:
            ok, failed, out, log = stock_uac_call(pbx, tmp_path)
            rc, uas_out = uas.result()
        finally:
            uas.stop()
        host, sip_port = pbx.addr("udp")
    # what SIPp really sends: the digest over host:port, not the Request-URI sip:101@host:port
    assert digest_uris(log) == [f"sip:{host}:{sip_port}"], log[-3000:]
    assert (ok, failed) == (1, 0), out
    assert rc == 0, uas_out
    assert responses_by_cseq(log)[(2, "INVITE")][-1] == 200, log[-3000:]


def test_strict_digest_uri_refuses_sipps_host_port_form(tmp_path: Path) -> None:
    with pbx_with(tmp_path, "[auth]\nstrict_digest_uri = true\n") as pbx:
        ok, failed, out, log = stock_uac_call(pbx, tmp_path)
        host, sip_port = pbx.addr("udp")
    # (SIPp aborts on the unexpected 407 and may resend its INVITE: every copy has this uri)
    assert set(digest_uris(log)) == {f"sip:{host}:{sip_port}"}, log[-3000:]
    assert (ok, failed) == (0, 1), out
    # the authenticated INVITE is challenged again: its uri does not name the Request-URI
    answers = responses_by_cseq(log)[(2, "INVITE")]
    assert 407 in answers and 200 not in answers, log[-3000:]
