"""``asyncpbx settings show|set``: a user's feature settings through the settings service —
typed values, the schema's and the feature's own refusals as one-line errors, other tenants."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pbx.cli import main
from pbx.cli_settings import parse_value
from pbx.settings_schema import Setting, SettingError
from pbx.store import Store


def run(capsys: pytest.CaptureFixture[str], d: Path, *args: str) -> tuple[int, str, str]:
    code = main([*args, "--data-dir", str(d)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["user", "add", "100", "--password", "s3cret", "--data-dir", str(tmp_path)]) == 0
    assert main(["number", "add", "+4930555100", "--user", "100",
                 "--data-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    return tmp_path


def stored(d: Path, feature: str) -> dict[str, object]:
    store = Store(d)
    try:
        return store.feature_settings(store.user("100").id, feature)
    finally:
        store.close()


def test_set_and_show(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, data, "settings", "set", "100", "clir", "enabled=on")
    assert code == 0 and out.splitlines()[-1] == 'clir\t{"enabled": true}'
    code, out, _ = run(capsys, data, "settings", "set", "100", "displayed_number",
                       "number=+4930555100")
    assert code == 0
    assert stored(data, "displayed_number") == {"number": "+4930555100"}
    code, out, _ = run(capsys, data, "settings", "show", "100")
    shown = dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)
    assert json.loads(shown["clir"]) == {"enabled": True}
    assert json.loads(shown["displayed_number"]) == {"number": "+4930555100"}
    assert json.loads(shown["anonymous_rejection"]) == {"enabled": False}
    code, out, _ = run(capsys, data, "settings", "show", "100", "clir")
    assert out.splitlines() == ['clir\t{"enabled": true}']


@pytest.mark.parametrize(("args", "message"), [
    (["displayed_number", "number=+4930999999"],
     "displayed_number.number: +4930999999 is not a number of user 100 (theirs: +4930555100)"),
    (["clir", "enabled=maybe"], "clir.enabled: 'maybe' is not true/false"),
    (["clir", "loud=1"], "clir.loud: unknown setting"),
    (["clir", "enabled"], "'enabled' is not KEY=VALUE"),
    (["nosuch", "a=1"], "nosuch: no such feature"),
    (["ringing", "ring_timeout=1"], "ringing.ring_timeout: must be at least 5.0"),
])
def test_refusals_are_one_line_and_store_nothing(data: Path, capsys: pytest.CaptureFixture[str],
                                                 args: list[str], message: str) -> None:
    code, _, err = run(capsys, data, "settings", "set", "100", *args)
    assert code == 2 and message in err and "Traceback" not in err
    assert stored(data, "displayed_number") == stored(data, "clir") == {}  # nothing stored


def test_an_unknown_user(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, data, "settings", "show", "199")
    assert code == 2 and "no user 199" in err


def test_another_tenants_user(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tenant", "add", "acme", "--domain", "acme.example.com", "--main-number",
                 "+4930777000", "--data-dir", str(data)]) == 0
    assert main(["user", "add", "200", "--tenant", "acme", "--data-dir", str(data)]) == 0
    code, _, err = run(capsys, data, "settings", "set", "200", "displayed_number",
                         "number=+4930777000", "--tenant", "acme")
    assert code == 0, err  # the company's main number is theirs to show
    code, _, err = run(capsys, data, "settings", "set", "100", "displayed_number",
                       "number=+4930777000")
    assert code == 2 and "is not a number of user 100" in err  # not another company's


def test_values_take_their_settings_type() -> None:
    assert parse_value("f", "k", Setting(bool, False), "OFF") is False
    assert parse_value("f", "k", Setting(int, 1), "4") == 4
    assert parse_value("f", "k", Setting(float, 1.0), "2.5") == 2.5
    assert parse_value("f", "k", Setting(list, []), "a, b,") == ["a", "b"]
    assert parse_value("f", "k", Setting(str, ""), "0301234") == "0301234"
    with pytest.raises(SettingError, match=r"f\.k: 'x' is not a number"):
        parse_value("f", "k", Setting(int, 1), "x")
