"""Two baresip softphones call each other through asyncpbx: 100 calls 101, 101 answers by
itself (``answermode=auto``); each plays its own tone file (``aufile``) and records what it sends
and hears (the ``sndfile`` filter dumps ``*-enc.wav``/``*-dec.wav``). Each side must hear the
other's tone — with both legs on G.711 (relayed in the media core) and with one leg on Opus or
G.722 (transcoded)."""

from __future__ import annotations

import subprocess
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from media.dtmf import tone_ratio
from tests.interop.harness import PbxProcess, need, read_log, running_pbx

pytestmark = pytest.mark.interop

USERS = [("100", "pw-100-secret"), ("101", "pw-101-secret")]
MEDIA = Path(__file__).resolve().parent / "media"
#: The two sides' tones (Hz): far from each other and from the ringback's 425 Hz.
TONE_100, TONE_101 = 697.0, 1209.0


#: baresip's aufile source wants the codec's own sample rate.
FORMATS = {"PCMU": (8000, 1), "PCMA": (8000, 1), "G722": (16000, 1), "opus": (48000, 2)}


def tone_file(freq: float, fmt: tuple[int, int] = (8000, 1)) -> Path:
    """A 10 s WAV sine at (rate, channels) (generated once, kept in tests/interop/media)."""
    rate, channels = fmt
    path = MEDIA / f"tone-{int(freq)}-{rate}-{channels}.wav"
    if not path.exists():
        MEDIA.mkdir(exist_ok=True)
        n = np.arange(rate * 10)
        pcm = (12000 * np.sin(2 * np.pi * freq * n / rate)).astype("<i2")
        pcm = np.repeat(pcm, channels)
        tmp = path.with_suffix(".tmp")
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(channels)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(pcm.tobytes())
        tmp.rename(path)
    return path


def baresip_dir(root: Path, ext: str, password: str, server: tuple[str, int], tone: Path,
                codecs: str) -> Path:
    d = root / f"baresip-{ext}"
    d.mkdir()
    host, port = server
    (d / "accounts").write_text(
        f"<sip:{ext}@{host}:{port};transport=udp>;auth_pass={password};answermode=auto\n")
    # the phone offers/accepts only the codec whose module it loads
    module = {"PCMU": "g711", "PCMA": "g711", "opus": "opus", "G722": "g722"}[codecs]
    (d / "config").write_text(
        "module_path /usr/lib/baresip/modules\n"
        "sip_listen 127.0.0.1:0\nsip_trans_def udp\n"
        f"module account.so\nmodule menu.so\nmodule {module}.so\n"
        "module aufile.so\nmodule aubridge.so\nmodule sndfile.so\n"
        f"snd_path {d}\n"
        # no sound card: the player is a bridge device nobody reads; sndfile records anyway
        "audio_player aubridge,nowhere\n"
        f"audio_source aufile,{tone}\n"
        "rtp_ports 44000-44999\n")
    return d


def recording(d: Path) -> tuple[np.ndarray, int]:
    """What the phone heard (sndfile's decoded dump): mono samples and rate."""
    files = sorted(d.glob("dump-*-dec.wav"))
    assert files, f"no recording in {d}: {read_log(d / 'out.log')[-2000:]}"
    with wave.open(str(files[-1])) as w:
        rate, channels = w.getframerate(), w.getnchannels()
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    if channels > 1:
        pcm = pcm.reshape(-1, channels)[:, 0]
    return pcm, rate


def best_ratio(pcm: np.ndarray, freq: float, rate: int) -> float:
    """The largest share of energy at ``freq`` over 200 ms windows (the call's middle part)."""
    win = rate // 5
    ratios = [tone_ratio(pcm[i:i + win], freq, rate) for i in range(0, len(pcm) - win, win)]
    return max(ratios, default=0.0)


def wait_for(pbx: PbxProcess, event: str, count: int = 1, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len([e for e in pbx.log_events() if e.get("event") == event]) >= count:
            return True
        time.sleep(0.2)
    return False


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(("codecs_100", "codecs_101", "transcoded"), [
    ("PCMU", "PCMU", False),
    ("PCMU", "opus", True),
    ("PCMU", "G722", True),
])
def test_two_softphones_hear_each_other(tmp_path: Path, codecs_100: str, codecs_101: str,
                                        transcoded: bool) -> None:
    binary = need("baresip")
    extra = "[media]\nport_min = 40000\nport_max = 43999\n"
    with running_pbx(tmp_path / "pbx", transports=("udp",), users=USERS,
                     config_extra=extra) as pbx:
        server = pbx.addr("udp")
        d101 = baresip_dir(tmp_path, "101", USERS[1][1], server, tone_file(TONE_101, FORMATS[codecs_101]),
                           codecs_101)
        callee = subprocess.Popen([binary, "-f", str(d101)], stdin=subprocess.PIPE,
                                  stdout=(d101 / "out.log").open("w"), stderr=subprocess.STDOUT,
                                  text=True)
        caller = None
        try:
            assert wait_for(pbx, "sip.register.added"), "101 did not register"
            d100 = baresip_dir(tmp_path, "100", USERS[0][1], server,
                               tone_file(TONE_100, FORMATS[codecs_100]), codecs_100)
            caller = subprocess.Popen(
                [binary, "-f", str(d100), "-e", f"/dial sip:101@{server[0]}:{server[1]}"],
                stdin=subprocess.PIPE, stdout=(d100 / "out.log").open("w"),
                stderr=subprocess.STDOUT, text=True)
            assert wait_for(pbx, "call.answered"), read_log(d100 / "out.log")[-3000:]
            time.sleep(3.0)  # talk
        finally:
            if caller is not None:
                stop(caller)  # the caller hangs up (BYE)
            assert wait_for(pbx, "call.ended", timeout=10)
            stop(callee)
        answered = next(e for e in pbx.log_events() if e.get("event") == "call.answered")
    heard_100, rate_100 = recording(d100)
    heard_101, rate_101 = recording(d101)
    # each side hears the other's tone (and not just its own echo)
    assert best_ratio(heard_100, TONE_101, rate_100) > 0.6
    assert best_ratio(heard_101, TONE_100, rate_101) > 0.6
    assert best_ratio(heard_101, TONE_101, rate_101) < 0.2
    codecs = answered["codecs"]
    assert isinstance(codecs, list) and len(codecs) == 2
    assert (codecs[0] != codecs[1]) is transcoded, codecs
