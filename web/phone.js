// The /phone page: JsSIP over the PBX's WebSocket, WebRTC audio.
// Query parameters (for a quick start and for the tests): ws, user, password, target,
// autoregister=1, autoanswer=1, tone=HZ (a generated tone instead of the microphone).
// The keypad: a key types into the number field, or during a call sends its DTMF; holding 1
// (LONG_PRESS_MS) calls the voicemail box (the "voicemail.listen" code, *86 unless the
// server's config.json names another).
// Test hooks besides: state.rejectNext (answer the next incoming call 486), state.dtmf (digits
// received by INFO).
// window.phone is what the browser tests drive and read.
(function () {
  "use strict";
  const params = new URLSearchParams(location.search);
  const $ = (id) => document.getElementById(id);
  const state = { registered: false, registrationFailed: null, session: null, events: [],
                  incoming: 0, ended: 0, failed: [], dtmf: [], rejectNext: false,
                  config: null };
  const LONG_PRESS_MS = 700;
  let ua = null;
  let audioCtx = null;
  let analyser = null;

  function log(event, detail) {
    state.events.push(detail ? `${event}:${detail}` : event);
    $("status").textContent = detail ? `${event} (${detail})` : event;
  }

  function context() {
    if (audioCtx === null) audioCtx = new AudioContext({ sampleRate: 48000 });
    return audioCtx;
  }

  function micStream() {
    const tone = Number(params.get("tone") || 0);
    if (!tone) return undefined;  // JsSIP asks for the microphone
    const ctx = context();
    const osc = ctx.createOscillator();
    osc.frequency.value = tone;
    const gain = ctx.createGain();
    gain.gain.value = 0.3;
    const dest = ctx.createMediaStreamDestination();
    osc.connect(gain).connect(dest);
    osc.start();
    return dest.stream;
  }

  function listen(pc) {
    pc.addEventListener("track", (ev) => {
      const stream = ev.streams[0] || new MediaStream([ev.track]);
      $("remote").srcObject = stream;  // Chromium feeds WebAudio only from a played stream
      const ctx = context();
      analyser = ctx.createAnalyser();
      analyser.fftSize = 8192;
      analyser.smoothingTimeConstant = 0.5;
      ctx.createMediaStreamSource(stream).connect(analyser);
    });
  }

  function options() {
    const o = { mediaConstraints: { audio: true, video: false },
                pcConfig: { iceServers: [] }, sessionTimersExpires: 1800 };
    const stream = micStream();
    if (stream) o.mediaStream = stream;
    return o;
  }

  function attach(session) {
    state.session = session;
    $("hangup").disabled = false;
    if (session.connection) listen(session.connection);
    session.on("peerconnection", (e) => listen(e.peerconnection));
    session.on("progress", () => log("ringing"));
    session.on("hold", (e) => log("hold", e.originator));
    session.on("unhold", (e) => log("unhold", e.originator));
    session.on("newDTMF", (e) => { if (e.originator === "remote") state.dtmf.push(e.dtmf.tone); });
    session.on("accepted", () => log("answered"));
    session.on("confirmed", () => log("confirmed"));
    session.on("ended", (e) => { state.ended += 1; log("ended", e.cause); done(); });
    session.on("failed", (e) => {
      state.failed.push({ cause: e.cause, status: e.message ? e.message.status_code : null });
      log("failed", e.cause); done();
    });
  }

  function done() {
    state.session = null;
    $("hangup").disabled = true;
    $("answer").disabled = true;
  }

  function register() {
    const ws = $("ws").value, user = $("user").value;
    const domain = (state.config && state.config.domain) || new URL(ws).hostname;
    ua = new JsSIP.UA({ sockets: [new JsSIP.WebSocketInterface(ws)],
                        uri: `sip:${user}@${domain}`, password: $("password").value,
                        register: true, session_timers: true });
    ua.on("registered", () => { state.registered = true; log("registered"); });
    ua.on("unregistered", () => { state.registered = false; log("unregistered"); });
    ua.on("registrationFailed", (e) => { state.registrationFailed = e.cause; log("registration failed", e.cause); });
    ua.on("newRTCSession", (e) => {
      attach(e.session);
      if (e.originator === "remote") {
        state.incoming += 1;
        $("answer").disabled = false;
        log("incoming call", e.request.from.uri.user);
        if (state.rejectNext) {
          state.rejectNext = false;
          e.session.terminate({ status_code: 486, reason_phrase: "Busy Here" });
        } else if (params.get("autoanswer") === "1") {
          answer();
        }
      }
    });
    ua.start();
  }

  function call(target) {
    const domain = (state.config && state.config.domain) || new URL($("ws").value).hostname;
    const dialled = target || $("target").value;
    ua.call(dialled.startsWith("sip:") ? dialled : `sip:${dialled}@${domain}`, options());
  }

  function answer() {
    if (state.session) state.session.answer(options());
  }

  function hangup() {
    if (state.session) state.session.terminate();
  }

  function hold(on) {
    if (!state.session) return;
    if (on) state.session.hold(); else state.session.unhold();
  }

  // A re-INVITE with a new offer: unchanged, or restarting ICE (new ufrag/pwd, new candidates).
  // JsSIP ends the call if it fails; state.events gets "renegotiated" when it worked.
  function renegotiate(iceRestart) {
    if (!state.session) return false;
    const options = iceRestart ? { rtcOfferConstraints: { iceRestart: true } } : {};
    return state.session.renegotiate(options, () => log("renegotiated"));
  }

  // The local and remote ports of the ICE candidate pair carrying the call (getStats).
  async function selectedPair() {
    if (!state.session || !state.session.connection) return null;
    const stats = await state.session.connection.getStats();
    let pair = null;
    stats.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (pair === null) return null;
    const local = stats.get(pair.localCandidateId), remote = stats.get(pair.remoteCandidateId);
    return { local: local.port, remote: remote.port, state: pair.state };
  }

  // DTMF by SIP INFO (the keypad), or in the audio stream as RFC 4733 events (rfc4733 true).
  function dtmf(tones, rfc4733) {
    if (state.session) {
      state.session.sendDTMF(tones, { transportType: rfc4733 ? "RFC2833" : "INFO" });
    }
  }

  // The dominant frequency (Hz) and its level (dBFS) of what we hear, 100-4000 Hz.
  function analyse() {
    if (analyser === null) return { freq: 0, level: -200 };
    const bins = new Float32Array(analyser.frequencyBinCount);
    analyser.getFloatFrequencyData(bins);
    const hz = audioCtx.sampleRate / analyser.fftSize;
    let best = -1, level = -Infinity;
    for (let i = Math.ceil(100 / hz); i < Math.min(bins.length, 4000 / hz); i++) {
      if (bins[i] > level) { level = bins[i]; best = i; }
    }
    return { freq: best * hz, level: level };
  }

  function voicemailCode() {
    return (state.config && state.config.voicemail_code) || "*86";
  }

  // Keys act on release; holding 1 calls the box instead (once, when the hold is long enough).
  function keypad() {
    for (const button of document.querySelectorAll("#keypad button")) {
      const key = button.textContent.trim();
      let timer = null, held = false;
      button.addEventListener("pointerdown", () => {
        held = false;
        if (key === "1" && !state.session && ua !== null) {
          timer = setTimeout(() => { held = true; log("voicemail"); call(voicemailCode()); },
                             LONG_PRESS_MS);
        }
      });
      const release = (act) => {
        if (timer !== null) { clearTimeout(timer); timer = null; }
        if (!act || held) return;
        if (state.session) dtmf(key); else $("target").value += key;
      };
      button.addEventListener("pointerup", () => release(true));
      button.addEventListener("pointerleave", () => release(false));
    }
  }

  keypad();
  $("register").onclick = register;
  $("call").onclick = () => call();
  $("answer").onclick = answer;
  $("hangup").onclick = hangup;
  for (const key of ["ws", "user", "password", "target"]) {
    if (params.get(key)) $(key).value = params.get(key);
  }
  // Our public GRUU (RFC 5627) from the registrar's 200, or null.
  function gruu() {
    return ua === null ? null : ua.contact.pub_gruu;
  }

  window.phone = { state, register, call, answer, hangup, hold, dtmf, analyse, renegotiate,
                   selectedPair, gruu };
  fetch("/phone/config.json").then((r) => r.json()).then((config) => {
    state.config = config;
    if (!$("ws").value && config.websockets.length) {
      const secure = config.websockets.find((u) => u.startsWith("wss:"));
      const url = new URL(location.protocol === "https:" && secure ? secure : config.websockets[0]);
      if (["0.0.0.0", "[::]"].includes(url.hostname)) url.hostname = location.hostname;
      $("ws").value = url.toString();
    }
    if (params.get("autoregister") === "1") register();
  }).catch((err) => log("no config", String(err)));
})();
