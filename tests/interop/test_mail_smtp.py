"""Voicemail mail through a real SMTP server (aiosmtpd) on loopback:

* ``asyncpbx settings set 100 voicemail_mail mode=forward ...`` (the CLI, as an administrator
  does it), a message deposited: one mail arrives with the Message-ID of its outbox row and an
  Ogg/Opus attachment that PyAV decodes to the message's length; the box is told to delete it
  (forward without "also keep");
* copy mode with the SMTP server down while the message is deposited: the outbox retries with
  back-off (``asyncpbx mail outbox`` shows it pending with the error); when the server comes up
  the notification and the copy arrive exactly once each;
* the outbox survives a restart: deposited while down, the server stopped, the SMTP server up,
  the PBX started again: the mail arrives exactly once.

The server runs in-process and the deposit is the voicemail box's own step, done here as the box
does it: the store's deposit hook called inside the transaction that records the message.
"""

from __future__ import annotations

import asyncio
import email
import io
import socket
import time
import wave
from email.message import Message
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import numpy as np
import pytest
from aiosmtpd.controller import Controller

from pbx.cli import main as cli
from tests.interop.harness import free_port
from tests.interop.inprocess import serving

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]

USERS = [("100", "pw-100-secret")]


class Inbox:
    """aiosmtpd handler keeping every mail it accepted."""

    def __init__(self) -> None:
        self.mails: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append(email.message_from_bytes(envelope.content))
        return "250 OK"


def smtp_config(port: int) -> str:
    return (f'[smtp]\nhost = "127.0.0.1"\nport = {port}\nstarttls = false\n'
            f'from_address = "voicemail@pbx.test"\nretry_initial = 0.3\nretry_max = 1.0\n'
            f'timeout = 5.0\n')


def recording(path: Path, seconds: float, hz: float = 440.0) -> Path:
    t = np.arange(int(8000 * seconds)) / 8000
    pcm = (8000 * np.sin(2 * np.pi * hz * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm.tobytes())
    return path


def deposit(server: Any, message_id: str, audio: Path, seconds: float) -> None:
    """What the voicemail box does: record the message and run the deposit hooks in one
    transaction (here the hook of the mail outbox alone)."""
    store = server.store
    user_id = server.directory.user(server.domain, "100").id
    message = SimpleNamespace(id=message_id, user_id=user_id, tenant="default",
                              extension="100", caller="03012345", caller_name="Anna Anrufer",
                              received_at=time.time(), duration=seconds, audio_path=str(audio),
                              language="en")
    with store._tx() as db:
        server.mail_outbox.deposit_hook(db, message)
    assert server.mail is not None
    server.mail.wake()


def settings(files: Any, *pairs: str) -> None:
    rc = cli(["settings", "set", "100", "voicemail_mail", *pairs, "--config",
              str(files.workdir / "asyncpbx.toml"), "--data-dir", str(files.data_dir)])
    assert rc == 0


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def attachment(mail: Message) -> tuple[str, bytes]:
    for part in mail.walk():
        if part.get_content_maintype() == "audio":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return part.get_filename() or "", payload
    raise AssertionError("no audio attachment")


def seconds_of(ogg: bytes) -> float:
    with av.open(io.BytesIO(ogg), "r") as c:
        stream = c.streams.audio[0]
        assert stream.codec_context.name == "opus"
        samples = sum(int(f.samples) for f in c.decode(audio=0))
        return samples / float(stream.rate)


async def test_forward_with_attachment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inbox = Inbox()
    port = free_port(kind=socket.SOCK_STREAM)
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        async with serving(tmp_path, USERS, smtp_config(port)) as (server, files):
            settings(files, "mode=forward", "address=bob@example.test")
            deleted: list[str] = []
            monkeypatch.setattr(server.store, "delete_voicemail", deleted.append, raising=False)
            deposit(server, "m7", recording(tmp_path / "m7.wav", 3.0), 3.0)
            await wait_for(lambda: inbox.mails and deleted, 15, "the forwarded mail")
            [mail] = inbox.mails
            [row] = server.store.outbox()
            assert row.status == "sent" and row.kind == "forward"
            assert mail["Message-ID"] == row.message_id
            assert mail["To"] == "bob@example.test"
            assert "Anna Anrufer" in mail["Subject"]
            name, ogg = attachment(mail)
            assert name.endswith(".opus")
            assert abs(seconds_of(ogg) - 3.0) < 0.1
            assert deleted == ["m7"]
            assert not (tmp_path / "m7.wav").exists()  # forwarded, not kept
    finally:
        smtp.stop()


async def test_copy_mode_smtp_down_then_up_arrives_exactly_once(tmp_path: Path,
                                                                capsys: Any) -> None:
    inbox = Inbox()
    port = free_port(kind=socket.SOCK_STREAM)
    async with serving(tmp_path, USERS, smtp_config(port)) as (server, files):
        settings(files, "mode=copy", "address=bob@example.test", "copy_to=office@example.test")
        deposit(server, "m8", recording(tmp_path / "m8.wav", 2.0), 2.0)
        await wait_for(lambda: all(m.attempts >= 2 for m in server.store.outbox()), 10,
                       "two failed attempts")
        rows = server.store.outbox()
        assert len(rows) == 2 and all(m.status == "pending" and m.last_error for m in rows)
        rc = cli(["mail", "outbox", "--config", str(files.workdir / "asyncpbx.toml"),
                  "--data-dir", str(files.data_dir)])
        out = capsys.readouterr().out
        assert rc == 0 and out.count("pending") == 2, out
        smtp = Controller(inbox, hostname="127.0.0.1", port=port)
        smtp.start()
        try:
            await wait_for(lambda: len(inbox.mails) >= 2, 10, "both mails")
            await asyncio.sleep(1.5)  # longer than retry_max: a duplicate would be here now
            assert sorted(m["To"] for m in inbox.mails) == ["bob@example.test",
                                                           "office@example.test"]
            by_to = {m["To"]: m for m in inbox.mails}
            assert not any(p.get_content_maintype() == "audio"
                           for p in by_to["bob@example.test"].walk())
            _, ogg = attachment(by_to["office@example.test"])
            assert abs(seconds_of(ogg) - 2.0) < 0.1
            assert {m["Message-ID"] for m in inbox.mails} == {
                r.message_id for r in server.store.outbox()}
            assert all(r.status == "sent" for r in server.store.outbox())
        finally:
            smtp.stop()


async def test_outbox_survives_a_restart(tmp_path: Path) -> None:
    inbox = Inbox()
    port = free_port(kind=socket.SOCK_STREAM)
    async with serving(tmp_path, USERS, smtp_config(port)) as (server, files):
        settings(files, "mode=notify", "address=bob@example.test")
        deposit(server, "m9", recording(tmp_path / "m9.wav", 1.5), 1.5)
        await wait_for(lambda: server.store.outbox()[0].attempts >= 1, 10, "a failed attempt")
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        async with serving(tmp_path, (), smtp_config(port)) as (server, _):
            await wait_for(lambda: len(inbox.mails) >= 1, 10, "the mail after the restart")
            await asyncio.sleep(1.5)
            [mail] = inbox.mails
            [row] = server.store.outbox()
            assert row.status == "sent" and mail["Message-ID"] == row.message_id
            assert not mail.is_multipart()  # a notification: text only
            body = mail.get_payload(decode=True)
            assert isinstance(body, bytes) and b"*86" in body
    finally:
        smtp.stop()
