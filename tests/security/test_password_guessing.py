"""Password guessing (SECURITY.md): ``sipvicious_svcrack`` from 127.0.0.3 with a word list that
holds the real password at position 50 — once fetching a fresh nonce per guess, once reusing
one nonce for every guess (``--reusenonce``) — never finds it: after 5 failures the source is
banned (one ``security.ban`` line) and every later guess is dropped unanswered. The control:
with the limits switched off, the same svcrack run does find the password, so the ban (not a
broken tool or a wrong realm) is what stops it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.interop.harness import ROOT, PbxProcess, free_port, running_pbx
from tests.security.test_enumeration import record, tool
from tests.security.wire import need_aliases

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]

USERS = [("100", "pw-100-secret"), ("101", "Sunflower-1984")]
ATTACKER = "127.0.0.3"


def word_list(tmp: Path) -> Path:
    words = [f"guess{i:03d}" for i in range(1, 50)] + [USERS[1][1]] + [
        f"later{i:03d}" for i in range(50)]
    assert words.index(USERS[1][1]) == 49  # position 50
    path = tmp / "words.txt"
    path.write_text("\n".join(words) + "\n")
    return path


def svcrack(pbx: PbxProcess, tmp: Path, *, reuse_nonce: bool) -> str:
    host, port = pbx.addr("udp")
    args = [*tool("svcrack"), "-v", "-u", "101", "-d", str(word_list(tmp)),
            "-b", ATTACKER, "-x", ATTACKER, "-P", str(free_port(ATTACKER)), "-p", str(port), "-t", "0.01",
            "--maximumtime", "3", host]
    if reuse_nonce:
        args.append("--reusenonce")
    done = subprocess.run(args, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, cwd=ROOT)
    return done.stdout + done.stderr


@pytest.mark.parametrize("reuse_nonce", [False, True], ids=["fresh-nonce", "nonce-reuse"])
def test_svcrack_never_finds_the_password_and_is_banned_after_5(tmp_path: Path,
                                                                 reuse_nonce: bool) -> None:
    need_aliases(ATTACKER)
    with running_pbx(tmp_path, transports=("udp",), users=USERS,
                     config_extra='[security]\ntrusted = ["127.0.0.1"]\n') as pbx:
        out = svcrack(pbx, tmp_path, reuse_nonce=reuse_nonce)
        events = pbx.log_events()
    assert "Traceback" not in out, out
    assert USERS[1][1] not in out and "The password for" not in out, out
    failures = [e for e in events if e.get("event") == "security.auth.failed"
                and e.get("src") == ATTACKER]
    bans = [e for e in events if e.get("event") == "security.ban"]
    assert [(b["src"], b["reason"], b["count"]) for b in bans] == [
        (ATTACKER, "auth failures", 5)], bans
    # the 5 failures that banned it (a failure logged after the ban would mean a guess was
    # still verified); no success ever
    assert len(failures) == 5, failures
    record(f"svcrack_{'reuse' if reuse_nonce else 'fresh'}",
           {"found": False, "failures_before_ban": len(failures), "bans": len(bans)})


def test_control_without_limits_svcrack_does_find_it(tmp_path: Path) -> None:
    need_aliases(ATTACKER)
    no_limits = ("[security]\nfailures = 1000000\nrequests = 1000000\n"
                 'account_failures = 1000000\ntrusted = ["127.0.0.1"]\n')
    with running_pbx(tmp_path, transports=("udp",), users=USERS,
                     config_extra=no_limits) as pbx:
        out = svcrack(pbx, tmp_path, reuse_nonce=False)
    assert f"The password for 101 is {USERS[1][1]}" in out or (
        "101" in out and USERS[1][1] in out), out
