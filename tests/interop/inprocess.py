"""The PBX server running inside the test's event loop (real sockets on loopback, real peers),
for tests that need to reach into it: ask for a call-back, register a probe feature."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from pbx.app import PbxServer
from pbx.config import load_config
from pbx.store import Store
from tests.interop.harness import PbxProcess


@contextlib.asynccontextmanager
async def serving(tmp: Path, users: Sequence[tuple[str, str]], config_extra: str = "",
                  store_setup: Callable[[Store], None] | None = None,
                  transports: Sequence[str] = ("udp",),
                  ) -> AsyncIterator[tuple[PbxServer, PbxProcess]]:
    """A started :class:`PbxServer` and a :class:`PbxProcess` describing it (its ``addr()``
    works, so the SIPp helpers can be used); stopped and awaited on exit. ``store_setup``
    adds rows (trunks, numbers) before the server starts."""
    files = PbxProcess(tmp, transports=transports, users=users, config_extra=config_extra,
                       store_setup=store_setup)
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = files.write_config()
    files.add_users()
    files.run_store_setup()
    config = load_config(cfg, data_dir=str(files.data_dir), environ={})
    store = Store(files.data_dir)
    server = PbxServer(config, store, out=io.StringIO())
    ready = asyncio.Event()
    task = asyncio.create_task(server.run(on_ready=lambda s: ready.set()))
    try:
        await asyncio.wait_for(ready.wait(), 20)
        assert server.sip is not None
        for name, host, port in server.sip.listening():
            files.listening.setdefault(name, (host, port))
        yield server, files
    finally:
        server.stop()
        await asyncio.wait_for(task, 20)
        store.close()
