"""The dial plan: classify, normalise and authorise dialled strings per tenant (pure, no I/O).

What a user dials on a phone is one of (German conventions, the default; the country code and
area code come from the tenant):

==============  ===============================  ==================================================
dialled         class                            goes to
==============  ===============================  ==================================================
``110``/``112`` emergency (always allowed)       the tenant's trunk, as dialled
``100``         internal (extension length)      the user with that extension
``1234567``     local (longer than extensions)   the trunk, ``+<cc><area><local>``
``030 123456``  national (``0`` + national no.)  the trunk, ``+49 30 123456``
``0171 …``      mobile                           the trunk, E.164
``0043 1 …``    international (``00`` + cc)      the trunk, E.164
``+43 1 …``     international (already E.164)    the trunk, E.164
``0900 …``      premium rate (also 0137, 118xx)  the trunk — only with the premium flag
``0800 …``      service (freephone, 0180, 115)   the trunk, as E.164 or short code
==============  ===============================  ==================================================

A user's permission is one of internal < national < international; premium-rate numbers need the
premium flag *and* the level of their destination (national for domestic premium numbers). An
unauthorised call gets a :class:`Route` with ``allowed=False`` and never reaches a trunk; the
B2BUA answers it with ``Route.status`` (403 not permitted, 484 incomplete, 404 unroutable).

Numbers are E.164 with a leading ``+`` everywhere in the PBX (store, directory, trunks); the
trunk adapter converts to what a carrier wants.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass

#: Characters people type or paste between digits ("030 / 123-45 67", "(030) 1234").
_VISUAL_SEPARATORS = re.compile(r"[\s\-./()]")
_DIGITS = re.compile(r"^[0-9]+$")

#: E.164 allows at most 15 digits (cc + national number); fewer than 7 is never a full number.
E164_MIN_DIGITS = 7
E164_MAX_DIGITS = 15

#: Emergency numbers: always allowed, whatever the user's permission, and sent as dialled (the
#: carrier routes them by the caller's location). 112 is the EU-wide number, 110 the German police.
EMERGENCY_NUMBERS = frozenset({"110", "112"})


class NumberClass(enum.Enum):
    """What kind of destination a dialled string is."""

    INTERNAL = "internal"
    LOCAL = "local"
    NATIONAL = "national"
    MOBILE = "mobile"
    INTERNATIONAL = "international"
    PREMIUM = "premium-rate"
    EMERGENCY = "emergency"
    SERVICE = "service"
    INVALID = "invalid"


class Permission(enum.Enum):
    """A user's call permission (ordered: each level includes the ones before it)."""

    INTERNAL = "internal"
    NATIONAL = "national"
    INTERNATIONAL = "international"

    @property
    def rank(self) -> int:
        """0 internal, 1 national, 2 international."""
        return _PERMISSION_RANK[self]


_PERMISSION_RANK = {Permission.INTERNAL: 0, Permission.NATIONAL: 1, Permission.INTERNATIONAL: 2}


class Refusal(enum.Enum):
    """Why a dialled string is not routed; ``status`` is the SIP response for the caller."""

    NOT_PERMITTED = "not permitted"
    PREMIUM_BLOCKED = "premium-rate numbers blocked"
    INCOMPLETE = "number incomplete"
    NO_AREA_CODE = "local number but the tenant has no area code"
    UNROUTABLE = "not a dialable number"

    @property
    def status(self) -> int:
        """403 for permission refusals, 484 Address Incomplete, 404 otherwise."""
        return _REFUSAL_STATUS[self]


_REFUSAL_STATUS = {
    Refusal.NOT_PERMITTED: 403,
    Refusal.PREMIUM_BLOCKED: 403,
    Refusal.INCOMPLETE: 484,
    Refusal.NO_AREA_CODE: 484,
    Refusal.UNROUTABLE: 404,
}

#: E.164 prefixes (without "+") of premium-rate and other expensive destinations. Germany first
#: (0900 premium, 0137/0138 televoting, 019x online services, 012 "innovative services"),
#: then the common ones abroad, international premium (979) and satellite networks, which toll
#: fraud after a hacked phone account loves (DESIGN.md: an unauthorised call never reaches a
#: trunk). Longest prefix wins; extend this table rather than adding code.
PREMIUM_PREFIXES: frozenset[str] = frozenset({
    "49900", "49137", "49138", "49190", "49191", "49192", "49193", "49194", "4912",
    "4390", "4393",                     # Austria 0900, 0930/0939
    "4190",                             # Switzerland 0900/0901/0906
    "449", "4487",                      # UK 09 premium, 087 charged
    "3389",                             # France 089x
    "3989",                             # Italy 89x
    "34803", "34806", "34807",          # Spain
    "3190",                             # Netherlands 0900/0906/0909
    "3290",                             # Belgium 090x
    "1900", "1976",                     # NANP premium
    "979",                              # International Premium Rate Service
    "870", "8816", "8817", "882",       # Inmarsat, Iridium, international networks
})

#: Domestic service numbers billed like (or cheaper than) national calls: freephone and shared
#: cost. They need the national permission like any national call.
SERVICE_PREFIXES: frozenset[str] = frozenset({"49800", "49180", "43800", "41800", "44800"})

#: Mobile network prefixes per country code (for the class only; permission is national).
MOBILE_PREFIXES: dict[str, tuple[str, ...]] = {
    "49": ("15", "16", "17"),
    "43": ("650", "660", "664", "676", "677", "678", "680", "681", "688", "699"),
    "41": ("75", "76", "77", "78", "79"),
}

#: Country calling codes: 1-3 digits; the ITU assignment is prefix-free, so the longest one that
#: matches is right. Only what we need to tell the country (and so "international") apart.
_CC_ONE = frozenset({"1", "7"})
_CC_TWO = frozenset({
    "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46",
    "47", "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63",
    "64", "65", "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
})


def country_code_of(e164: str) -> str:
    """The country calling code of an E.164 number (``"+4930…"`` → ``"49"``)."""
    digits = e164.lstrip("+")
    if digits[:1] in _CC_ONE:
        return digits[:1]
    if digits[:2] in _CC_TWO:
        return digits[:2]
    return digits[:3]


@dataclass(frozen=True, slots=True)
class DialPlan:
    """A tenant's numbering context.

    ``ext_min_len``/``ext_max_len``: the extension plan (digits; extensions never start with 0).
    ``area_code`` without the national prefix (``"30"`` for Berlin), empty when unknown.
    """

    country_code: str = "49"
    area_code: str = ""
    ext_min_len: int = 3
    ext_max_len: int = 3
    national_prefix: str = "0"
    international_prefix: str = "00"

    def __post_init__(self) -> None:
        if not _DIGITS.match(self.country_code) or not 1 <= len(self.country_code) <= 3:
            raise ValueError(f"country code {self.country_code!r} must be 1 to 3 digits")
        if self.area_code and (not _DIGITS.match(self.area_code) or self.area_code[0] == "0"):
            raise ValueError(f"area code {self.area_code!r} must be digits without the leading 0")
        if not 2 <= self.ext_min_len <= self.ext_max_len <= 8:
            raise ValueError("extensions must have between 2 and 8 digits (min <= max)")


@dataclass(frozen=True, slots=True)
class Classified:
    """A dialled string understood: its class and where it goes.

    ``extension`` is set for internal calls; ``trunk_number`` for everything that leaves through a
    trunk (E.164 with ``+``, or the short code as dialled for emergency/service short codes);
    ``e164`` is the E.164 form when there is one. ``domestic`` is False for foreign numbers.
    """

    dialled: str
    number_class: NumberClass
    extension: str | None = None
    e164: str | None = None
    trunk_number: str | None = None
    domestic: bool = True
    problem: Refusal | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """The dial plan's decision for one call: an internal target, a trunk number, or a refusal."""

    classified: Classified
    allowed: bool
    reason: Refusal | None = None

    @property
    def number_class(self) -> NumberClass:
        """The class of the dialled string."""
        return self.classified.number_class

    @property
    def extension(self) -> str | None:
        """The extension to ring (internal calls)."""
        return self.classified.extension if self.allowed else None

    @property
    def trunk_number(self) -> str | None:
        """The number to send to the tenant's trunk (external calls)."""
        return self.classified.trunk_number if self.allowed else None

    @property
    def status(self) -> int:
        """The SIP status for a refused call (0 when allowed)."""
        return self.reason.status if self.reason is not None else 0


def clean(dialled: str) -> str:
    """Strip visual separators; keeps digits, a leading ``+``, and anything else (so that letters
    still make the string invalid)."""
    return _VISUAL_SEPARATORS.sub("", dialled.strip())


def _short_code_class(digits: str) -> NumberClass | None:
    """German short codes other than emergency: 115, 116xxx (harmonised services), 118xx(x)."""
    if digits == "115" or (digits.startswith("116") and len(digits) == 6):
        return NumberClass.SERVICE
    if digits.startswith("118") and len(digits) in (5, 6):
        return NumberClass.PREMIUM
    return None


def reserved_extension(extension: str) -> str | None:
    """Why ``extension`` cannot be an extension (the dial plan would route it elsewhere), or None."""
    if extension.startswith("0"):
        return "extensions must not start with 0 (the national prefix)"
    if extension in EMERGENCY_NUMBERS:
        return f"{extension} is an emergency number"
    if extension == "115" or extension.startswith(("116", "118")):
        return f"{extension} collides with the service numbers 115, 116xxx and 118xx"
    return None


def class_of_e164(plan: DialPlan, e164: str) -> NumberClass:
    """The class of an E.164 number (``+…``) as seen from ``plan``'s country."""
    digits = e164.lstrip("+")
    for n in range(min(len(digits), 6), 0, -1):
        if digits[:n] in PREMIUM_PREFIXES:
            return NumberClass.PREMIUM
    if not digits.startswith(plan.country_code):
        return NumberClass.INTERNATIONAL
    for n in range(min(len(digits), 6), 0, -1):
        if digits[:n] in SERVICE_PREFIXES:
            return NumberClass.SERVICE
    national = digits[len(plan.country_code):]
    if national.startswith(MOBILE_PREFIXES.get(plan.country_code, ())):
        return NumberClass.MOBILE
    return NumberClass.NATIONAL


def to_e164(plan: DialPlan, number: str) -> str | None:
    """Normalise a full telephone number in any usual notation to E.164 (``+…``), or None.

    ``+49 30 123456``, ``0049 30 123456``, ``030 123456`` (national), and ``123456`` (local, only
    when the plan has an area code) all give ``+4930123456``. Used for DIDs, mobile and remote
    office numbers, and the numbers carriers send (some send ``4930…`` — give those with ``+``).
    """
    s = clean(number)
    if s.startswith("+"):
        digits = s[1:]
    elif s.startswith(plan.international_prefix):
        digits = s[len(plan.international_prefix):]
    elif s.startswith(plan.national_prefix):
        digits = plan.country_code + s[len(plan.national_prefix):]
    elif plan.area_code and _DIGITS.match(s):
        digits = plan.country_code + plan.area_code + s
    else:
        return None
    if not _DIGITS.match(digits) or digits.startswith("0"):
        return None
    if not E164_MIN_DIGITS <= len(digits) <= E164_MAX_DIGITS:
        return None
    return "+" + digits


def classify(plan: DialPlan, dialled: str) -> Classified:
    """Classify and normalise what a user dialled (see the module docstring for the table)."""
    s = clean(dialled)
    if s in EMERGENCY_NUMBERS:
        return Classified(dialled, NumberClass.EMERGENCY, trunk_number=s)
    if not s or not _DIGITS.match(s.removeprefix("+")):
        return Classified(dialled, NumberClass.INVALID, problem=Refusal.UNROUTABLE)
    if s.startswith("+") or s.startswith(plan.international_prefix):
        digits = s[1:] if s.startswith("+") else s[len(plan.international_prefix):]
        return _e164_classified(plan, dialled, digits)
    if s.startswith(plan.national_prefix):
        national = s[len(plan.national_prefix):]
        if len(national) < 5:  # shortest German national number: 2-digit area + 3-digit local
            return Classified(dialled, NumberClass.INVALID, problem=Refusal.INCOMPLETE)
        return _e164_classified(plan, dialled, plan.country_code + national)
    short = _short_code_class(s)
    if short is not None:
        return Classified(dialled, short, trunk_number=s)
    if plan.ext_min_len <= len(s) <= plan.ext_max_len:
        return Classified(dialled, NumberClass.INTERNAL, extension=s)
    if len(s) < plan.ext_min_len:
        return Classified(dialled, NumberClass.INVALID, problem=Refusal.INCOMPLETE)
    if not plan.area_code:
        return Classified(dialled, NumberClass.INVALID, problem=Refusal.NO_AREA_CODE)
    e164 = "+" + plan.country_code + plan.area_code + s
    if len(e164) - 1 > E164_MAX_DIGITS:
        return Classified(dialled, NumberClass.INVALID, problem=Refusal.UNROUTABLE)
    return Classified(dialled, NumberClass.LOCAL, e164=e164, trunk_number=e164)


def _e164_classified(plan: DialPlan, dialled: str, digits: str) -> Classified:
    if digits.startswith("0"):
        return Classified(dialled, NumberClass.INVALID, problem=Refusal.UNROUTABLE)
    if len(digits) < E164_MIN_DIGITS:
        return Classified(dialled, NumberClass.INVALID, problem=Refusal.INCOMPLETE)
    if len(digits) > E164_MAX_DIGITS:
        return Classified(dialled, NumberClass.INVALID, problem=Refusal.UNROUTABLE)
    e164 = "+" + digits
    number_class = class_of_e164(plan, e164)
    domestic = digits.startswith(plan.country_code)
    return Classified(dialled, number_class, e164=e164, trunk_number=e164, domestic=domestic)


def permitted(classified: Classified, permission: Permission, premium_allowed: bool) -> Refusal | None:
    """None when a user with ``permission`` (and the premium flag) may make this call, else why
    not."""
    c = classified.number_class
    if classified.problem is not None:
        return classified.problem
    if c in (NumberClass.INTERNAL, NumberClass.EMERGENCY):
        return None
    needed = Permission.NATIONAL if classified.domestic else Permission.INTERNATIONAL
    if c is NumberClass.INTERNATIONAL:
        needed = Permission.INTERNATIONAL
    if c is NumberClass.PREMIUM and not premium_allowed:
        return Refusal.PREMIUM_BLOCKED
    if permission.rank < needed.rank:
        return Refusal.NOT_PERMITTED
    return None


def route(
    plan: DialPlan,
    dialled: str,
    permission: Permission,
    premium_allowed: bool = False,
    own_did: Callable[[str], str | None] | None = None,
) -> Route:
    """Classify ``dialled`` and decide whether the user may call it.

    ``own_did(e164)`` may return the extension of a user of the same tenant who owns that DID:
    such a call stays internal (it never goes out to the carrier and back).
    """
    classified = classify(plan, dialled)
    if own_did is not None and classified.e164 is not None:
        extension = own_did(classified.e164)
        if extension is not None:
            classified = Classified(dialled, NumberClass.INTERNAL, extension=extension,
                                    e164=classified.e164)
    reason = permitted(classified, permission, premium_allowed)
    return Route(classified, reason is None, reason)
