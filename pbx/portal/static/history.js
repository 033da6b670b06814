// The call history page: a call's entry is written by the server's history worker a moment
// after its call.ended event, so besides portal.js's refresh on the event, look again once
// shortly after (the swap of #history is the same as portal.js's).
async function again() {
  const resp = await fetch(location.href, { credentials: "same-origin" });
  if (!resp.ok) return;
  const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
  const now = document.getElementById("history");
  const fresh = doc.getElementById("history");
  if (now && fresh && !now.contains(document.activeElement) && now.innerHTML !== fresh.innerHTML) {
    now.replaceWith(fresh);
  }
}

document.addEventListener("portal:event", (ev) => {
  if (ev.detail && ev.detail.kind === "call.ended") setTimeout(again, 700);
});
