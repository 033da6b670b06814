"""Registration trunks against a SIPp "carrier" on another loopback address (127.0.0.2).

The trunk side is the real :class:`pbx.trunks.TrunkManager` over a real
:class:`~sipcore.aio.endpoint.AsyncEndpoint` on 127.0.0.1 (port 0) — the same wiring PbxServer
uses — driven from a small asyncio harness, so the test needs no full server.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest

from pbx.trunks import TrunkConfig, TrunkManager, build_outbound_request
from sipcore.aio.endpoint import AsyncEndpoint, sent_by
from sipcore.endpoint import (
    Endpoint,
    EndpointConfig,
    Event,
    ResponseReceived,
    TransactionTimedOut,
    TransportErrored,
)
from sipcore.headers import Headers
from sipcore.message import Request, Response
from tests.interop.harness import SCENARIOS, free_port, need, read_log

pytestmark = pytest.mark.interop

CARRIER_HOST = "127.0.0.2"


def _udp_bound(host: str, port: int) -> bool:
    """Is something bound to host:port/udp? (/proc/net/udp: little-endian hex address)."""
    want = "".join(f"{int(o):02X}" for o in reversed(host.split("."))) + f":{port:04X}"
    try:
        text = Path("/proc/net/udp").read_text()
    except OSError:  # pragma: no cover - not Linux: fall back to a short wait
        time.sleep(0.5)
        return True
    return any(line.split()[1] == want for line in text.splitlines()[1:] if line.split())


@contextmanager
def sipp_carrier(scenario: str, workdir: Path, port: int) -> Iterator[subprocess.Popen[str]]:
    """SIPp as UAS for one registration (one Call-ID), tracing every message it receives."""
    binary = need("sipp")
    args = [
        binary, "-sf", str(SCENARIOS / scenario), "-i", CARRIER_HOST, "-p", str(port),
        "-t", "u1", "-m", "1", "-nostdin", "-timeout", "40s", "-timeout_error",
        "-trace_msg", "-message_file", str(workdir / f"{scenario}.messages.log"),
        "-trace_err", "-error_file", str(workdir / f"{scenario}.errors.log"),
    ]
    proc = subprocess.Popen(args, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, errors="replace")
    try:
        deadline = time.monotonic() + 10
        while not _udp_bound(CARRIER_HOST, port):
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read() if proc.stdout else ""
                raise RuntimeError(f"SIPp did not start: {out[-3000:]}")
            time.sleep(0.02)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _finish(proc: subprocess.Popen[str], workdir: Path, scenario: str) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=5)
    errors = workdir / f"{scenario}.errors.log"
    text = (out or "")[-3000:] + read_log(errors)[-3000:]
    return proc.returncode, text


def _received_by_carrier(workdir: Path, scenario: str) -> list[str]:
    """The REGISTER requests SIPp received, in order, retransmissions left out (from its
    message trace: a dashed line with the time, "UDP message received […] bytes :", the
    message)."""
    log = (workdir / f"{scenario}.messages.log").read_text(errors="replace")
    out: list[str] = []
    seen: set[str] = set()
    for block in log.split("----------------------------------------------- ")[1:]:
        head = block.split("\n", 2)[:2]
        if len(head) < 2 or "message received" not in head[1] or "REGISTER sip:" not in block:
            continue
        cseq = next((ln for ln in block.splitlines() if ln.startswith("CSeq:")), "")
        if cseq not in seen:
            seen.add(cseq)
            out.append(block)
    return out


@asynccontextmanager
async def trunk_side(trunk: TrunkConfig, *, others: list[Event] | None = None,
                     **kw: object) -> AsyncIterator[TrunkManager]:
    """A real AsyncEndpoint on 127.0.0.1 port 0 and a TrunkManager fed by its events (the
    ones it does not consume go to ``others``); ``manager.start`` has run."""
    manager = TrunkManager([trunk], **kw)  # type: ignore[arg-type]

    def factory(listening: list[tuple[str, str, int]]) -> Endpoint:
        return Endpoint(EndpointConfig(sent_by=sent_by(listening), user_agent="asyncpbx-test"))

    def on_event(event: Event) -> None:
        if not manager.on_event(event) and others is not None:
            others.append(event)

    sip: AsyncEndpoint[Event] = AsyncEndpoint(factory, ["udp:127.0.0.1:0"], on_event=on_event)
    await sip.start()
    try:
        manager.start(sip)
        yield manager
    finally:
        await manager.stop(timeout=10.0)
        await sip.close()


async def _wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_trunk_registers_with_digest_refreshes_and_unregisters(tmp_path: Path) -> None:
    port = free_port(CARRIER_HOST)
    trunk = TrunkConfig(name="carrier", kind="register", host=CARRIER_HOST, port=port,
                        username="4930111", password="s3cret", realm="carrier.test",
                        register_expiry=600)
    scenario = "carrier_register.xml"
    with sipp_carrier(scenario, tmp_path, port) as proc:
        async with trunk_side(trunk, retry_base=0.5) as manager:
            reg = manager.registrations["carrier"]
            await _wait_for(lambda: manager.states()["carrier"] == "registered", 15,
                            "the first registration")
            health = manager.health()["carrier"]
            assert health["failures"] == 0 and 0 < int(health["expires_in"]) <= 4  # type: ignore[call-overload]
            first_cseq, first_expiry = reg.cseq, reg.expires_at
            # the 200 granted 4 s: the refresh (with a new challenge) is due after ~3.4 s; the
            # health state reads "registered" while the refresh is out, so wait for its 200
            # (a new expiry): leaving mid-refresh unregisters over the open transaction
            await _wait_for(lambda: reg.cseq >= first_cseq + 2
                            and reg.expires_at is not None and first_expiry is not None
                            and reg.expires_at > first_expiry
                            and manager.states()["carrier"] == "registered", 15, "the refresh")
            assert reg.granted == 4
        # leaving the block de-registered the trunk
        assert manager.states()["carrier"] == "stopped"
        rc, output = _finish(proc, tmp_path, scenario)
    assert rc == 0, output
    received = _received_by_carrier(tmp_path, scenario)
    assert len(received) == 6, [r[:300] for r in received]
    with_auth = [("Authorization:" in r) for r in received]
    assert with_auth == [False, True, False, True, False, True]
    assert all('realm="carrier.test"' in r for r in received if "Authorization:" in r)
    assert "Expires: 0" in received[4] and "Expires: 0" in received[5]
    call_ids = {line for r in received for line in r.splitlines() if line.startswith("Call-ID:")}
    assert len(call_ids) == 1  # one registration, one Call-ID (RFC 3261 §10.2.4)


async def test_wrong_realm_challenge_gets_no_credentials(tmp_path: Path) -> None:
    port = free_port(CARRIER_HOST)
    trunk = TrunkConfig(name="carrier", kind="register", host=CARRIER_HOST, port=port,
                        username="4930111", password="s3cret", realm="carrier.test",
                        register_expiry=600)
    scenario = "carrier_wrong_realm.xml"
    with sipp_carrier(scenario, tmp_path, port) as proc:
        async with trunk_side(trunk, retry_base=0.5) as manager:
            await _wait_for(lambda: int(manager.health()["carrier"]["failures"]) >= 2,  # type: ignore[call-overload]
                            15, "two failed attempts")
            health = manager.health()["carrier"]
            assert health["state"] == "failed"
            assert health["refused_challenges"] == 1
            assert "evil.test" in str(manager.registrations["carrier"].last_error) or \
                "403" in str(manager.registrations["carrier"].last_error)
        rc, output = _finish(proc, tmp_path, scenario)
    assert rc == 0, output
    received = _received_by_carrier(tmp_path, scenario)
    assert len(received) >= 2
    assert not any("Authorization" in r for r in received), received


def test_sipp_carrier_port_is_on_the_other_loopback_address() -> None:
    """The carrier really is another host as far as our socket is concerned."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((CARRIER_HOST, 0))
        assert s.getsockname()[0] == CARRIER_HOST


async def _final_response(events: list[Event], tx_id: str, timeout: float = 10.0) -> Response:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        for event in events:
            if (isinstance(event, ResponseReceived) and event.transaction_id == tx_id
                    and event.response.status >= 200):
                return event.response
            if isinstance(event, TransactionTimedOut | TransportErrored) and \
                    event.transaction_id == tx_id:
                raise AssertionError(f"transaction {tx_id} failed: {event}")
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("no final response")
        await asyncio.sleep(0.02)


async def test_outbound_invite_is_challenged_and_answered_with_trunk_credentials(
    tmp_path: Path,
) -> None:
    """The B2BUA's path toward an IP trunk, done by hand: build the INVITE, send it, answer the
    carrier's 401 with TrunkManager.answer_challenge, ACK the 200."""
    port = free_port(CARRIER_HOST)
    trunk = TrunkConfig(name="carrier", kind="ip", host=CARRIER_HOST, port=port,
                        username="4930111", password="s3cret", realm="carrier.test")
    scenario = "carrier_invite_auth.xml"
    events: list[Event] = []
    with sipp_carrier(scenario, tmp_path, port) as proc:
        async with trunk_side(trunk, others=events) as manager:
            sip = manager.sip
            invite = build_outbound_request(
                trunk, number="+49301234567", caller_did="+4930999888",
                contact=manager.contact_for(trunk, user="+4930999888"))
            tx = sip.send_request(invite, trunk.peer)
            challenge = await _final_response(events, tx)
            assert challenge.status == 401
            again = manager.answer_challenge("carrier", invite, challenge, sent_to=trunk.peer)
            assert again is not None and again.cseq.seq == 2
            tx2 = sip.send_request(again, trunk.peer)
            answer = await _final_response(events, tx2)
            assert answer.status == 200
            ack = Request("ACK", answer.contacts[0].uri, Headers([
                ("From", again.headers.get("From") or ""),
                ("To", answer.headers.get("To") or ""),
                ("Call-ID", again.call_id), ("CSeq", f"{again.cseq.seq} ACK"),
                ("Content-Length", "0"),
            ]))
            sip.send_request(ack, trunk.peer)
            rc, output = _finish(proc, tmp_path, scenario)
    assert rc == 0, output
