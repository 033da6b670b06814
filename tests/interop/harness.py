"""Run the real server and real peers (SIPp, sipsak, baresip, stunnel) on loopback, bounded in time.

The server is started as ``python -m pbx serve --config …`` in its own process with every listener
on port 0; it prints ``listening <transport> <host> <port>`` lines and ``ready``, which is how the
tests learn the ports. Peers bind port 0 or ports the OS just handed out.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
#: The generated prompt set every test server shares (content-addressed, written atomically:
#: the first server of a run generates it, the others load it in milliseconds).
PROMPT_CACHE = Path(tempfile.gettempdir()) / f"asyncpbx-test-prompts-{os.getuid()}"

ALL_TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")


def need(tool: str) -> str:
    """Path of a peer tool; the test errors (not skips) when the README's installer was not run."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: run ./test.sh (it apt-installs the test peers)")
    return path


def read_log(path: Path) -> str:
    """A log file as text, "" when it does not exist. Undecodable bytes become U+FFFD: SIPp's
    -trace_msg/-trace_err copy whatever datagram arrived (a stray RTCP packet included) and
    baresip prints what it was sent, so a peer's log is not necessarily UTF-8 — reading it
    must never be what fails a test."""
    return path.read_bytes().decode("utf-8", "replace") if path.exists() else ""


#: The RTP port ranges of the PBXs the tests run (pbx.config's default 40000-44999 and the
#: [media] ranges the tests configure): free_port() never guesses a port in there.
MEDIA_PORTS = (40000, 49999)


def _ephemeral_ports() -> tuple[int, int]:
    """The range the kernel picks from when a socket binds port 0 (Linux default 32768-60999)."""
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def _worker_slice(lo: int, hi: int) -> tuple[int, int]:
    """This pytest-xdist worker's share of ``lo``-``hi`` (all of it outside xdist): test
    processes running side by side never guess the same port, so one cannot take a port
    another handed a peer that has not bound it yet."""
    try:
        index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
        count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    except ValueError:
        return lo, hi
    if count <= 1 or not 0 <= index < count:
        return lo, hi
    size = (hi - lo + 1) // count
    return lo + index * size, lo + (index + 1) * size - 1


#: Where free_port() guesses: below the kernel's ephemeral range (and away from the well-known
#: SIP ports), so no socket that binds port 0 — an RTP peer, a PBX, another tool — can be handed
#: a port we gave a peer before that peer binds it. A CI run had exactly that: the SIPp callee's
#: port (32769, guessed with bind(0) and released) went to the test's own RTP peer created next,
#: and SIPp failed with "Unable to bind main socket ... Address already in use".
#: This worker's slice of it.
GUESS_PORTS = _worker_slice(20000, min(31999, _ephemeral_ports()[0] - 1))


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_DGRAM) -> int:
    """A port free now, for peers that cannot bind port 0 themselves: from
    :data:`GUESS_PORTS` (outside the kernel's ephemeral range and :data:`MEDIA_PORTS`), walked
    in order from a random start per process (several test runs may share the machine), so a
    port comes back only after the whole range went round; one that does not bind is skipped."""
    lo, hi = GUESS_PORTS
    if hi - lo < 100:  # an unusual ephemeral range: fall back to the kernel's pick
        return _kernel_port(host, kind)
    global _NEXT_GUESS
    if _NEXT_GUESS is None:
        _NEXT_GUESS = random.randint(lo, hi)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(hi - lo + 1):
        port = _NEXT_GUESS
        _NEXT_GUESS = port + 1 if port < hi else lo
        with socket.socket(family, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {lo}-{hi}")


_NEXT_GUESS: int | None = None
#: Ports _kernel_port handed out (the kernel may pick the same one twice in a row).
_HANDED_OUT: set[int] = set()


def _kernel_port(host: str, kind: int) -> int:
    """The fallback: a port the kernel picks, never one handed out before nor a media port."""
    for _ in range(100):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT and not MEDIA_PORTS[0] <= port <= MEDIA_PORTS[1]:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no fresh free port after 100 tries")


@dataclass
class PbxProcess:
    """``asyncpbx serve`` in a subprocess with a fresh data directory."""

    workdir: Path
    transports: Sequence[str] = ("udp", "tcp")
    host: str = "127.0.0.1"
    config_extra: str = ""
    users: Sequence[tuple[str, str]] = ()
    #: Called with the data directory's ``pbx.store.Store`` before each start (after the users
    #: are added): tenants, numbers, trunks for a test.
    store_setup: Callable[[Any], None] | None = None
    listening: dict[str, tuple[str, int]] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def write_config(self) -> Path:
        listen = ", ".join(f'"{t}:{self.host}:0"' for t in self.transports)
        cfg = self.workdir / "asyncpbx.toml"
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f'[sip]\nlisten = [{listen}]\ndomain = "{host}"\n{self.config_extra}\n'
        if "[auth]" not in self.config_extra:
            text += '[auth]\nrealm = "asyncpbx-test"\n'
        if "[security]" not in self.config_extra:
            # The peers of most tests all send from 127.0.0.1 without authenticating first
            # (floods of malformed packets, OPTIONS pings, SIPp bursts): trusted, so per-source
            # bans never interfere. The ban tests set [security] themselves and attack from
            # other loopback addresses (127.0.0.2 …, SECURITY.md).
            text += '[security]\ntrusted = ["127.0.0.1"]\n'
        if "[prompts]" not in self.config_extra:
            text += f'[prompts]\ncache_dir = "{PROMPT_CACHE}"\n'
        if "[http]" not in self.config_extra:
            # port 0: tests run servers side by side; the port is read from `listening http`
            text += '[http]\nlisten = "127.0.0.1:0"\n'
        cfg.write_text(text)
        return cfg

    def add_users(self) -> None:
        if not self.users:
            return
        from pbx.config import load_config
        from pbx.store import Store

        config = load_config(self.workdir / "asyncpbx.toml", data_dir=str(self.data_dir), environ={})
        store = Store(self.data_dir)
        try:
            for ext, pw in self.users:
                store.add_user(ext, pw, config.realm, f"User {ext}")
        finally:
            store.close()

    def run_store_setup(self) -> None:
        if self.store_setup is None:
            return
        from pbx.store import Store

        store = Store(self.data_dir)
        try:
            self.store_setup(store)
        finally:
            store.close()

    def start(self, timeout: float = 30.0) -> PbxProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.write_config()
        self.add_users()
        self.run_store_setup()
        self.store_setup = None  # once: a restart keeps the data
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCPBX_")}
        env["PYTHONUNBUFFERED"] = "1"
        if os.environ.get("ASYNCPBX_NO_EXTENSIONS"):
            env["ASYNCPBX_NO_EXTENSIONS"] = os.environ["ASYNCPBX_NO_EXTENSIONS"]
        log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pbx", "serve", "--config", str(cfg), "--data-dir",
             str(self.data_dir), "--log-json"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True, env=env,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        self.listening.clear()
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.match(r"listening (\w+) (\S+) (\d+)", line)
            if m:
                self.listening[m.group(1)] = (m.group(2), int(m.group(3)))
            if line.strip() == "ready":
                # keep draining stdout so the server never blocks on a full pipe
                _drain(self.proc.stdout)
                return self
        self.stop()
        raise RuntimeError(f"server did not start; log:\n{read_log(self.log_path)[-4000:]}")

    def addr(self, transport: str) -> tuple[str, int]:
        return self.listening[transport]

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        rc = self.proc.returncode
        self.proc = None
        return rc

    def log_events(self) -> list[dict[str, object]]:
        """The server's JSON log lines."""
        out = []
        for line in read_log(self.log_path).splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _drain(stream: object) -> None:
    import threading

    def run() -> None:
        for _ in stream:  # type: ignore[attr-defined]
            pass

    threading.Thread(target=run, daemon=True).start()


@contextlib.contextmanager
def running_pbx(workdir: Path, **kwargs: object) -> Iterator[PbxProcess]:
    """Start a server for the body of the ``with``; always stop it."""
    pbx = PbxProcess(workdir, **kwargs)  # type: ignore[arg-type]
    pbx.start()
    try:
        yield pbx
    finally:
        rc = pbx.stop()
        log = read_log(pbx.log_path)
        assert "Traceback" not in log, f"server logged a traceback:\n{log[-6000:]}"
        assert rc in (0, None, -signal.SIGTERM), f"server exited with {rc}:\n{log[-4000:]}"


@dataclass
class SippResult:
    returncode: int
    successful: int
    failed: int
    output: str


def users_csv(path: Path, users: Sequence[tuple[str, str]], *extra: str,
              auth_password: str | None = None) -> Path:
    """A SIPp injection file (SEQUENTIAL): field0 = extension, field1 = password, field2 = the
    ``[authentication …]`` keyword (with ``auth_password`` instead when given), field3… =
    ``extra``."""
    rows = []
    for user, password in users:
        auth = f"[authentication username={user} password={auth_password or password}]"
        rows.append(";".join([user, password, auth, *extra]) + "\n")
    path.write_text("SEQUENTIAL\n" + "".join(rows))
    return path


def sipp(
    scenario: str,
    target: tuple[str, int],
    workdir: Path,
    *,
    transport: str = "u1",
    inf: Path | None = None,
    calls: int = 1,
    rate: float | None = None,
    limit: int | None = None,
    local_ip: str = "127.0.0.1",
    timeout: float = 60.0,
    extra: Sequence[str] = (),
) -> SippResult:
    """Run SIPp as a UAC until ``calls`` calls ended; returns counts from its statistics file."""
    binary = need("sipp")
    stat = workdir / f"sipp-{scenario}-{time.monotonic_ns()}.csv"
    host, port = target
    args = [
        binary, "-sf", str(SCENARIOS / scenario) if not scenario.startswith("/") else scenario,
        "-t", transport, "-i", local_ip, "-m", str(calls),
        # an explicit port: with -p 0 SIPp binds a random one but writes 5060 into Via/Contact
        "-p", str(free_port(local_ip, socket.SOCK_DGRAM if transport.startswith("u")
                            else socket.SOCK_STREAM)),
        "-timeout", f"{int(timeout)}s", "-timeout_error", "-nostdin",
        "-trace_stat", "-stf", str(stat), "-fd", "1", "-trace_err",
        "-error_file", str(workdir / "sipp-errors.log"),
        "-max_recv_loops", "10000", "-recv_timeout", "10000",
    ]
    if inf is not None:
        args += ["-inf", str(inf)]
    if rate is not None:
        args += ["-r", str(rate), "-rp", "1000"]
    if limit is not None:
        args += ["-l", str(limit)]
    args += [*extra, f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"]
    proc = subprocess.run(args, cwd=workdir, capture_output=True, text=True, errors="replace",
                          timeout=timeout + 30, stdin=subprocess.DEVNULL)
    ok, bad = _sipp_counts(stat)
    errors = (workdir / "sipp-errors.log")
    err_text = read_log(errors)[-3000:]
    return SippResult(proc.returncode, ok, bad, proc.stdout[-3000:] + proc.stderr[-3000:] + err_text)


def _sipp_counts(stat: Path) -> tuple[int, int]:
    if not stat.exists():
        return 0, 0
    lines = [ln for ln in read_log(stat).splitlines() if ln.strip()]
    if len(lines) < 2:
        return 0, 0
    head = lines[0].split(";")
    last = lines[-1].split(";")
    row = dict(zip(head, last, strict=False))
    return int(row.get("SuccessfulCall(C)", 0)), int(row.get("FailedCall(C)", 0))


@contextlib.contextmanager
def stunnel_client(workdir: Path, target: tuple[str, int]) -> Iterator[tuple[str, int]]:
    """A TLS client tunnel: plain TCP in on the returned address, TLS 1.2+ out to ``target``.

    Debian's SIPp is built without OpenSSL, so SIPp drives our TLS listener through this.
    """
    binary = need("stunnel")
    port = free_port(kind=socket.SOCK_STREAM)
    conf = workdir / f"stunnel-{port}.conf"
    conf.write_text(
        "foreground = yes\n"
        f"pid =\n"
        "debug = 3\n"
        f"output = {workdir / 'stunnel.log'}\n"
        "[sip]\n"
        "client = yes\n"
        f"accept = 127.0.0.1:{port}\n"
        f"connect = {target[0]}:{target[1]}\n"
        "sslVersionMin = TLSv1.2\n"
        "verifyChain = no\n"
    )
    proc = subprocess.Popen([binary, str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        else:
            raise RuntimeError("stunnel did not start")
        yield ("127.0.0.1", port)
    finally:
        proc.terminate()
        proc.wait(5)
