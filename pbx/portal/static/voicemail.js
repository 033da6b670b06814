// The voicemail page: a new message listened to the end in the browser is marked heard, as
// listening on the phone does (through the public API; the page then follows the
// voicemail.changed event — at the end, so the refresh does not cut the playback short).
document.addEventListener("ended", async (ev) => {
  const el = ev.target;
  if (!(el instanceof HTMLAudioElement) || el.dataset.new !== "true") return;
  el.dataset.new = "false";
  await fetch(`/api/v1/users/me/voicemail/messages/${el.dataset.id}`, {
    method: "PATCH", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": document.body.dataset.csrf },
    body: JSON.stringify({ heard: true }),
  });
}, true);
