"""Peer logs are read with undecodable bytes replaced: SIPp copies a stray binary datagram (an
RTCP packet for a port that was its own a moment ago, say) verbatim into its error and
message logs, and reading a log must never be what fails a test."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.interop.harness import free_port, read_log
from tests.interop.test_calls_sipp import SippUas, messages

#: An RTCP sender report's first bytes and more that are not UTF-8.
BINARY = b"\x80\xc8\x00\x06\xff\xfe\xfd" + bytes(range(0x80, 0xc0))


def test_read_log_replaces_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    log = tmp_path / "peer.log"
    log.write_bytes(b"INVITE sip:100@127.0.0.1 SIP/2.0\r\n" + BINARY + "\r\nä ok\r\n".encode())
    text = read_log(log)
    assert text.startswith("INVITE sip:100@127.0.0.1 SIP/2.0\r\n")
    assert "\ufffd" in text and text.endswith("\r\nä ok\r\n")  # valid UTF-8 kept as it is
    assert read_log(tmp_path / "missing.log") == ""


def test_messages_helper_tolerates_binary(tmp_path: Path) -> None:
    (tmp_path / "caller-messages.log").write_bytes(b"SIP/2.0 200 OK\r\n" + BINARY)
    assert messages(tmp_path).startswith("SIP/2.0 200 OK\r\n")
    assert messages(tmp_path, "none.log") == ""


@pytest.mark.interop
def test_sipp_uas_result_and_log_survive_a_binary_datagram(tmp_path: Path) -> None:
    """A real SIPp UAS writes a binary datagram into its error log; result() and log() still
    return text."""
    port = free_port()
    uas = SippUas(tmp_path, "call_uas_answer.xml", port, keys={"rtp_port": str(free_port())},
                  timeout=2)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(BINARY, ("127.0.0.1", port))
        rc, out = uas.result(timeout=30)
    finally:
        uas.stop()
    raw = uas.errors.read_bytes() if uas.errors.exists() else b""
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")  # the premise: SIPp did copy bytes that are not UTF-8
    assert rc != 0  # no call came: -timeout_error
    assert "\ufffd" in out
    assert isinstance(uas.log(), str)
