"""Voicemail mail (pbx.mail) without a network: what a deposit queues per mode (in the deposit's
own transaction), the texts in German and English, the compact attachment, the sender's
outcomes (sent, retried with back-off, failed for good) and the ``[smtp]`` configuration."""

from __future__ import annotations

import io
import time
import wave
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiosmtplib
import av
import numpy as np
import pytest

from features import default_features
from pbx.callcontrol import FeatureRegistry
from pbx.config import ConfigError, SmtpConfig, load_config
from pbx.mail import MailOutbox, MailSender, backoff, mails_for
from pbx.mail.audio import opus_ogg
from pbx.mail.compose import compose, subject_and_text
from pbx.store import Store
from pbx.store.schema import MIGRATIONS

SCHEMA = FeatureRegistry(default_features()).schema("voicemail_mail") or {}


def wav(path: Path, seconds: float) -> Path:
    t = np.arange(int(8000 * seconds)) / 8000
    pcm = (6000 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm.astype("<i2").tobytes())
    return path


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store(tmp_path)
    s.add_user("100", "pw-100-secret", "r", "Anna", email="anna@example.test")
    yield s
    s.close()


def message(store: Store, audio: Path, **extra: Any) -> SimpleNamespace:
    user_id = store.user("100").id
    fields = {"id": "5a5a", "user_id": user_id, "tenant": "default", "extension": "100",
              "caller": "0301234", "caller_name": "", "received_at": 1.8e9, "duration": 3.0,
              "audio_path": str(audio), "language": "en", **extra}
    return SimpleNamespace(**fields)


def set_mode(store: Store, user_id: int, **value: Any) -> None:
    store.set_feature_settings(user_id, "voicemail_mail", SCHEMA, value)


def test_modes() -> None:
    assert mails_for({"mode": "off"}, "a@x") == []
    assert mails_for({"mode": "forward", "address": ""}, "a@x") == [("forward", "a@x", True)]
    assert mails_for({"mode": "forward", "also_keep": True}, "a@x") == [
        ("forward", "a@x", False)]
    assert mails_for({"mode": "notify", "address": "b@x"}, "a@x") == [("notify", "b@x", False)]
    assert mails_for({"mode": "copy", "copy_to": "c@x"}, "a@x") == [
        ("notify", "a@x", False), ("copy", "c@x", False)]
    assert mails_for({"mode": "notify"}, "") == []


def test_deposit_queues_in_the_deposits_transaction(store: Store, tmp_path: Path) -> None:
    msg = message(store, wav(tmp_path / "m.wav", 1.0))
    set_mode(store, msg.user_id, mode="copy", copy_to="office@example.test")
    outbox = MailOutbox(SCHEMA, "pbx.test")
    with pytest.raises(RuntimeError), store._tx() as db:
        outbox.deposit_hook(db, msg)
        raise RuntimeError("the deposit failed after the hook")
    assert store.outbox() == []  # rolled back with the message
    with store._tx() as db:
        outbox.deposit_hook(db, msg)
    rows = store.outbox()
    assert [(r.kind, r.recipient) for r in rows] == [("notify", "anna@example.test"),
                                                     ("copy", "office@example.test")]
    assert all(r.message_id.startswith("<vm.5a5a.") and r.message_id.endswith("@pbx.test>")
               for r in rows)
    assert len({r.message_id for r in rows}) == 2
    assert rows[1].payload["audio_path"] == msg.audio_path
    assert rows[0].payload["language"] == store.user("100").language  # the owner's
    assert len(MIGRATIONS) >= 6


def test_texts_in_the_users_language() -> None:
    payload = {"caller": "0301234", "caller_name": "Anna", "received_at": 1.8e9,
               "duration": 65, "extension": "100", "user_name": "Ben"}
    de_subject, de_text = subject_and_text("notify", {**payload, "language": "de"},
                                           attached=False)
    en_subject, en_text = subject_and_text("notify", {**payload, "language": "en"},
                                           attached=False)
    assert de_subject == "Neue Sprachnachricht von Anna (0301234) (1:05)"
    assert en_subject == "New voicemail from Anna (0301234) (1:05)"
    assert "Hallo Ben" in de_text and "*86" in de_text
    assert "Hello Ben" in en_text and "*86" in en_text
    unknown, _ = subject_and_text("forward", {"language": "de", "duration": 1}, attached=True)
    assert "Unbekannt" in unknown


def test_a_three_minute_message_fits_well_under_a_megabyte(tmp_path: Path) -> None:
    ogg = opus_ogg(wav(tmp_path / "long.wav", 180.0))
    assert len(ogg) < 600_000
    with av.open(io.BytesIO(ogg), "r") as c:
        stream = c.streams.audio[0]
        samples = sum(int(f.samples) for f in c.decode(audio=0))
        assert abs(samples / float(stream.rate) - 180.0) < 0.1
    mail = compose(kind="forward", payload={"extension": "100", "received_at": 1.8e9,
                                            "language": "en"},
                   sender="vm@pbx.test", recipient="a@x", message_id="<1@pbx.test>",
                   created_at=1.8e9, audio=ogg)
    assert len(mail.as_bytes()) < 1_000_000
    assert mail["Message-ID"] == "<1@pbx.test>" and mail["Content-Language"] == "en"
    long_id = f"<vm.{'a' * 32}.forward.0123abcd@{'sub.' * 12}example.com>"
    folded = compose(kind="notify", payload={"language": "de"}, sender="vm@pbx.test",
                     recipient="a@x", message_id=long_id, created_at=1.8e9, audio=None)
    assert f"Message-ID: {long_id}\r\n".encode() in folded.as_bytes()  # one line, unfolded


class FakeSmtp:
    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.sent: list[Any] = []

    async def __call__(self, message: Any, **kwargs: Any) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.sent.append((message, kwargs))


def queue(store: Store, tmp_path: Path, kind: str = "forward", *, delete_after: bool = True,
          created: float = 1000.0, audio: Path | None = None) -> int:
    path = audio if audio is not None else wav(tmp_path / "q.wav", 1.0)
    return store.outbox_enqueue(message_id=f"<{kind}@pbx.test>", kind=kind,
                                recipient="a@example.test", user_id=None, voicemail_id="5a5a",
                                payload={"audio_path": str(path), "extension": "100",
                                         "received_at": created, "duration": 1.0},
                                delete_after=delete_after, now=created)


async def test_sender_retries_with_backoff_then_sends_once(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    smtp = FakeSmtp(OSError("connection refused"),
                    aiosmtplib.SMTPResponseException(421, "try later"))
    deleted: list[str] = []
    # the box's own delete (pbx.store.voicemail), stood in for
    monkeypatch.setattr(store, "delete_voicemail", deleted.append, raising=False)
    config = SmtpConfig(host="127.0.0.1", port=2525, starttls=False, retry_initial=10,
                        retry_max=15)
    removed: list[str | None] = []
    sender = MailSender(store, config, "vm@pbx.test", clock=lambda: now[0], send=smtp,
                        on_deleted=lambda mail: removed.append(mail.voicemail_id))
    queue(store, tmp_path)
    assert await sender.send_due() == 0
    [row] = store.outbox()
    assert row.status == "pending" and row.next_attempt_at == 1010.0
    assert "connection refused" in row.last_error
    assert await sender.send_due() == 0  # not due yet
    now[0] = 1010.0
    assert await sender.send_due() == 0
    assert store.outbox()[0].next_attempt_at == 1025.0  # 20 s capped at 15
    now[0] = 1025.0
    assert await sender.send_due() == 1
    [row] = store.outbox()
    assert (row.status, row.attempts) == ("sent", 3)
    assert len(smtp.sent) == 1 and smtp.sent[0][0]["Message-ID"] == "<forward@pbx.test>"
    assert smtp.sent[0][1]["start_tls"] is False and smtp.sent[0][1]["port"] == 2525
    assert deleted == ["5a5a"] and removed == ["5a5a"]
    assert not (tmp_path / "q.wav").exists()  # the message's audio went with it
    now[0] = 5000.0
    assert await sender.send_due() == 0 and len(smtp.sent) == 1


async def test_sender_fails_for_good(store: Store, tmp_path: Path) -> None:
    now = [1000.0]
    config = SmtpConfig(host="h", retry_initial=1, retry_max=1, give_up_after=100)
    refused = MailSender(store, config, "vm@pbx.test", clock=lambda: now[0],
                         send=FakeSmtp(aiosmtplib.SMTPResponseException(550, "no such user")))
    queue(store, tmp_path, "notify")
    await refused.send_due()
    assert store.outbox()[0].status == "failed" and "550" in store.outbox()[0].last_error
    gone = MailSender(store, config, "vm@pbx.test", clock=lambda: now[0], send=FakeSmtp())
    queue(store, tmp_path, "copy", audio=tmp_path / "missing.wav")
    await gone.send_due()
    assert store.outbox("failed")[-1].last_error.startswith("PermanentFailure")
    old = MailSender(store, config, "vm@pbx.test", clock=lambda: now[0],
                     send=FakeSmtp(OSError("down")))
    store.outbox_enqueue(message_id="<old@x>", kind="notify", recipient="a@x", user_id=None,
                         voicemail_id=None, payload={}, delete_after=False, now=850.0)
    await old.send_due()
    assert store.outbox("failed")[-1].message_id == "<old@x>"
    assert store.outbox("pending") == []


def test_backoff() -> None:
    assert [backoff(n, 30, 1800) for n in (1, 2, 3, 7, 8)] == [30, 60, 120, 1800, 1800]


@pytest.mark.parametrize(("text", "key"), [
    ('[smtp]\nport = 0\n', "smtp.port"),
    ('[smtp]\nusername = "u"\n', "smtp.password"),
    ('[smtp]\ntls = true\n', "smtp.tls"),
    ('[smtp]\nfrom_address = "nobody"\n', "smtp.from_address"),
    ('[smtp]\nretry_initial = 10\nretry_max = 5\n', "smtp.retry_max"),
    ('[smtp]\nhots = "x"\n', "smtp.hots"),
])
def test_smtp_config_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(cfg, environ={})
    assert str(err.value).startswith(key)


def test_smtp_config(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[smtp]\nhost = "mail.example.com"\nport = 465\nstarttls = false\n'
                   'tls = true\nusername = "pbx"\npassword = "s3cret"\n'
                   'from_address = "voicemail@example.com"\n')
    smtp = load_config(cfg, environ={}).smtp
    assert (smtp.host, smtp.port, smtp.tls, smtp.username) == ("mail.example.com", 465, True,
                                                               "pbx")
    assert time.time() > 0
