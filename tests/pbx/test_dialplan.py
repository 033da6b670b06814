"""The dial plan: classification, normalisation and permission decisions, table by table."""

from __future__ import annotations

import pytest

from pbx.routing.dialplan import (
    Classified,
    DialPlan,
    NumberClass,
    Permission,
    Refusal,
    class_of_e164,
    classify,
    country_code_of,
    permitted,
    reserved_extension,
    route,
    to_e164,
)

BERLIN = DialPlan(country_code="49", area_code="30", ext_min_len=3, ext_max_len=3)
NO_AREA = DialPlan(country_code="49", area_code="", ext_min_len=2, ext_max_len=4)
VIENNA = DialPlan(country_code="43", area_code="1", ext_min_len=3, ext_max_len=3)

C = NumberClass

# (plan, dialled, class, extension, trunk number)
CLASSIFY_TABLE = [
    (BERLIN, "100", C.INTERNAL, "100", None),
    (BERLIN, "999", C.INTERNAL, "999", None),
    (BERLIN, "110", C.EMERGENCY, None, "110"),
    (BERLIN, "112", C.EMERGENCY, None, "112"),
    (NO_AREA, "112", C.EMERGENCY, None, "112"),
    (BERLIN, "1234567", C.LOCAL, None, "+49301234567"),
    (BERLIN, "123 45 67", C.LOCAL, None, "+49301234567"),
    (BERLIN, "030 1234567", C.NATIONAL, None, "+49301234567"),
    (BERLIN, "030/123-45-67", C.NATIONAL, None, "+49301234567"),
    (BERLIN, "(089) 12345678", C.NATIONAL, None, "+498912345678"),
    (BERLIN, "004930 1234567", C.NATIONAL, None, "+49301234567"),
    (BERLIN, "+49 30 1234567", C.NATIONAL, None, "+49301234567"),
    (BERLIN, "0171 1234567", C.MOBILE, None, "+491711234567"),
    (BERLIN, "01521234567", C.MOBILE, None, "+491521234567"),
    (BERLIN, "+4916012345678", C.MOBILE, None, "+4916012345678"),
    (BERLIN, "0043 1 5880", C.INTERNATIONAL, None, "+4315880"),
    (BERLIN, "+1 212 555 0100", C.INTERNATIONAL, None, "+12125550100"),
    (BERLIN, "0044 20 7946 0000", C.INTERNATIONAL, None, "+442079460000"),
    (BERLIN, "0900 1234567", C.PREMIUM, None, "+499001234567"),
    (BERLIN, "01371234567", C.PREMIUM, None, "+491371234567"),
    (BERLIN, "0190 123456", C.PREMIUM, None, "+49190123456"),
    (BERLIN, "11833", C.PREMIUM, None, "11833"),
    (BERLIN, "118800", C.PREMIUM, None, "118800"),
    (BERLIN, "+44 909 8790000", C.PREMIUM, None, "+449098790000"),
    (BERLIN, "001900 5550100", C.PREMIUM, None, "+19005550100"),
    (BERLIN, "+979 12345678", C.PREMIUM, None, "+97912345678"),
    (BERLIN, "+881 6 12345678", C.PREMIUM, None, "+881612345678"),
    (BERLIN, "0800 1234567", C.SERVICE, None, "+498001234567"),
    (BERLIN, "01806 123456", C.SERVICE, None, "+491806123456"),
    (BERLIN, "115", C.SERVICE, None, "115"),
    (BERLIN, "116117", C.SERVICE, None, "116117"),
    (VIENNA, "01 5880", C.NATIONAL, None, "+4315880"),
    (VIENNA, "5880123", C.LOCAL, None, "+4315880123"),
    (VIENNA, "0664 1234567", C.MOBILE, None, "+436641234567"),
    (VIENNA, "0900 123456", C.PREMIUM, None, "+43900123456"),
    (VIENNA, "030 1234567", C.NATIONAL, None, "+43301234567"),  # Austrian area 30…
    (VIENNA, "0049 30 1234567", C.INTERNATIONAL, None, "+49301234567"),
    (NO_AREA, "10", C.INTERNAL, "10", None),
    (NO_AREA, "1000", C.INTERNAL, "1000", None),
]


@pytest.mark.parametrize(("plan", "dialled", "cls", "ext", "trunk"), CLASSIFY_TABLE,
                         ids=[f"{r[0].country_code}-{r[1]}" for r in CLASSIFY_TABLE])
def test_classify(plan: DialPlan, dialled: str, cls: NumberClass, ext: str | None,
                  trunk: str | None) -> None:
    c = classify(plan, dialled)
    assert (c.number_class, c.extension, c.trunk_number) == (cls, ext, trunk)
    assert c.problem is None
    if trunk is not None and trunk.startswith("+"):
        assert c.e164 == trunk


# (plan, dialled, refusal)
INVALID_TABLE = [
    (BERLIN, "", Refusal.UNROUTABLE),
    (BERLIN, "alice", Refusal.UNROUTABLE),
    (BERLIN, "10a", Refusal.UNROUTABLE),
    (BERLIN, "*21#", Refusal.UNROUTABLE),
    (BERLIN, "+", Refusal.UNROUTABLE),
    (BERLIN, "1+2", Refusal.UNROUTABLE),
    (BERLIN, "10", Refusal.INCOMPLETE),          # shorter than an extension
    (BERLIN, "030", Refusal.INCOMPLETE),
    (BERLIN, "0301", Refusal.INCOMPLETE),
    (BERLIN, "+4930", Refusal.INCOMPLETE),
    (BERLIN, "0049", Refusal.INCOMPLETE),
    (BERLIN, "+0301234567", Refusal.UNROUTABLE),  # no country code starts with 0
    (BERLIN, "000301234567", Refusal.UNROUTABLE),
    (BERLIN, "+4930123456789012", Refusal.UNROUTABLE),  # 16 digits: longer than E.164
    (NO_AREA, "1234567", Refusal.NO_AREA_CODE),
    (BERLIN, "1234567890123456", Refusal.UNROUTABLE),
]


@pytest.mark.parametrize(("plan", "dialled", "refusal"), INVALID_TABLE,
                         ids=[repr(r[1]) for r in INVALID_TABLE])
def test_invalid_numbers(plan: DialPlan, dialled: str, refusal: Refusal) -> None:
    c = classify(plan, dialled)
    assert c.number_class is NumberClass.INVALID and c.problem is refusal
    r = route(plan, dialled, Permission.INTERNATIONAL, premium_allowed=True)
    assert not r.allowed and r.reason is refusal
    assert r.trunk_number is None and r.extension is None
    assert r.status == refusal.status


P = Permission
# (dialled, permission, premium flag, allowed?, refusal)
PERMISSION_TABLE = [
    ("100", P.INTERNAL, False, True, None),
    ("110", P.INTERNAL, False, True, None),
    ("112", P.INTERNAL, False, True, None),
    ("1234567", P.INTERNAL, False, False, Refusal.NOT_PERMITTED),
    ("1234567", P.NATIONAL, False, True, None),
    ("030 1234567", P.INTERNAL, False, False, Refusal.NOT_PERMITTED),
    ("030 1234567", P.NATIONAL, False, True, None),
    ("030 1234567", P.INTERNATIONAL, False, True, None),
    ("0171 1234567", P.INTERNAL, False, False, Refusal.NOT_PERMITTED),
    ("0171 1234567", P.NATIONAL, False, True, None),
    ("0800 1234567", P.INTERNAL, False, False, Refusal.NOT_PERMITTED),
    ("0800 1234567", P.NATIONAL, False, True, None),
    ("116117", P.NATIONAL, False, True, None),
    ("0043 1 5880", P.NATIONAL, False, False, Refusal.NOT_PERMITTED),
    ("0043 1 5880", P.INTERNATIONAL, False, True, None),
    ("+1 212 555 0100", P.NATIONAL, True, False, Refusal.NOT_PERMITTED),
    ("0900 1234567", P.INTERNATIONAL, False, False, Refusal.PREMIUM_BLOCKED),
    ("0900 1234567", P.NATIONAL, True, True, None),
    ("0900 1234567", P.INTERNAL, True, False, Refusal.NOT_PERMITTED),
    ("11833", P.NATIONAL, False, False, Refusal.PREMIUM_BLOCKED),
    ("11833", P.NATIONAL, True, True, None),
    ("+979 12345678", P.NATIONAL, True, False, Refusal.NOT_PERMITTED),  # foreign premium
    ("+979 12345678", P.INTERNATIONAL, False, False, Refusal.PREMIUM_BLOCKED),
    ("+979 12345678", P.INTERNATIONAL, True, True, None),
]


@pytest.mark.parametrize(("dialled", "perm", "premium", "allowed", "refusal"), PERMISSION_TABLE,
                         ids=[f"{r[0]}-{r[1].value}-{r[2]}" for r in PERMISSION_TABLE])
def test_permissions(dialled: str, perm: Permission, premium: bool, allowed: bool,
                     refusal: Refusal | None) -> None:
    r = route(BERLIN, dialled, perm, premium_allowed=premium)
    assert (r.allowed, r.reason) == (allowed, refusal)
    if allowed:
        assert (r.extension is not None) != (r.trunk_number is not None)
        assert r.status == 0
    else:
        assert r.trunk_number is None and r.extension is None  # never reaches a trunk
        assert r.status == 403


def test_every_class_against_every_permission() -> None:
    """The whole (class, permission, premium) table: emergency and internal always, the rest by
    level, premium only with the flag."""
    samples = {
        C.INTERNAL: "100", C.EMERGENCY: "112", C.LOCAL: "1234567", C.NATIONAL: "030 1234567",
        C.MOBILE: "0171 1234567", C.SERVICE: "0800 1234567", C.INTERNATIONAL: "0043 1 5880",
        C.PREMIUM: "0900 1234567",
    }
    need = {C.INTERNAL: 0, C.EMERGENCY: 0, C.LOCAL: 1, C.NATIONAL: 1, C.MOBILE: 1, C.SERVICE: 1,
            C.INTERNATIONAL: 2, C.PREMIUM: 1}
    for cls, dialled in samples.items():
        assert classify(BERLIN, dialled).number_class is cls
        for perm in Permission:
            for premium in (False, True):
                r = route(BERLIN, dialled, perm, premium_allowed=premium)
                expected = perm.rank >= need[cls] and (cls is not C.PREMIUM or premium)
                assert r.allowed is expected, (cls, perm, premium)


def test_own_did_stays_internal() -> None:
    dids = {"+49301234567": "100"}
    r = route(BERLIN, "030 1234567", Permission.INTERNAL, own_did=dids.get)
    assert r.allowed and r.number_class is C.INTERNAL and r.extension == "100"
    assert r.trunk_number is None
    r = route(BERLIN, "030 7654321", Permission.INTERNAL, own_did=dids.get)
    assert not r.allowed and r.reason is Refusal.NOT_PERMITTED


@pytest.mark.parametrize(
    ("plan", "text", "e164"),
    [
        (BERLIN, "+49 30 123456", "+4930123456"),
        (BERLIN, "0049 30 123456", "+4930123456"),
        (BERLIN, "030 123456", "+4930123456"),
        (BERLIN, "123456", "+4930123456"),
        (NO_AREA, "123456", None),
        (BERLIN, "0171-1234567", "+491711234567"),
        (VIENNA, "01 5880", "+4315880"),
        (BERLIN, "+0123456789", None),
        (BERLIN, "+49 30", None),
        (BERLIN, "+4930123456789012", None),
        (BERLIN, "abc", None),
        (BERLIN, "", None),
    ],
)
def test_to_e164(plan: DialPlan, text: str, e164: str | None) -> None:
    assert to_e164(plan, text) == e164


@pytest.mark.parametrize(
    ("e164", "cc"),
    [("+4930123456", "49"), ("+12125550100", "1"), ("+74951234567", "7"), ("+4315880", "43"),
     ("+35312345678", "353"), ("+97912345678", "979")],
)
def test_country_code_of(e164: str, cc: str) -> None:
    assert country_code_of(e164) == cc


def test_class_of_e164_uses_the_plans_country() -> None:
    assert class_of_e164(BERLIN, "+4315880") is C.INTERNATIONAL
    assert class_of_e164(VIENNA, "+4315880") is C.NATIONAL
    assert class_of_e164(VIENNA, "+491711234567") is C.INTERNATIONAL
    assert class_of_e164(BERLIN, "+491711234567") is C.MOBILE


@pytest.mark.parametrize(
    ("ext", "reserved"),
    [("100", False), ("200", False), ("1100", False), ("110", True), ("112", True),
     ("115", True), ("116", True), ("1161", True), ("118", True), ("11833", True), ("012", True)],
)
def test_reserved_extensions(ext: str, reserved: bool) -> None:
    assert (reserved_extension(ext) is not None) is reserved


@pytest.mark.parametrize(
    "kwargs",
    [{"country_code": "4a"}, {"country_code": ""}, {"country_code": "1234"},
     {"area_code": "030"}, {"area_code": "3x"}, {"ext_min_len": 1}, {"ext_max_len": 9},
     {"ext_min_len": 4, "ext_max_len": 3}],
)
def test_bad_plans(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        DialPlan(**kwargs)  # type: ignore[arg-type]


def test_permitted_reports_classification_problems() -> None:
    c = Classified("x", NumberClass.INVALID, problem=Refusal.UNROUTABLE)
    assert permitted(c, Permission.INTERNATIONAL, True) is Refusal.UNROUTABLE
