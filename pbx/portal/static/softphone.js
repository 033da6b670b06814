// The portal's browser softphone (views/phone.py): JsSIP over the PBX's SIP WebSocket, audio by
// WebRTC. It registers by itself as the signed-in user: POST /portal/phone/account (the
// session's CSRF header) answers the SIP account of the user's browser phone (username, realm,
// HA1: no password is typed or handed out). It rings with the user's other phones.
// Everything else goes through SIP (REFER for transfers) or the public API (conference).
// window.softphone is what the browser tests drive and read; ?tone=HZ (a test hook) sends a
// generated tone instead of the microphone.
/* global JsSIP */
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const msgs = $("softphone-msgs").dataset;
const LONG_PRESS_MS = 700;
const state = { registered: false, registrationFailed: null, session: null, second: null,
                incoming: 0, ended: 0, failed: [], events: [], dtmfReceived: [], held: false,
                muted: false, stats: null, account: null, party: "", messages: [], colleague: null };
window.softphone = state;
let ua = null;
let audioCtx = null;
let analyser = null;
let qualityTimer = null;

function log(event, detail) { state.events.push(detail ? `${event}:${detail}` : event); }

function status(text) { $("phone-status").textContent = text; }

function fill(template, who) { return template.replace("{who}", who); }

function context() {
  if (audioCtx === null) audioCtx = new AudioContext({ sampleRate: 48000 });
  return audioCtx;
}

function micStream() {
  const tone = Number(params.get("tone") || 0);
  if (!tone) return undefined;
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

function domain() { return state.account.domain; }

function uriOf(target) {
  const t = target.trim().replace(/[\s-]/g, "");
  return t.startsWith("sip:") ? t : `sip:${t}@${domain()}`;
}

function buttons() {
  const s = state.session;
  const ringing = s !== null && s.direction === "incoming" && !s.isEstablished();
  const live = s !== null && s.isEstablished();
  $("btn-call").disabled = !state.registered || (s !== null && !live);
  $("btn-answer").disabled = !ringing;
  $("btn-reject").disabled = !ringing;
  $("btn-hangup").disabled = s === null;
  $("in-call").disabled = !live;
  $("btn-complete").disabled = state.second === null;
  $("btn-hold").setAttribute("aria-pressed", String(state.held));
  $("btn-hold").textContent = state.held ? msgs.resume : msgs.hold;
  $("btn-mute").setAttribute("aria-pressed", String(state.muted));
  $("btn-mute").textContent = state.muted ? msgs.unmute : msgs.mute;
}

async function colleague(extension) {
  if (!/^[0-9]+$/.test(extension)) return null;
  try {
    const resp = await fetch(`/api/v1/directory?q=${encodeURIComponent(extension)}`,
                             { credentials: "same-origin" });
    return (await resp.json()).items.find((u) => u.extension === extension) || null;
  } catch (err) { console.warn("directory", err); return null; }
}

// A chat message delivered to this browser phone (SIP MESSAGE; JsSIP answers 200): shown
// beside the call with a link to the conversation (the chat page has the whole history).
async function showMessage(ev) {
  const from = ev.request.from;
  const body = ev.request.body || "";
  state.messages.push({ from: from.uri.user, body });
  const item = addMessage(from.display_name || from.uri.user, body);
  const found = await colleague(from.uri.user);
  if (found) {
    const link = document.createElement("a");
    link.href = `/portal/chat/${found.id}`;
    link.target = "_blank";
    link.rel = "noopener";
    link.textContent = msgs.reply;
    item.append(" ", link);
  }
}

function addMessage(who, body) {
  const item = document.createElement("li");
  const from = document.createElement("strong");
  from.textContent = `${who}: `;
  const text = document.createElement("span");
  text.textContent = body;
  item.append(from, text);
  $("phone-chat-list").append(item);
  $("phone-chat").hidden = false;
  return item;
}

// During a call with a colleague: the chat link names them and a message can be sent from
// here (the API's send_chat_message; it reaches their phones and their portal live).
async function chatLink(party) {
  const link = $("chat-link");
  link.href = "/portal/chat";
  state.colleague = null;
  $("phone-chat-form").hidden = true;
  const found = await colleague(party);
  if (found) {
    state.colleague = found;
    link.href = `/portal/chat/${found.id}`;
    link.textContent = fill(msgs.chat, found.name || found.extension);
    $("phone-chat").hidden = false;
    $("phone-chat-form").hidden = false;
  }
}

async function sendChat(text) {
  const to = state.colleague;
  const body = (text === undefined ? $("phone-chat-text").value : text).trim();
  if (!to || !body) return false;
  const resp = await fetch(`/api/v1/users/me/chats/${to.id}`, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json",
               "X-CSRF-Token": document.body.dataset.csrf },
    body: JSON.stringify({ text: body }) });
  if (resp.ok) { addMessage(msgs.you, body); $("phone-chat-text").value = ""; }
  return resp.ok;
}

function attach(session, main) {
  if (session.connection) listen(session.connection);
  session.on("peerconnection", (e) => listen(e.peerconnection));
  session.on("progress", () => {
    log("ringing");
    if (main() && session.direction === "outgoing") status(msgs.ringing);
  });
  session.on("accepted", () => log("answered"));
  session.on("confirmed", () => {
    log(state.second === session ? "consult-confirmed" : "confirmed");
    const who = session.remote_identity.display_name || session.remote_identity.uri.user;
    if (main()) { status(fill(msgs.connected, who)); startQuality(); chatLink(session.remote_identity.uri.user); }
    else status(msgs.consulting);
    buttons();
  });
  session.on("hold", (e) => log("hold", e.originator));
  session.on("unhold", (e) => log("unhold", e.originator));
  session.on("newDTMF", (e) => { if (e.originator === "remote") state.dtmfReceived.push(e.dtmf.tone); });
  const finish = (cause, failed) => {
    if (state.second === session) { state.second = null; buttons(); return; }
    if (state.session !== session) return;
    state.session = null; state.held = false; state.muted = false;
    stopQuality();
    status(failed && ["Busy", "Rejected"].includes(cause) ? msgs.busy : msgs.ended);
    $("phone-party").textContent = "";
    $("phone-chat-form").hidden = true;
    state.colleague = null;
    buttons();
  };
  session.on("ended", (e) => { state.ended += 1; log("ended", e.cause); finish(e.cause, false); });
  session.on("failed", (e) => {
    state.failed.push({ cause: e.cause, status: e.message ? e.message.status_code : null });
    log("failed", e.cause); finish(e.cause, true);
  });
}

async function register() {
  const resp = await fetch("/portal/phone/account", {
    method: "POST", credentials: "same-origin", cache: "no-store",
    headers: { "X-CSRF-Token": document.body.dataset.csrf } });
  if (!resp.ok) { state.registrationFailed = `account ${resp.status}`; status(msgs.failed); return; }
  const account = await resp.json();
  state.account = account;
  const secure = account.websockets.find((u) => u.startsWith("wss:"));
  const plain = account.websockets.find((u) => u.startsWith("ws:"));
  const chosen = location.protocol === "https:" ? (secure || plain) : (plain || secure);
  if (!chosen) { state.registrationFailed = "no websocket"; status(msgs.failed); return; }
  const url = new URL(chosen);
  if (["0.0.0.0", "[::]"].includes(url.hostname)) url.hostname = location.hostname;
  ua = new JsSIP.UA({ sockets: [new JsSIP.WebSocketInterface(url.toString())],
                      uri: account.uri, authorization_user: account.username,
                      realm: account.realm, ha1: account.ha1,
                      display_name: account.display_name, register: true,
                      session_timers: true, user_agent: "asyncpbx portal" });
  ua.on("registered", () => {
    state.registered = true; log("registered");
    status(msgs.registered); buttons();
  });
  ua.on("unregistered", () => { state.registered = false; log("unregistered"); buttons(); });
  ua.on("registrationFailed", (e) => {
    state.registrationFailed = e.cause; log("registration failed", e.cause);
    status(`${msgs.failed} (${e.cause})`); buttons();
  });
  ua.on("newMessage", (e) => {
    if (e.originator === "remote") showMessage(e).catch((err) => console.warn("message", err));
  });
  ua.on("newRTCSession", (e) => {
    const session = e.session;
    if (e.originator === "remote") {
      if (state.session !== null) {  // busy here: the PBX treats it as call waiting
        session.terminate({ status_code: 486, reason_phrase: "Busy Here" });
        return;
      }
      state.incoming += 1;
      state.session = session;
      const who = e.request.from.display_name || e.request.from.uri.user;
      state.party = e.request.from.uri.user;
      status(fill(msgs.incoming, who));
      $("phone-party").textContent = who;
      log("incoming", e.request.from.uri.user);
      attach(session, () => state.session === session);
      buttons();
      if (params.get("autoanswer") === "1") answer();
    }
  });
  ua.start();
}

function call(target) {
  const dialled = (target || $("dial-target").value).trim();
  if (!dialled || ua === null) return false;
  if (state.session !== null && state.session.isEstablished()) {  // a second call: consult
    consult(dialled);
    return true;
  }
  const session = ua.call(uriOf(dialled), options());
  state.session = session;
  state.party = dialled;
  $("phone-party").textContent = dialled;
  status(msgs.calling);
  attach(session, () => state.session === session);
  buttons();
  return true;
}

function answer() {
  if (state.session && !state.session.isEstablished()) state.session.answer(options());
}

function reject() {
  if (state.session && !state.session.isEstablished()) {
    state.session.terminate({ status_code: 486, reason_phrase: "Busy Here" });
  }
}

function hangup() {
  if (state.second) { state.second.terminate(); return; }
  if (state.session) state.session.terminate();
}

function hold(on) {
  const s = state.session;
  if (!s || !s.isEstablished()) return;
  const want = on === undefined ? !state.held : on;
  if (want) s.hold(); else s.unhold();
  state.held = want;
  if (want) status(msgs.held); else status(fill(msgs.connected, state.party));
  buttons();
}

function mute(on) {
  const s = state.session;
  if (!s || !s.isEstablished()) return;
  const want = on === undefined ? !state.muted : on;
  if (want) s.mute({ audio: true }); else s.unmute({ audio: true });
  state.muted = want;
  buttons();
}

function dtmf(tones, rfc4733) {
  const s = state.second || state.session;
  if (s && s.isEstablished()) s.sendDTMF(tones, { transportType: rfc4733 ? "RFC2833" : "INFO" });
}

// Blind: REFER to the target; the other party is connected there and we drop out.
function transfer(target) {
  const s = state.session;
  const to = (target || $("transfer-target").value).trim();
  if (!s || !s.isEstablished() || !to) return false;
  const refer = s.refer(uriOf(to));
  refer.on("accepted", () => { log("transferred"); status(msgs.transferred); });
  refer.on("failed", () => { log("transfer failed"); status(msgs.error); });
  return true;
}

// Attended: hold the first call and call the target; "complete" sends REFER with Replaces.
function consult(target) {
  const s = state.session;
  const to = (target || $("transfer-target").value).trim();
  if (!s || !s.isEstablished() || !to || state.second) return false;
  if (!state.held) hold(true);
  const second = ua.call(uriOf(to), options());
  state.second = second;
  attach(second, () => false);
  status(msgs.consulting);
  buttons();
  return true;
}

function completeTransfer() {
  const s = state.session, second = state.second;
  if (!s || !second || !second.isEstablished()) return false;
  const refer = s.refer(second.remote_identity.uri, { replaces: second });
  refer.on("accepted", () => { log("transferred"); status(msgs.transferred); });
  refer.on("failed", () => { log("transfer failed"); status(msgs.error); });
  return true;
}

// Conference: the API rings the number and joins it to the call in progress (the PBX's mixer).
async function conference(target) {
  const to = (target || $("transfer-target").value).trim();
  if (!state.session || !to) return false;
  const calls = await (await fetch("/api/v1/calls", { credentials: "same-origin" })).json();
  const mine = calls.items.filter((c) => c.state === "answered");
  if (!mine.length) return false;
  const callId = mine[mine.length - 1].call_id;
  const resp = await fetch(`/api/v1/calls/${encodeURIComponent(callId)}/conference/participants`, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json",
               "X-CSRF-Token": document.body.dataset.csrf },
    body: JSON.stringify({ number: to }) });
  log(resp.ok ? "conference" : "conference failed", String(resp.status));
  status(resp.ok ? msgs.conference : msgs.error);
  return resp.ok;
}

// The call's quality from getStats: what arrives (packets, lost, jitter) and the round trip.
async function quality() {
  const s = state.session;
  if (!s || !s.connection) return null;
  const stats = await s.connection.getStats();
  const q = { received: 0, lost: 0, jitterMs: null, rttMs: null, codec: "" };
  stats.forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "audio") {
      q.received = r.packetsReceived || 0;
      q.lost = r.packetsLost || 0;
      if (r.jitter !== undefined) q.jitterMs = Math.round(r.jitter * 1000);
      if (r.codecId && stats.get(r.codecId)) q.codec = stats.get(r.codecId).mimeType;
    }
    if (r.type === "remote-inbound-rtp" && r.roundTripTime !== undefined) {
      q.rttMs = Math.round(r.roundTripTime * 1000);
    }
    if (r.type === "candidate-pair" && r.nominated && q.rttMs === null &&
        r.currentRoundTripTime !== undefined) {
      q.rttMs = Math.round(r.currentRoundTripTime * 1000);
    }
  });
  state.stats = q;
  $("q-codec").textContent = q.codec.replace("audio/", "") || "–";
  $("q-received").textContent = String(q.received);
  const pct = q.received + q.lost > 0 ? (100 * q.lost / (q.received + q.lost)).toFixed(1) : "0.0";
  $("q-lost").textContent = `${q.lost} (${pct} %)`;
  $("q-jitter").textContent = q.jitterMs === null ? "–" : `${q.jitterMs} ms`;
  $("q-rtt").textContent = q.rttMs === null ? "–" : `${q.rttMs} ms`;
  return q;
}

function startQuality() {
  stopQuality();
  qualityTimer = setInterval(() => { quality().catch(() => {}); }, 1000);
}

function stopQuality() {
  if (qualityTimer !== null) clearInterval(qualityTimer);
  qualityTimer = null;
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
  return { freq: best * hz, level };
}

function keypad() {
  for (const button of document.querySelectorAll("#dialpad button")) {
    const key = button.dataset.key;
    let timer = null, held = false;
    button.addEventListener("pointerdown", () => {
      held = false;
      if (key === "1" && state.session === null && ua !== null) {
        timer = setTimeout(() => {
          held = true; call(state.account.voicemail_code || "*86");
        }, LONG_PRESS_MS);
      }
    });
    const release = (act) => {
      if (timer !== null) { clearTimeout(timer); timer = null; }
      if (!act || held) return;
      if (state.session && state.session.isEstablished()) dtmf(key);
      else $("dial-target").value += key;
    };
    button.addEventListener("pointerup", () => release(true));
    button.addEventListener("pointerleave", () => release(false));
    button.addEventListener("keydown", (ev) => {  // keyboard: Enter/Space act like a press
      if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); release(true); }
    });
  }
}

$("softphone").hidden = false;
keypad();
$("btn-call").onclick = () => call();
$("btn-answer").onclick = answer;
$("btn-reject").onclick = reject;
$("btn-hangup").onclick = hangup;
$("btn-hold").onclick = () => hold();
$("btn-mute").onclick = () => mute();
$("btn-transfer").onclick = () => transfer();
$("btn-consult").onclick = () => consult();
$("btn-complete").onclick = completeTransfer;
$("btn-conference").onclick = () => conference();
$("phone-chat-form").addEventListener("submit", (ev) => { ev.preventDefault(); sendChat(); });
$("dial-target").addEventListener("keydown", (ev) => { if (ev.key === "Enter") call(); });
Object.assign(state, { call, answer, reject, hangup, hold, mute, dtmf, transfer, consult,
                       completeTransfer, conference, quality, analyse, sendChat });
buttons();
register().catch((err) => { state.registrationFailed = String(err); status(msgs.failed); });
