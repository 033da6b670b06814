"""The `asyncpbx` command line: clear one-line errors, users, and serve's start-up checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pbx.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_user_add_list_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path)
    assert main(["user", "add", "100", "--password", "s3cret", "--name", "Anna", "--data-dir", d]) == 0
    assert main(["user", "add", "101", "--password", "s3cret", "--data-dir", d]) == 0
    capsys.readouterr()
    assert main(["user", "list", "--data-dir", d]) == 0
    assert capsys.readouterr().out.splitlines() == ["100\tAnna", "101\t"]
    assert main(["user", "remove", "101", "--data-dir", d]) == 0
    assert main(["user", "remove", "101", "--data-dir", d]) == 2
    assert "no user 101" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["user", "add", "1", "--password", "s3cret"], "extension '1' must be 2 to 8 digits"),
        (["user", "add", "100", "--password", "x"], "at least 4"),
    ],
)
def test_user_add_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                         message: str) -> None:
    assert main([*args, "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_duplicate_user(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["user", "add", "100", "--password", "s3cret", "--data-dir", str(tmp_path)]) == 0
    assert main(["user", "add", "100", "--password", "s3cret", "--data-dir", str(tmp_path)]) == 2
    assert "exists already" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[sip]\nlisten = ["udp:127.0.0.1:0"]\nbogus = 1\n', "sip.bogus"),
        ('[sip]\nlisten = ["carrier-pigeon:127.0.0.1:0"]\n', "sip.listen[0]"),
        ('[tls]\ncert = "/nonexistent.pem"\n', "tls.key"),
        ('[sip]\nlisten = ["tls:127.0.0.1:0"]\n[tls]\ncert = "/nonexistent.pem"\nkey = "/x.key"\n',
         "tls.cert"),
    ],
)
def test_serve_refuses_bad_config_naming_the_key(tmp_path: Path, toml: str, key: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    proc = subprocess.run(
        [sys.executable, "-m", "pbx", "serve", "--config", str(cfg), "--data-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"configuration error: {key}: " in proc.stderr
    assert "Traceback" not in proc.stderr


def test_serve_reports_a_port_in_use(tmp_path: Path) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[sip]\nlisten = ["udp:127.0.0.1:{port}"]\n')
        proc = subprocess.run(
            [sys.executable, "-m", "pbx", "serve", "--config", str(cfg), "--data-dir",
             str(tmp_path)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
    assert proc.returncode == 1, proc.stderr
    assert "cannot listen" in proc.stderr and "Traceback" not in proc.stderr
