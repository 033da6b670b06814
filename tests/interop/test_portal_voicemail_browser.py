"""The voicemail page in a real browser, with a message left over real SIP and RTP (issue 17):
user 101 uploads a greeting in the settings page (an MP3 of a 500 Hz tone, encoded here with
PyAV) and sends every call to the voicemail box in the same page; a SIPp caller (100) hears
that greeting and leaves a message: a 700 Hz tone in its RTP. The open voicemail page shows
the message and the navigation badge "1" without a reload; the message's ``<audio>`` source is
fetched and decoded in the page with WebAudio (``decodeAudioData``) and a Goertzel filter in the
page's JavaScript finds the caller's tone in the decoded samples (and the element itself
plays it). Marking it heard empties the
badge, deleting it empties the box. Screenshots in English and German; axe-core finds no
serious violation."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from media.dtmf import tone_ratio
from tests.interop.harness import read_log
from tests.interop.portal_harness import (
    axe_check,
    base_url,
    browser,
    login,
    portal_passwords_of,
    portal_pbx,
    screenshot,
)
from tests.interop.portal_user_harness import CONFIG, mark_no_reload
from tests.interop.test_calls_sipp import USERS, ulaw_decode
from tests.interop.test_features_sipp import dial
from tests.interop.test_voicemail_sipp import Phone
from tests.pbx.api.test_api_greetings import encoded

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

PASSWORDS = portal_passwords_of(USERS)
CALLER_HZ, GREETING_HZ = 700.0, 500.0

#: In the page: fetch the audio element's source, decode it with WebAudio, and per 20 ms frame
#: the share of its energy at each frequency (Goertzel), as media.dtmf.tone_ratio does.
DECODE = """async ([selector, freqs]) => {
  const el = document.querySelector(selector);
  const resp = await fetch(el.currentSrc || el.src, {credentials: "same-origin"});
  const data = await resp.arrayBuffer();
  const ctx = new OfflineAudioContext(1, 1, 8000);
  const audio = await ctx.decodeAudioData(data);
  const x = audio.getChannelData(0), rate = audio.sampleRate, n = Math.round(rate / 50);
  const share = {};
  for (const hz of freqs) {
    let toned = 0, frames = 0;
    for (let start = 0; start + n <= x.length; start += n) {
      let re = 0, im = 0, energy = 0;
      for (let i = 0; i < n; i++) {
        const v = x[start + i], w = 2 * Math.PI * hz * i / rate;
        re += v * Math.cos(w); im += v * Math.sin(w); energy += v * v;
      }
      frames += 1;
      if (energy === 0) continue;
      const amp = 2 * Math.sqrt(re * re + im * im) / n;
      if ((amp * amp / 2) * n / energy > 0.8) toned += 1;
    }
    share[hz] = toned / Math.max(frames, 1);
  }
  return {status: resp.status, type: resp.headers.get("Content-Type"), rate,
          seconds: x.length / rate, share};
}"""


#: In the page: the audio element itself plays (muted) for a moment.
PLAY = """async (selector) => {
  const el = document.querySelector(selector);
  el.muted = true;
  await el.play();
  await new Promise((done) => setTimeout(done, 700));
  el.pause();
  return {time: el.currentTime, duration: el.duration, error: el.error && el.error.code};
}"""


def _leave_message(pbx: Any, tmp: Path) -> Phone:
    """100 calls 101 (every call to the box), sends its tone for 4 s after the answer."""
    phone = Phone(send_hz=CALLER_HZ)
    try:
        ok, failed, out = dial(pbx, tmp, 0, "101", rtp_port=phone.port, pause_ms=4000)
    finally:
        phone.close()
    assert (ok, failed) == (1, 0), out + read_log(pbx.log_path)[-3000:]
    return phone


def _greeting_heard(phone: Phone) -> int:
    """How many 20 ms packets the caller received carried the uploaded greeting's tone."""
    return sum(1 for _, payload in phone.received
               if tone_ratio(ulaw_decode(payload), GREETING_HZ, 8000) > 0.6)


async def test_a_voicemail_appears_live_with_its_badge_and_plays_the_callers_tone(
        tmp_path: Path) -> None:
    greeting = encoded("mp3", "libmp3lame", seconds=1.0, hz=GREETING_HZ, rate=44100)
    with portal_pbx(tmp_path, config_extra=CONFIG) as pbx:
        base = base_url(pbx)
        async with browser() as b:
            page = await login(b, base, "101", PASSWORDS["101"])
            await page.goto(base + "/portal/settings")
            await page.set_input_files("#greeting-file", files=[{
                "name": "greeting.mp3", "mimeType": "audio/mpeg", "buffer": greeting}])
            await page.click("#greeting-submit")
            await page.wait_for_url(f"{base}/portal/settings?notice=saved*")
            assert await page.is_visible("#greeting-audio")
            await page.check("#f-forwards-immediate-enabled")
            await page.check("#f-forwards-immediate-voicemail")
            await page.click("#save-forward-immediate")
            await page.wait_for_url(f"{base}/portal/settings?notice=saved*")
            assert (await page.text_content("#state-forward-immediate") or "").strip() == \
                "on → voicemail box"

            await page.goto(base + "/portal/voicemail")
            empty_badge = (await page.text_content("#badge-voicemail") or "").strip()
            await page.wait_for_function("window.portal && window.portal.connected")
            await mark_no_reload(page)
            phone = await asyncio.to_thread(_leave_message, pbx, tmp_path)
            await page.wait_for_selector("#voicemail-table tr.new", timeout=5000)
            await page.wait_for_function(
                "document.querySelector('#badge-voicemail').textContent.trim() === 'new: 1'",
                timeout=5000)
            assert await page.evaluate("window.__noReload") == "still here"
            caller = await page.text_content("#voicemail-table tr.new td:nth-child(2)")
            played = await page.evaluate(PLAY, "#voicemail-table tr.new audio")
            decoded = await page.evaluate(DECODE, ["#voicemail-table tr.new audio",
                                                   [CALLER_HZ, 1300.0]])
            axe = await axe_check(page)
            await screenshot(page, "portal-voicemail-en")

            german = await login(b, base, "101", PASSWORDS["101"], lang="de")
            start = (await german.text_content("#home-voicemail") or "").strip()
            await german.goto(base + "/portal/voicemail")
            de_state = (await german.text_content("#voicemail-table td.vm-state") or "").strip()
            axe_de = await axe_check(german)
            await screenshot(german, "portal-voicemail-de")

            await page.click("#voicemail-table tr.new button[id^=mark-]")
            await page.wait_for_selector("#voicemail-table tr.heard")
            heard_badge = (await page.text_content("#badge-voicemail") or "").strip()
            await page.click("#voicemail-table tr.heard button.danger")
            await page.wait_for_selector("#voicemail-empty")
    assert empty_badge == "", empty_badge
    assert caller is not None and caller.strip() == "User 100 100", caller
    assert _greeting_heard(phone) >= 25, "the caller did not hear the uploaded greeting"
    assert played["error"] is None and played["time"] > 0.3, played  # it plays in the page
    assert abs(played["duration"] - decoded["seconds"]) < 0.1, (played, decoded)
    assert decoded["status"] == 200 and decoded["type"] == "audio/wav", decoded
    # 4 s talked, less the greeting (1 s) and the beep (0.5 s)
    assert abs(decoded["seconds"] - 2.5) < 0.6, decoded
    assert decoded["share"]["700"] > 0.9, decoded  # the caller's tone
    assert decoded["share"]["1300"] == 0.0, decoded
    assert de_state == "neu", de_state
    assert start == "Neue Sprachbox-Nachrichten: 1", start  # the count on the start page
    assert heard_badge == "", heard_badge
    assert axe == [] and axe_de == [], (axe, axe_de)
    print(f"decoded in the page: {decoded}; greeting heard in "
          f"{_greeting_heard(phone)} packets")
