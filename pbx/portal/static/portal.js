// The portal's live updates. Pages work without this script; with it, an element marked
// data-live="KIND …" is refreshed in place when an event of that kind (or of a kind starting
// with "KIND.") arrives on /api/v1/events: the page is fetched again and each such element
// replaced by its new version (same id). The socket reconnects with ?since= (no gap).
// window.portal is what the browser tests read (events seen, refreshes done).
const state = { seq: 0, events: [], refreshes: 0, connected: false };
window.portal = state;

function matches(kinds, kind) {
  return kinds.split(/\s+/).some((k) => k && (kind === k || kind.startsWith(k + ".")));
}

let pending = null;
const dirty = new Set();

async function refresh() {
  pending = null;
  const ids = [...dirty];
  dirty.clear();
  const resp = await fetch(location.href, { credentials: "same-origin",
                                            headers: { "X-Portal-Refresh": "1" } });
  if (!resp.ok) return;
  const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
  for (const id of ids) {
    const now = document.getElementById(id);
    const fresh = doc.getElementById(id);
    if (now && fresh && !now.contains(document.activeElement)) now.replaceWith(fresh);
    else if (now && fresh) now.innerHTML = fresh.innerHTML;
  }
  state.refreshes += 1;
  document.dispatchEvent(new CustomEvent("portal:refreshed", { detail: ids }));
}

function onEvent(ev) {
  state.events.push(ev.kind);
  if (ev.seq) state.seq = ev.seq;
  document.dispatchEvent(new CustomEvent("portal:event", { detail: ev }));
  for (const el of document.querySelectorAll("[data-live]")) {
    if (el.id && (ev.kind === "gap" || matches(el.dataset.live, ev.kind))) dirty.add(el.id);
  }
  if (dirty.size && pending === null) pending = setTimeout(refresh, 80);
}

function connect(delay) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const since = state.seq ? `?since=${state.seq}` : "";
  const ws = new WebSocket(`${scheme}//${location.host}/api/v1/events${since}`);
  ws.addEventListener("open", () => { state.connected = true; delay = 500; });
  ws.addEventListener("message", (msg) => {
    try { onEvent(JSON.parse(msg.data)); } catch (err) { console.warn("portal event", err); }
  });
  ws.addEventListener("close", () => {
    state.connected = false;
    setTimeout(() => connect(Math.min(delay * 2, 10000)), delay);
  });
}

if (document.body.dataset.user !== undefined) connect(500);
