"""The feature-code table as data: the seed table, the rules every table keeps, the digits-only
form, and the registry's table in force (features declare actions, the table gives codes)."""

from __future__ import annotations

import pytest

from features import default_features
from pbx.callcontrol import BaseFeature, FeatureCode, FeatureRegistry
from pbx.feature_codes import (
    CodeError,
    CodeRow,
    DigitsOnly,
    check_code,
    check_table,
    overlay,
    parse_table,
    seed_table,
    split_key,
)

#: Every code of ../shared/FEATURE_CODES.md's dialled-code table (in-call codes are not dialled).
DOC_CODES = {
    "*72", "*73", "*21", "#21", "*90", "*91", "*40", "#40", "*92", "*93", "*41", "#41", "*610",
    "*94", "*95", "*21*", "*67*", "*61*", "*63*", "*43", "#43", "*70", "*31", "#31", "*67",
    "*65", "*77", "*87", "*78", "*79", "*12", "*13", "*86", "*62", "*55", "*99", "*98", "*97",
    "*33", "*11", "#51", "#52", "*50", "#50", "*54", "#54", "*57"}
#: The codes FEATURE_CODES.md writes with "+ number" (or + rings / extension / queue).
DOC_ARGUMENTS = {"*72", "*90", "*92", "*610", "*94", "*70", "*67", "*65", "*55", "*97", "*33",
                 "*50", "#50"}


def test_the_seed_table_has_every_code_of_the_feature_codes_document() -> None:
    rows = seed_table()
    assert {r.code for r in rows.values()} == DOC_CODES
    assert {r.code for r in rows.values() if r.takes_argument} == DOC_ARGUMENTS
    assert all(r.description and not r.alternate for r in rows.values())
    assert rows[("dnd", "on")].code == "*78" and rows[("forward_immediate", "on")].code == "*72"
    check_table(rows.values(), DigitsOnly())  # the default escapes keep every code distinct


def test_the_default_features_agree_with_the_table() -> None:
    """Each implemented action has a row, and takes a number exactly when the table says so."""
    seed = seed_table()
    for feature in default_features():
        for fc in feature.feature_codes:
            row = seed.get((feature.name, fc.action))
            assert row is not None, f"{feature.name}.{fc.action} has no row in the table"
            assert row.takes_argument == fc.takes_number, row.key
            assert not fc.code, f"{row.key}: the code belongs in the table, not the module"


@pytest.mark.parametrize("code", ["78", "*", "#", "**", "*7a", "*7 8", "+49", "*1234567890123"])
def test_bad_codes(code: str) -> None:
    with pytest.raises(CodeError, match="must be"):
        check_code(code)


@pytest.mark.parametrize("code", ["*7", "#43", "*21*", "*#5", "#5#"])
def test_good_codes(code: str) -> None:
    check_code(code)


def test_table_rules() -> None:
    fwd = CodeRow("fwd", "on", "*72", argument="number")
    check_table([fwd, CodeRow("fwd", "query", "*72*"), CodeRow("x", "y", "*7")])
    with pytest.raises(CodeError, match=r"belongs to fwd\.on"):
        check_table([fwd, CodeRow("x", "y", "*73", alternate="*72")])
    with pytest.raises(CodeError, match=r"\*720 would make \*72 \+ number starting with 0"):
        check_table([fwd, CodeRow("x", "y", "*720")])
    with pytest.raises(CodeError, match="argument"):
        check_table([CodeRow("x", "y", "*1", argument="pizza")])
    # two codes a mobile would dial alike: *7885 and **5 are both 7887885
    check_table([CodeRow("a", "b", "*7885"), CodeRow("c", "d", "**5")])
    with pytest.raises(CodeError, match="is dialled 7887885 on a mobile"):
        check_table([CodeRow("a", "b", "*7885"), CodeRow("c", "d", "**5")], DigitsOnly())


def test_digits_only_form() -> None:
    d = DigitsOnly()
    assert d.encode("*43") == "78843" and d.encode("#43") == "78943"
    assert d.encode("*21*") == "78821788"
    assert d.problem() is None
    assert DigitsOnly("78", "789").problem() == (
        "hash", "'789' must differ from the star escape '78' and neither may start the other")
    assert DigitsOnly("7a8", "789").problem() == ("star", "'7a8' must be 1 to 6 digits")
    assert DigitsOnly("788", "").problem() == ("hash", "'' must be 1 to 6 digits")


def test_parse_table_and_overlay() -> None:
    rows = parse_table('[dnd.on]\ncode = "*78"\ndescription = "on"\n'
                       '[dnd.off]\ncode = "*79"\nalternate = "#78"\n')
    assert rows[("dnd", "off")] == CodeRow("dnd", "off", "*79", "#78")
    changed = overlay(rows, {("dnd", "on"): ("*80", ""), ("gone", "x"): ("*1", "")})
    assert changed[("dnd", "on")] == CodeRow("dnd", "on", "*80", "", "", "on")
    assert ("gone", "x") not in changed
    with pytest.raises(CodeError, match=r"dnd\.on has no code"):
        parse_table('[dnd.on]\ndescription = "x"\n')
    with pytest.raises(CodeError, match="as strings only"):
        parse_table('[dnd.on]\ncode = 78\n')
    with pytest.raises(CodeError, match="belongs to"):
        parse_table('[a.b]\ncode = "*1"\n[c.d]\ncode = "*1"\n')
    assert split_key("dnd.on") == ("dnd", "on")
    with pytest.raises(CodeError, match=r"FEATURE\.ACTION"):
        split_key("dnd")


class Pickup(BaseFeature):
    """A feature implementing a row of the seed table that no default feature has, declaring
    the action only, and one action with a code of its own."""

    name = "pickup"
    feature_codes = (FeatureCode("group"), FeatureCode("extra", "*4711"))


def test_the_registry_gives_features_the_tables_codes() -> None:
    registry = FeatureRegistry([*(f for f in default_features() if f.name != "pickup"), Pickup()])
    found = registry.match("*98")
    assert found is not None and found.feature.name == "pickup"
    assert (found.code.action, found.code.code, found.code.description) == (
        "group", "*98", "pick up a call ringing in the own pickup group")
    extra = registry.match("*4711")  # no row in the table: the declared code
    assert extra is not None and extra.code.action == "extra"
    rows = {row.key: implemented for row, implemented in registry.rows()}
    assert rows["pickup.group"] and rows["dnd.on"] and rows["pickup.extra"]
    assert not rows["pickup.directed"] and rows["voicemail.listen"]
    assert rows["mwi.clear"]  # *99, the message-waiting feature
    assert registry.match("#51") is None  # in the table, implemented by nobody
    assert {"*78", "*79", "*98", "*4711"} <= set(registry.code_table())
    assert "#51" not in registry.code_table() and "*97" not in registry.code_table()


def test_digits_only_matching() -> None:
    registry = FeatureRegistry(default_features(), digits_only=DigitsOnly("55", "56"))
    assert registry.match("5578", digits_only=True) is not None
    assert registry.match("5578") is None  # digits are a number unless asked
    assert registry.match("78878", digits_only=True) is None  # not these escapes
    found = registry.match("55720301234567", digits_only=True)
    assert found is not None and (found.code.code, found.number) == ("*72", "0301234567")
    assert registry.match("55781", digits_only=True) is None  # *78 takes no number
    assert registry.match("*78", digits_only=True) is not None  # the * form always


def test_changes_in_force_and_refused() -> None:
    registry = FeatureRegistry(default_features())
    assert registry.apply_changes({("dnd", "on"): ("*80", "#80")}) == []
    assert registry.match("*78") is None
    found = registry.match("#80")
    assert found is not None and found.code.code == "*80" and found.code.alternate == "#80"
    with pytest.raises(CodeError, match=r"belongs to dnd\.on"):
        registry.check_changes({**registry.changes, ("dnd", "off"): ("#80", "")})
    with pytest.raises(CodeError, match="no such feature code"):
        registry.check_changes({("dnd", "maybe"): ("*1", "")})
    # stored changes that clash are left out (the seed's code stays), the others apply
    problems = registry.apply_changes({("dnd", "on"): ("*72", ""), ("dnd", "off"): ("*81", "")})
    assert len(problems) == 1 and "belongs to" in problems[0]
    assert registry.changes == {("dnd", "off"): ("*81", "")}
    on = registry.match("*78")
    off = registry.match("*81")
    assert on is not None and on.code.action == "on" and off is not None


def test_a_feature_whose_declared_code_clashes_with_the_table_is_refused() -> None:
    class Stray(BaseFeature):
        name = "stray"
        feature_codes = (FeatureCode("x", "*78"),)

    registry = FeatureRegistry(default_features())
    with pytest.raises(ValueError, match=r"belongs to dnd\.on"):
        registry.register(Stray())
    assert registry.get("stray") is None
