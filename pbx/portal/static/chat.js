// A conversation page with JavaScript: the send form posts to the API instead of reloading
// (the message then appears through the live refresh of #messages on chat.message, like the
// other party's), and the newest message stays in view. Without this the form posts and the
// page comes back.
const list = () => document.getElementById("messages");
const form = document.getElementById("compose");
const text = document.getElementById("text");
const state = { sent: 0, failed: 0 };
window.chat = state;

function scrollDown() {
  const el = list();
  if (el && el.lastElementChild) el.lastElementChild.scrollIntoView({ block: "nearest" });
}

function showError(message) {
  let el = document.getElementById("chat-error");
  if (!el) {
    el = document.createElement("p");
    el.id = "chat-error";
    el.className = "error";
    el.setAttribute("role", "alert");
    form.before(el);
  }
  el.textContent = message;
}

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = text.value;
  if (!body.trim()) { text.focus(); return; }
  const other = list().dataset.other;
  const resp = await fetch(`/api/v1/users/me/chats/${other}`, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json",
               "X-CSRF-Token": document.body.dataset.csrf },
    body: JSON.stringify({ text: body }) });
  if (resp.ok) {
    state.sent += 1;
    text.value = "";
    const err = document.getElementById("chat-error");
    if (err) err.remove();
  } else {
    state.failed += 1;
    let detail = String(resp.status);
    try { detail = (await resp.json()).detail || detail; } catch (e) { /* not JSON */ }
    showError(detail);
  }
  text.focus();
});

text.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); form.requestSubmit(); }
});

document.addEventListener("portal:refreshed", (ev) => {
  if (ev.detail.includes("messages")) scrollDown();
});
scrollDown();
