"""A minimal portal login page at ``/portal/login``: a form that logs in through
``POST /api/v1/session`` (the cookie is set by the server, HttpOnly: the page never sees it),
shows ``GET /api/v1/users/me`` and logs out with the session's CSRF token. No inline script
(the Content-Security-Policy allows only this server), no framework, no CDN.
"""

from __future__ import annotations

from aiohttp import web

__all__ = ["add_login_page"]

_CSP = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; " \
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>asyncpbx portal</title></head>
<body>
<h1>asyncpbx portal</h1>
<form id="login">
  <label>Tenant <input id="tenant" name="tenant" value="default" autocomplete="organization">
  </label>
  <label>Extension <input id="extension" name="extension" autocomplete="username"></label>
  <label>Password <input id="password" name="password" type="password"
    autocomplete="current-password"></label>
  <button id="submit" type="submit">Log in</button>
</form>
<button id="logout" type="button" hidden>Log out</button>
<p id="status" role="status"></p>
<pre id="me"></pre>
<script src="login.js"></script>
</body></html>
"""

_JS = """"use strict";
const api = "/api/v1";
let csrf = null;
const $ = (id) => document.getElementById(id);
async function showMe() {
  const resp = await fetch(api + "/users/me", {credentials: "same-origin"});
  if (!resp.ok) { $("me").textContent = ""; return false; }
  $("me").textContent = JSON.stringify(await resp.json(), null, 1);
  return true;
}
$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const resp = await fetch(api + "/session", {
    method: "POST", credentials: "same-origin", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({tenant: $("tenant").value, extension: $("extension").value,
                          password: $("password").value})});
  const body = await resp.json();
  $("password").value = "";
  if (!resp.ok) { $("status").textContent = "login failed: " + body.detail; return; }
  csrf = body.csrf_token;
  $("status").textContent = "logged in";
  $("logout").hidden = false;
  await showMe();
});
$("logout").addEventListener("click", async () => {
  const resp = await fetch(api + "/session", {method: "DELETE", credentials: "same-origin",
                                             headers: {"X-CSRF-Token": csrf || ""}});
  $("status").textContent = resp.status === 204 ? "logged out" : "logout failed";
  $("logout").hidden = resp.status === 204;
  await showMe();
});
fetch(api + "/session", {credentials: "same-origin"}).then(async (resp) => {
  if (resp.ok) { csrf = (await resp.json()).csrf_token; $("status").textContent = "logged in";
                 $("logout").hidden = false; await showMe(); }
});
"""


def add_login_page(app: web.Application) -> None:
    """``/portal/login`` and its script on ``app``."""
    headers = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff",
               "Cache-Control": "no-cache", "Referrer-Policy": "same-origin"}

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=_HTML, content_type="text/html", headers=headers)

    async def script(request: web.Request) -> web.Response:
        return web.Response(text=_JS, content_type="text/javascript", headers=headers)

    app.router.add_get("/portal/login", page)
    app.router.add_get("/portal/login.js", script)
