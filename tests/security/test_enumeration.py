"""Enumeration (SECURITY.md "what the tests must show"): a scanner on 127.0.0.2 cannot tell a
real extension from a made-up one — not by the answer's status, headers or parameters, and not
by its timing (the medians of known user / unknown user / wrong password / unknown user with
credentials differ by < 2 ms) — and ``sipvicious_svwar`` with REGISTER, INVITE and OPTIONS
reports no extension. The per-source limits are raised here so the scanner is answered every
time: what is proved is that the answers carry nothing, not that the ban stops it early (the
second svwar run shows the default limits ban it as well)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from tests.interop.harness import ROOT, PbxProcess, free_port, running_pbx
from tests.security.wire import SipClient, need_aliases, shape

pytestmark = [pytest.mark.interop, pytest.mark.timeout(240)]

USERS = [("100", "pw-100-secret"), ("101", "pw-101-secret"), ("102", "pw-102-secret")]
NO_LIMITS = ("[security]\nfailures = 1000000\nrequests = 1000000\naccount_failures = 1000000\n"
             'trusted = ["127.0.0.1"]\n')
SCANNER = "127.0.0.2"
#: Where the suite writes its measured figures (docs/security.md is filled in from them).
FIGURES = Path(__file__).resolve().parent / "figures"


def record(name: str, value: object) -> None:
    """Write one measured figure to tests/security/figures/NAME.json (kept out of git)."""
    FIGURES.mkdir(exist_ok=True)
    (FIGURES / f"{name}.json").write_text(json.dumps(value, indent=1) + "\n")


def test_answers_identical_and_timing_within_2ms(tmp_path: Path) -> None:
    need_aliases(SCANNER)
    with running_pbx(tmp_path, transports=("udp",), users=USERS,
                     config_extra=NO_LIMITS) as pbx, \
            SipClient(SCANNER, pbx.addr("udp")) as c:
        kinds = ["known", "unknown", "wrong password", "unknown with credentials"]
        times: dict[str, list[float]] = {k: [] for k in kinds}
        shapes: dict[str, set[tuple[object, ...]]] = {k: set() for k in kinds}
        cseq = 1
        for round_ in range(80):
            for kind in kinds:
                user = "101" if kind in ("known", "wrong password") else f"9{round_:03d}"
                cseq += 2
                req = c.request("REGISTER", user, cseq, contact_port=c.port)
                if kind in ("wrong password", "unknown with credentials"):
                    first = c.send(c.request("REGISTER", user, cseq - 1, contact_port=c.port))
                    assert first is not None
                    req = c.authorize(req, first.response, user, f"guess-{round_}")
                answer = c.send(req)
                assert answer is not None, (kind, round_)
                if round_ >= 5:  # the first rounds warm caches up
                    times[kind].append(answer.seconds)
                shapes[kind].add(shape(answer.response))
        # INVITE and OPTIONS to a known and an unknown extension, unauthenticated
        for method in ("INVITE", "OPTIONS"):
            seen = set()
            for user in ("100", "9999"):
                answer = c.send(c.request(method, user, 1))
                assert answer is not None, (method, user)
                seen.add(shape(answer.response))
            assert len(seen) == 1, (method, seen)
    assert all(len(s) == 1 for s in shapes.values()), shapes
    assert len(set.union(*shapes.values())) == 1, shapes
    assert next(iter(shapes["known"]))[0] == 401
    medians = {k: statistics.median(v) * 1000 for k, v in times.items()}
    spread = max(medians.values()) - min(medians.values())
    record("enumeration_timing", {"medians_ms": medians, "spread_ms": spread,
                                  "samples": len(times["known"])})
    assert spread < 2.0, medians


def tool(name: str) -> list[str]:
    """The command line that runs a sipvicious tool (``svwar``, ``svcrack``) from this venv
    with its ``-b`` honoured (tests/security/sipvicious_run.py)."""
    try:
        import sipvicious  # noqa: F401
    except ImportError:
        pytest.fail("sipvicious is not installed: run scripts/bootstrap.sh test")
    return [sys.executable, "-m", "tests.security.sipvicious_run", name]


def svwar(pbx: PbxProcess, method: str, tmp: Path, extensions: str = "100-102,95-99,103-115"
          ) -> tuple[int, str]:
    """``sipvicious_svwar`` from the scanner's address over extensions 95-115, the real ones
    (100-102) first: svwar compares each answer with the one a random extension got and stops
    at the first answer that matches it without being a 404 — so a real extension answered
    differently would be reported before it stops. ``--force``: scan even though unknown
    extensions are challenged too."""
    host, port = pbx.addr("udp")
    done = subprocess.run(
        [*tool("svwar"), "-v", "-e", extensions, "-m", method, "-b", SCANNER,
         "-x", SCANNER, "-P", str(free_port(SCANNER)), "-p", str(port), "-t", "0.01", "--force", "--maximumtime", "3", host],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, cwd=ROOT)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("method", ["REGISTER", "INVITE", "OPTIONS"])
def test_svwar_finds_no_extension(tmp_path: Path, method: str) -> None:
    need_aliases(SCANNER)
    with running_pbx(tmp_path, transports=("udp",), users=USERS,
                     config_extra=NO_LIMITS) as pbx:
        _, out = svwar(pbx, method, tmp_path)
    assert "Traceback" not in out, out
    assert "Ok SIP device found" in out, out  # it reached the server and scanned ...
    assert "exists" not in out and "probably exists" not in out, out  # ... and found nothing
    record(f"svwar_{method.lower()}", {"found": [], "output_tail": out[-600:]})


def test_svwar_with_the_default_limits_is_banned(tmp_path: Path) -> None:
    need_aliases(SCANNER)
    with running_pbx(tmp_path, transports=("udp",), users=USERS,
                     config_extra='[security]\ntrusted = ["127.0.0.1"]\n') as pbx:
        # OPTIONS: every probe is answered alike, so svwar goes on through the whole range
        _, out = svwar(pbx, "OPTIONS", tmp_path, "100-102,95-99,103-160")
        bans = [e for e in pbx.log_events() if e.get("event") == "security.ban"]
    assert "exists" not in out, out
    assert [(b["src"], b["reason"], b["count"]) for b in bans] == [
        (SCANNER, "request flood", 17)], bans
