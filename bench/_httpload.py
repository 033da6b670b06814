"""The API load of ``bench api``: an open-loop HTTP/1.1 keep-alive client, and the bare
aiohttp server that is its baseline.

The client runs in its own process (pinned to the load core) on asyncio: ``conns`` keep-alive
connections take requests from a schedule of ``rate`` per second (open loop: a request's
latency counts from its planned time, so a server that falls behind shows as late, not as a
lower offered rate). ``read`` is ``GET /api/v1/users/{id}/forwards/busy``; ``write`` is a
``PATCH`` of the same resource with ``If-Match`` (the ETag of the previous answer) that flips
the forwarding target, so every write is a real change (stored, one event). Each connection
works on its own user, so its ETags never go stale. The parent sends ``("run", spec)`` and gets
the step's figures back; ``("quit",)`` ends it.

:data:`BASELINE_SERVER` is a script: aiohttp (on uvloop, like the PBX) answering the same two
requests from a dict — bearer check, JSON, ETag, If-Match — with nothing behind it: the ceiling
of the load generator and aiohttp on the server's core, the ``sipp→sipp`` of this bench.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from bench._sipprobe import percentile

PATH = "/api/v1/users/{id}/forwards/busy"
TARGETS = ("0301111111", "0302222222")


class _Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, headers: Sequence[tuple[str, str]],
                      body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers)
        head += f"Content-Length: {len(body)}\r\n\r\n"
        self.writer.write(head.encode() + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
        data = await self.reader.readexactly(int(fields.get("content-length", "0")))
        if fields.get("connection", "").lower() == "close":
            self.close()
        return status, fields, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class _State:
    """What the generator keeps between steps: each user's last ETag and target."""

    def __init__(self) -> None:
        self.etags: dict[tuple[int, int], str] = {}  # (server port, user) -> ETag
        self.flip: dict[tuple[int, int], int] = {}


async def _step(spec: dict[str, Any], state: _State) -> dict[str, Any]:
    host, port, token = spec["host"], int(spec["port"]), spec["token"]
    rate, count, kind = float(spec["rate"]), int(spec["count"]), spec["kind"]
    users: list[int] = spec["users"]
    nconns = max(1, min(int(spec["conns"]), count))
    auth = ("Authorization", f"Bearer {token}")
    conns = [_Conn(host, port) for _ in range(nconns)]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    ok = failed = 0
    # every connection's user: its ETag is known before the clock starts
    for i, conn in enumerate(conns):
        user = users[i % len(users)]
        if kind == "write" and (port, user) not in state.etags:
            _, fields, _ = await conn.request("GET", PATH.format(id=user), [auth])
            state.etags[port, user] = fields.get("etag", "")
    queue: asyncio.Queue[float | None] = asyncio.Queue()
    t0 = time.monotonic() + 0.01
    last_done = t0

    async def produce() -> None:
        for i in range(count):
            planned = t0 + i / rate
            ahead = planned - time.monotonic()
            if ahead > 0.001:
                await asyncio.sleep(ahead)
            queue.put_nowait(planned)
        for _ in conns:
            queue.put_nowait(None)

    async def work(i: int, conn: _Conn) -> None:
        nonlocal ok, failed, last_done
        user = users[i % len(users)]
        key = (port, user)
        path = PATH.format(id=user)
        while (planned := await queue.get()) is not None:
            try:
                if kind == "read":
                    status, fields, _ = await conn.request("GET", path, [auth])
                else:
                    flip = state.flip.get(key, 0) ^ 1
                    body = json.dumps({"enabled": True, "target": TARGETS[flip]}).encode()
                    status, fields, _ = await conn.request(
                        "PATCH", path, [auth, ("If-Match", state.etags.get(key, "*")),
                                        ("Content-Type", "application/json")], body)
                    if status == 200:
                        state.flip[key] = flip
                        state.etags[key] = fields.get("etag", "")
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                conn.close()
                status = 0
            now = time.monotonic()
            last_done = max(last_done, now)
            latencies.append(now - planned)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status == 200:
                ok += 1
            else:
                failed += 1

    c0 = time.process_time()
    tasks = [asyncio.ensure_future(produce())] + [asyncio.ensure_future(work(i, c))
                                                   for i, c in enumerate(conns)]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=count / rate * 4 + 10)
    except TimeoutError:
        for task in tasks:
            task.cancel()
    cpu = time.process_time() - c0
    for conn in conns:
        conn.close()
    done = ok + failed
    return {"attempted": count, "successful": ok, "failed": failed + (count - done),
            "elapsed": max(last_done - t0, 1e-6), "cpu": cpu, "statuses": statuses,
            "p50_ms": round(percentile(latencies, 0.5) * 1e3, 3),
            "p99_ms": round(percentile(latencies, 0.99) * 1e3, 3)}


def run(conn: Connection, cpu: int | None) -> None:
    """The load generator's process body (see the module doc)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    state = _State()
    conn.send(("ready",))
    try:
        while True:
            msg: Any = conn.recv()
            if msg[0] == "quit":
                break
            if msg[0] == "run":
                conn.send(loop.run_until_complete(_step(msg[1], state)))
    finally:
        loop.close()


#: The baseline server: argv = token, users (comma separated ids); prints ``listening PORT``.
BASELINE_SERVER = r'''
import hashlib, json, sys
from aiohttp import web

TOKEN = "Bearer " + sys.argv[1]
settings = {int(u): {"enabled": False, "target": "", "voicemail": False}
            for u in sys.argv[2].split(",")}

def etag(value):
    return '"' + hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16] + '"'

def answer(value):
    return web.json_response(value, headers={"ETag": etag(value)})

def problem(status, code):
    return web.json_response({"status": status, "code": code}, status=status,
                             content_type="application/problem+json")

async def get(request):
    if request.headers.get("Authorization") != TOKEN:
        return problem(401, "invalid_token")
    value = settings.get(int(request.match_info["user"]))
    return problem(404, "not_found") if value is None else answer(value)

async def patch(request):
    if request.headers.get("Authorization") != TOKEN:
        return problem(401, "invalid_token")
    value = settings.get(int(request.match_info["user"]))
    if value is None:
        return problem(404, "not_found")
    if request.headers.get("If-Match") not in (None, "*", etag(value)):
        return problem(412, "etag_mismatch")
    body = await request.json()
    if not isinstance(body, dict) or set(body) - set(value):
        return problem(422, "invalid")
    value.update(body)
    return answer(value)

app = web.Application()
app.router.add_get("/api/v1/users/{user}/forwards/busy", get)
app.router.add_patch("/api/v1/users/{user}/forwards/busy", patch)

async def main():
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print("listening", site._server.sockets[0].getsockname()[1], flush=True)
    import asyncio
    await asyncio.Event().wait()

try:
    import uvloop
    uvloop.run(main())
except ImportError:
    import asyncio
    asyncio.run(main())
'''
