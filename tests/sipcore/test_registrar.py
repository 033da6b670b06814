"""Registrar (RFC 3261 §10.3, RFC 3327 Path) with a fake clock."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipcore.message import Request, Response, parse_message
from sipcore.registrar import (
    Binding,
    BindingAdded,
    BindingChange,
    BindingRefreshed,
    BindingRemoved,
    Registrar,
    RemovalReason,
)
from sipcore.transport import Peer
from sipcore.uri import parse_name_addr

AOR = "sip:alice@pbx.example.com"
PHONE = Peer("udp", "192.0.2.10", 5060)
T0 = 1_700_000_000.0


def register(
    *contacts: str,
    expires: int | str | None = None,
    call_id: str = "reg-1",
    cseq: int = 1,
    extra: tuple[str, ...] = (),
) -> Request:
    lines = [
        "REGISTER sip:pbx.example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKr1;rport",
        "Max-Forwards: 70",
        f"From: <{AOR}>;tag=f1",
        f"To: <{AOR}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        "User-Agent: TestPhone/1.0",
    ]
    lines += [f"Contact: {c}" for c in contacts]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    lines += list(extra)
    raw = ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()
    msg = parse_message(raw)
    assert isinstance(msg, Request)
    return msg


def contacts_of(resp: Response) -> dict[str, dict[str, str | None]]:
    out = {}
    for value in resp.headers.get_all("Contact"):
        na = parse_name_addr(value)
        out[str(na.uri)] = na.params
    return out


def kinds(changes: list[BindingChange]) -> list[tuple[str, str]]:
    return [(type(c).__name__, c.binding.uri) for c in changes]


# -- basic registration and the 200 ----------------------------------------------------------


def test_register_one_contact_and_200_lists_it_with_date() -> None:
    reg = Registrar()
    resp, changes = reg.handle_register(
        register("<sip:alice@192.0.2.10:5060>", expires=600), AOR, PHONE, T0
    )
    assert resp.status == 200
    assert resp.to_tag  # a UAS adds a To-tag (RFC 3261 §8.2.6.2)
    assert resp.call_id == "reg-1" and resp.cseq.seq == 1
    assert contacts_of(resp) == {"sip:alice@192.0.2.10:5060": {"expires": "600"}}
    date = resp.headers.get("Date")
    assert date is not None and parsedate_to_datetime(date).timestamp() == T0
    assert kinds(changes) == [("BindingAdded", "sip:alice@192.0.2.10:5060")]
    b = changes[0].binding
    assert (b.aor, b.expires_at, b.call_id, b.cseq) == (AOR, T0 + 600, "reg-1", 1)
    assert b.received == PHONE
    assert b.user_agent == "TestPhone/1.0"
    assert reg.bindings(AOR, T0) == [b]
    assert reg.count() == 1


def test_query_without_contact_changes_nothing() -> None:
    reg = Registrar()
    reg.handle_register(register("<sip:alice@192.0.2.10>", expires=600), AOR, PHONE, T0)
    resp, changes = reg.handle_register(register(cseq=2), AOR, PHONE, T0 + 100)
    assert resp.status == 200 and changes == []
    assert contacts_of(resp) == {"sip:alice@192.0.2.10": {"expires": "500"}}
    empty, none = reg.handle_register(register(), "sip:nobody@pbx.example.com", PHONE, T0)
    assert empty.status == 200 and none == [] and "Contact" not in empty.headers


def test_several_contacts_q_ordering() -> None:
    reg = Registrar()
    resp, changes = reg.handle_register(
        register(
            "<sip:alice@192.0.2.10>;q=0.5",
            "<sip:alice@192.0.2.11>;q=1.0, <sip:alice@192.0.2.12>;q=0.1",
            "<sip:alice@192.0.2.13>",
            expires=600,
        ),
        AOR,
        PHONE,
        T0,
    )
    assert resp.status == 200 and len(changes) == 4
    order = [(b.uri, b.q) for b in reg.bindings(AOR, T0)]
    assert [q for _, q in order] == [1.0, 1.0, 0.5, 0.1]
    assert order[2][0] == "sip:alice@192.0.2.10"
    assert order[3][0] == "sip:alice@192.0.2.12"
    listed = contacts_of(resp)
    assert listed["sip:alice@192.0.2.10"]["q"] == "0.5"
    assert listed["sip:alice@192.0.2.12"]["q"] == "0.1"


@pytest.mark.parametrize("q", ["1.5", "abc", "0.1234", "-1", "2"])
def test_bad_q_is_400_and_nothing_changes(q: str) -> None:
    reg = Registrar()
    resp, changes = reg.handle_register(
        register("<sip:alice@192.0.2.10>", f"<sip:alice@192.0.2.11>;q={q}", expires=600),
        AOR,
        PHONE,
        T0,
    )
    assert resp.status == 400 and changes == []
    assert reg.count() == 0  # the valid first contact was not committed either


# -- expiry values ---------------------------------------------------------------------------


def test_contact_expires_param_beats_expires_header() -> None:
    reg = Registrar()
    _, changes = reg.handle_register(
        register("<sip:a@192.0.2.1>;expires=120", "<sip:b@192.0.2.2>", expires=900),
        AOR,
        PHONE,
        T0,
    )
    got = {c.binding.uri: c.binding.expires_at - T0 for c in changes}
    assert got == {"sip:a@192.0.2.1": 120, "sip:b@192.0.2.2": 900}


def test_default_expires_and_clamping_and_malformed() -> None:
    reg = Registrar(default_expires=1800, max_expires=3600)
    _, changes = reg.handle_register(
        register(
            "<sip:a@192.0.2.1>", "<sip:b@192.0.2.2>;expires=99999", "<sip:c@192.0.2.3>;expires=soon"
        ),
        AOR,
        PHONE,
        T0,
    )
    got = {c.binding.uri: c.binding.expires_at - T0 for c in changes}
    assert got == {"sip:a@192.0.2.1": 1800, "sip:b@192.0.2.2": 3600, "sip:c@192.0.2.3": 1800}


@pytest.mark.parametrize("where", ["header", "param"])
def test_interval_too_brief_423_with_min_expires(where: str) -> None:
    reg = Registrar(min_expires=60)
    req = (
        register("<sip:a@192.0.2.1>", expires=30)
        if where == "header"
        else register("<sip:z@192.0.2.9>", "<sip:a@192.0.2.1>;expires=59", expires=600)
    )
    resp, changes = reg.handle_register(req, AOR, PHONE, T0)
    assert resp.status == 423
    assert resp.headers.get("Min-Expires") == "60"
    assert changes == [] and reg.count() == 0
    ok, _ = reg.handle_register(register("<sip:a@192.0.2.1>", expires=60), AOR, PHONE, T0)
    assert ok.status == 200


def test_expires_zero_removes_one_binding() -> None:
    reg = Registrar()
    reg.handle_register(
        register("<sip:a@192.0.2.1>", "<sip:b@192.0.2.2>", expires=600), AOR, PHONE, T0
    )
    resp, changes = reg.handle_register(
        register("<sip:a@192.0.2.1>;expires=0", cseq=2), AOR, PHONE, T0 + 1
    )
    assert resp.status == 200
    assert len(changes) == 1 and isinstance(changes[0], BindingRemoved)
    assert changes[0].reason is RemovalReason.UNREGISTERED
    assert list(contacts_of(resp)) == ["sip:b@192.0.2.2"]
    # Removing something that is not bound is fine and changes nothing.
    resp, changes = reg.handle_register(
        register("<sip:x@192.0.2.7>", expires=0, cseq=3), AOR, PHONE, T0 + 2
    )
    assert resp.status == 200 and changes == []


# -- Contact: * ------------------------------------------------------------------------------


def test_star_with_expires_zero_removes_all() -> None:
    reg = Registrar()
    reg.handle_register(
        register("<sip:a@192.0.2.1>", "<sip:b@192.0.2.2>", expires=600), AOR, PHONE, T0
    )
    reg.handle_register(register("<sip:c@192.0.2.3>", expires=600, call_id="other"), AOR, PHONE, T0)
    resp, changes = reg.handle_register(register("*", expires=0, cseq=2), AOR, PHONE, T0 + 5)
    assert resp.status == 200 and "Contact" not in resp.headers
    assert sorted(kinds(changes)) == [
        ("BindingRemoved", "sip:a@192.0.2.1"),
        ("BindingRemoved", "sip:b@192.0.2.2"),
        ("BindingRemoved", "sip:c@192.0.2.3"),
    ]
    assert reg.count() == 0 and reg.bindings(AOR, T0 + 5) == []


@pytest.mark.parametrize(
    ("contacts", "expires"),
    [(("*",), None), (("*",), 10), (("*", "<sip:a@192.0.2.1>"), 0), (("*, <sip:a@192.0.2.1>",), 0)],
)
def test_star_misuse_is_400(contacts: tuple[str, ...], expires: int | None) -> None:
    reg = Registrar()
    reg.handle_register(register("<sip:a@192.0.2.1>", expires=600), AOR, PHONE, T0)
    resp, changes = reg.handle_register(
        register(*contacts, expires=expires, cseq=2), AOR, PHONE, T0 + 1
    )
    assert resp.status == 400 and changes == []
    assert reg.count() == 1


def test_star_with_old_cseq_is_500() -> None:
    reg = Registrar()
    reg.handle_register(register("<sip:a@192.0.2.1>", expires=600, cseq=5), AOR, PHONE, T0)
    resp, changes = reg.handle_register(register("*", expires=0, cseq=5), AOR, PHONE, T0 + 1)
    assert resp.status == 500 and changes == [] and reg.count() == 1


# -- Call-ID / CSeq ordering (§10.3 step 7) ------------------------------------------------------


def test_same_call_id_needs_higher_cseq() -> None:
    reg = Registrar()
    reg.handle_register(register("<sip:a@192.0.2.1>", expires=600, cseq=10), AOR, PHONE, T0)
    for cseq in (10, 9):
        resp, changes = reg.handle_register(
            register("<sip:a@192.0.2.1>", expires=0, cseq=cseq), AOR, PHONE, T0 + 1
        )
        assert resp.status == 500 and changes == []
    assert reg.count() == 1
    resp, changes = reg.handle_register(
        register("<sip:a@192.0.2.1>", expires=1200, cseq=11), AOR, PHONE, T0 + 2
    )
    assert resp.status == 200
    assert kinds(changes) == [("BindingRefreshed", "sip:a@192.0.2.1")]
    assert changes[0].binding.cseq == 11
    assert changes[0].binding.expires_at == T0 + 2 + 1200


def test_new_call_id_may_use_any_cseq() -> None:
    reg = Registrar()
    reg.handle_register(register("<sip:a@192.0.2.1>", expires=600, cseq=10), AOR, PHONE, T0)
    resp, changes = reg.handle_register(
        register("<sip:a@192.0.2.1>", expires=600, cseq=1, call_id="rebooted"), AOR, PHONE, T0 + 1
    )
    assert resp.status == 200
    assert isinstance(changes[0], BindingRefreshed)
    assert changes[0].binding.call_id == "rebooted"


def test_out_of_order_aborts_the_whole_request() -> None:
    reg = Registrar()
    reg.handle_register(register("<sip:a@192.0.2.1>", expires=600, cseq=10), AOR, PHONE, T0)
    resp, changes = reg.handle_register(
        register("<sip:new@192.0.2.5>", "<sip:a@192.0.2.1>", expires=600, cseq=3),
        AOR,
        PHONE,
        T0 + 1,
    )
    assert resp.status == 500 and changes == []
    assert [b.uri for b in reg.bindings(AOR, T0 + 1)] == ["sip:a@192.0.2.1"]


def test_equivalent_contact_uri_refreshes_instead_of_adding() -> None:
    reg = Registrar()
    reg.handle_register(
        register("<sip:alice@Phone.Example.com;transport=tcp>", expires=600), AOR, PHONE, T0
    )
    resp, changes = reg.handle_register(
        register("<sip:alice@phone.example.com;TRANSPORT=TCP>", expires=600, cseq=2),
        AOR,
        PHONE,
        T0 + 1,
    )
    assert resp.status == 200
    assert [type(c) for c in changes] == [BindingRefreshed]
    assert reg.count() == 1


def test_same_instance_and_reg_id_replaces_changed_contact() -> None:
    reg = Registrar()
    inst = '+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1'
    _, first = reg.handle_register(
        register(f"<sip:alice@192.0.2.10>;{inst}", expires=600), AOR, PHONE, T0
    )
    assert first[0].binding.instance == "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"
    assert first[0].binding.reg_id == 1
    moved = Peer("tcp", "198.51.100.7", 40000, conn_id=7)
    resp, changes = reg.handle_register(
        register(f"<sip:alice@198.51.100.7:40000;transport=tcp>;{inst}", expires=600, cseq=2),
        AOR,
        moved,
        T0 + 30,
    )
    assert resp.status == 200
    assert kinds(changes) == [
        ("BindingRemoved", "sip:alice@192.0.2.10"),
        ("BindingAdded", "sip:alice@198.51.100.7:40000;transport=tcp"),
    ]
    assert isinstance(changes[0], BindingRemoved) and changes[0].reason is RemovalReason.REPLACED
    (only,) = reg.bindings(AOR, T0 + 30)
    assert only.received == moved
    assert "+sip.instance" in only.contact and "reg-id=1" in only.contact
    assert "+sip.instance" in (resp.headers.get("Contact") or "")


# -- Path (RFC 3327) ---------------------------------------------------------------------------


def test_path_is_stored_and_echoed_with_supported_path() -> None:
    reg = Registrar()
    resp, changes = reg.handle_register(
        register(
            "<sip:alice@192.0.2.10>",
            expires=600,
            extra=(
                "Supported: replaces, path",
                "Path: <sip:edge1.example.com;lr>",
                "Path: <sip:edge2.example.com;lr>",
            ),
        ),
        AOR,
        PHONE,
        T0,
    )
    assert resp.status == 200
    assert changes[0].binding.path == ("<sip:edge1.example.com;lr>", "<sip:edge2.example.com;lr>")
    assert resp.headers.get_all("Path") == list(changes[0].binding.path)


def test_path_is_ignored_without_supported_path() -> None:
    reg = Registrar()
    resp, changes = reg.handle_register(
        register(
            "<sip:alice@192.0.2.10>", expires=600, extra=("Path: <sip:edge1.example.com;lr>",)
        ),
        AOR,
        PHONE,
        T0,
    )
    assert resp.status == 200
    assert changes[0].binding.path == ()
    assert "Path" not in resp.headers


# -- limits ------------------------------------------------------------------------------------


def test_max_contacts_evicts_oldest_untouched_binding() -> None:
    reg = Registrar(max_contacts=2)
    reg.handle_register(register("<sip:a@192.0.2.1>", expires=600, call_id="1"), AOR, PHONE, T0)
    reg.handle_register(
        register("<sip:b@192.0.2.2>", expires=600, call_id="2"), AOR, PHONE, T0 + 10
    )
    resp, changes = reg.handle_register(
        register("<sip:c@192.0.2.3>", expires=600, call_id="3"), AOR, PHONE, T0 + 20
    )
    assert resp.status == 200
    assert kinds(changes) == [
        ("BindingAdded", "sip:c@192.0.2.3"),
        ("BindingRemoved", "sip:a@192.0.2.1"),
    ]
    assert isinstance(changes[1], BindingRemoved) and changes[1].reason is RemovalReason.EVICTED
    assert sorted(contacts_of(resp)) == ["sip:b@192.0.2.2", "sip:c@192.0.2.3"]
    assert reg.count() == 2


def test_too_many_contacts_in_one_request_is_403() -> None:
    reg = Registrar(max_contacts=2)
    resp, changes = reg.handle_register(
        register("<sip:a@192.0.2.1>", "<sip:b@192.0.2.2>", "<sip:c@192.0.2.3>", expires=600),
        AOR,
        PHONE,
        T0,
    )
    assert resp.status == 403 and changes == [] and reg.count() == 0


def test_unparsable_contact_is_400() -> None:
    reg = Registrar()
    resp, changes = reg.handle_register(register("<sip:a@>;;;", expires=600), AOR, PHONE, T0)
    assert resp.status == 400 and changes == []


# -- time: expiry, timer, restore --------------------------------------------------------------


def test_expiry_with_fake_clock() -> None:
    reg = Registrar()
    assert reg.get_timer() is None
    reg.handle_register(register("<sip:a@192.0.2.1>", expires=300, call_id="1"), AOR, PHONE, T0)
    reg.handle_register(register("<sip:b@192.0.2.2>", expires=600, call_id="2"), AOR, PHONE, T0)
    assert reg.get_timer() == T0 + 300
    assert reg.expire(T0 + 299) == []
    assert [b.uri for b in reg.bindings(AOR, T0 + 299.5)] == ["sip:b@192.0.2.2", "sip:a@192.0.2.1"]
    # A binding past its time is invisible even before expire() runs.
    assert [b.uri for b in reg.bindings(AOR, T0 + 300)] == ["sip:b@192.0.2.2"]
    gone = reg.expire(T0 + 300)
    assert kinds(gone) == [("BindingRemoved", "sip:a@192.0.2.1")]
    assert isinstance(gone[0], BindingRemoved) and gone[0].reason is RemovalReason.EXPIRED
    assert reg.get_timer() == T0 + 600
    assert reg.count() == 1


def test_refresh_moves_the_deadline() -> None:
    reg = Registrar()
    reg.handle_register(register("<sip:a@192.0.2.1>", expires=300), AOR, PHONE, T0)
    reg.handle_register(register("<sip:a@192.0.2.1>", expires=300, cseq=2), AOR, PHONE, T0 + 200)
    assert reg.get_timer() == T0 + 500
    assert reg.expire(T0 + 300) == []  # the old deadline is stale
    assert [type(c) for c in reg.expire(T0 + 500)] == [BindingRemoved]
    assert reg.get_timer() is None and reg.count() == 0


def test_register_after_deadline_sees_binding_expired() -> None:
    reg = Registrar()
    reg.handle_register(register("<sip:a@192.0.2.1>", expires=60, cseq=9), AOR, PHONE, T0)
    # Long after expiry the same Call-ID with a lower CSeq does not hit a ghost binding.
    resp, changes = reg.handle_register(
        register("<sip:a@192.0.2.1>", expires=600, cseq=1), AOR, PHONE, T0 + 100
    )
    assert resp.status == 200
    assert kinds(changes) == [
        ("BindingRemoved", "sip:a@192.0.2.1"),
        ("BindingAdded", "sip:a@192.0.2.1"),
    ]


def test_restore_drops_expired_and_reports_them() -> None:
    live = Binding(
        AOR,
        "sip:a@192.0.2.1",
        "<sip:a@192.0.2.1>",
        T0 + 100,
        q=0.7,
        call_id="x",
        cseq=3,
        received=PHONE,
    )
    dead = Binding(AOR, "sip:b@192.0.2.2", "<sip:b@192.0.2.2>", T0 - 1)
    other = Binding("sip:bob@pbx.example.com", "sip:bob@192.0.2.3", "<sip:bob@192.0.2.3>", T0 + 50)
    reg = Registrar()
    changes = reg.restore([live, dead, other], T0)
    assert changes == [BindingRemoved(dead, RemovalReason.EXPIRED)]
    assert reg.count() == 2
    assert reg.bindings(AOR, T0) == [live]
    assert reg.get_timer() == T0 + 50
    assert sorted(reg.aors()) == ["sip:alice@pbx.example.com", "sip:bob@pbx.example.com"]
    # A restored binding takes part in CSeq ordering like any other.
    resp, _ = reg.handle_register(
        register("<sip:a@192.0.2.1>", call_id="x", cseq=3), AOR, PHONE, T0
    )
    assert resp.status == 500


def test_remove_aor() -> None:
    reg = Registrar()
    reg.handle_register(register("<sip:a@192.0.2.1>", "<sip:b@192.0.2.2>"), AOR, PHONE, T0)
    changes = reg.remove_aor(AOR)
    assert len(changes) == 2
    assert all(
        isinstance(c, BindingRemoved) and c.reason is RemovalReason.ADMINISTRATIVE for c in changes
    )
    assert reg.count() == 0 and reg.get_timer() is None and reg.remove_aor(AOR) == []


def test_events_are_frozen() -> None:
    reg = Registrar()
    _, changes = reg.handle_register(register("<sip:a@192.0.2.1>"), AOR, PHONE, T0)
    assert isinstance(changes[0], BindingAdded)
    with pytest.raises(AttributeError):
        changes[0].binding.expires_at = 0.0  # type: ignore[misc]


# -- a model check over random operation sequences ---------------------------------------------

_op = st.tuples(
    st.sampled_from(["reg", "unreg", "star", "tick"]),
    st.integers(0, 3),  # which contact
    st.integers(0, 400),  # seconds to advance / expires
)


@given(st.lists(_op, max_size=30))
def test_random_sequences_agree_with_a_simple_model(ops: list[tuple[str, int, int]]) -> None:
    reg = Registrar(min_expires=1, max_expires=3600, default_expires=3600)
    model: dict[str, float] = {}  # uri -> expires_at
    store: dict[str, Binding] = {}  # what a write-through store would hold
    now = T0
    cseq = 0

    def apply(changes: list[BindingChange]) -> None:
        for c in changes:
            if isinstance(c, BindingRemoved):
                assert c.binding.uri in store
                del store[c.binding.uri]
            elif isinstance(c, BindingAdded):
                assert c.binding.uri not in store
                store[c.binding.uri] = c.binding
            else:
                assert c.binding.uri in store
                store[c.binding.uri] = c.binding

    for kind, which, amount in ops:
        uri = f"sip:u{which}@192.0.2.{which + 1}"
        cseq += 1
        if kind == "tick":
            now += amount
            apply(reg.expire(now))
            model = {u: t for u, t in model.items() if t > now}
            continue
        if kind == "reg":
            expires = max(amount, 1)
            resp, changes = reg.handle_register(
                register(f"<{uri}>", expires=expires, cseq=cseq), AOR, PHONE, now
            )
            model = {u: t for u, t in model.items() if t > now}
            model[uri] = now + expires
        elif kind == "unreg":
            resp, changes = reg.handle_register(
                register(f"<{uri}>", expires=0, cseq=cseq), AOR, PHONE, now
            )
            model.pop(uri, None)
            model = {u: t for u, t in model.items() if t > now}
        else:
            resp, changes = reg.handle_register(
                register("*", expires=0, cseq=cseq), AOR, PHONE, now
            )
            model = {}
        assert resp.status == 200
        apply(changes)
        assert {u: float(r["expires"] or 0) for u, r in contacts_of(resp).items()} == {
            u: float(round(t - now)) for u, t in model.items()
        }
    live = {b.uri: b.expires_at for b in reg.bindings(AOR, now)}
    assert live == model
    apply(reg.expire(now))
    assert {u: b.expires_at for u, b in store.items()} == model
    assert reg.count() == len(model)
    timer = reg.get_timer()
    assert timer == (min(model.values()) if model else None)


def test_refused_request_still_reports_expired_bindings() -> None:
    reg = Registrar()
    reg.handle_register(register("<sip:a@192.0.2.1>", expires=60), AOR, PHONE, T0)
    resp, changes = reg.handle_register(
        register("<sip:b@>;;;", expires=600, cseq=2), AOR, PHONE, T0 + 61
    )
    assert resp.status == 400
    assert kinds(changes) == [("BindingRemoved", "sip:a@192.0.2.1")]
    assert reg.count() == 0 and reg.get_timer() is None


_param_text = st.text(alphabet='0123456789.-+eE abc"<>:', max_size=12)


@given(
    st.one_of(st.none(), _param_text),
    st.one_of(st.none(), _param_text),
    st.one_of(st.none(), _param_text),
    st.one_of(st.none(), _param_text),
)
def test_odd_expires_q_and_reg_id_never_raise(
    header: str | None, expires: str | None, q: str | None, reg_id: str | None
) -> None:
    params = "".join(
        f";{name}={value}"
        for name, value in (("expires", expires), ("q", q), ("reg-id", reg_id))
        if value is not None
    )
    extra = () if header is None else (f"Expires: {header}",)
    try:
        req = register(f"<sip:a@192.0.2.1>{params}", extra=extra)
    except Exception:  # the parser refused the message: nothing reaches the registrar
        return
    reg = Registrar()
    resp, changes = reg.handle_register(req, AOR, PHONE, T0)
    assert resp.status in (200, 400, 423)
    if resp.status == 200:
        assert reg.count() == len(changes) == sum(isinstance(c, BindingAdded) for c in changes)
    else:
        assert changes == [] and reg.count() == 0


def test_contact_text_seen_before_follows_the_same_rules() -> None:
    """Refreshes reuse the decoded Contact text; the rules must not change because of that."""
    reg = Registrar(max_contacts=1)
    text = '<sip:a@192.0.2.1>;q=0.5;+sip.instance="<urn:uuid:1>";reg-id=1'
    first, _ = reg.handle_register(register(text, expires=600), AOR, PHONE, T0)
    assert first.status == 200
    bob = "sip:bob@pbx.example.com"
    resp, changes = reg.handle_register(register(text, expires=600), bob, PHONE, T0)
    assert resp.status == 200 and isinstance(changes[0], BindingAdded)
    assert changes[0].binding.aor == bob and changes[0].binding.q == 0.5
    mixed, none = reg.handle_register(register(text, "*", expires=0, cseq=2), AOR, PHONE, T0)
    assert mixed.status == 400 and none == []
    too_many, none = reg.handle_register(
        register(text, "<sip:b@192.0.2.2>", expires=600, cseq=3), AOR, PHONE, T0
    )
    assert too_many.status == 403 and none == []
    brief, none = reg.handle_register(register(text, expires=10, cseq=4), AOR, PHONE, T0)
    assert brief.status == 423 and none == []
    assert reg.count() == 2


def test_remove_flow_drops_the_bindings_of_one_websocket() -> None:
    from sipcore.registrar import Binding, BindingRemoved, RemovalReason
    from sipcore.transport import Peer

    reg = Registrar()
    now = 1000.0

    def bind(uri: str, conn_id: int | None, transport: str = "ws") -> Binding:
        return Binding(aor="sip:101@example.com", uri=uri, contact=f"<{uri}>", expires_at=now + 300,
                       call_id=f"c-{uri}", cseq=1,
                       received=Peer(transport, "127.0.0.1", 5000 + (conn_id or 0), conn_id))

    reg.restore([bind("sip:101@a.invalid;transport=ws", 7),
                 bind("sip:101@b.invalid;transport=ws", 8),
                 bind("sip:101@192.0.2.1:5060", None, "udp")], now)
    changes = reg.remove_flow("ws", 7)
    assert [(type(c), c.binding.uri, c.reason) for c in changes if isinstance(c, BindingRemoved)] \
        == [(BindingRemoved, "sip:101@a.invalid;transport=ws", RemovalReason.FLOW_CLOSED)]
    assert sorted(b.uri for b in reg.bindings("sip:101@example.com", now)) == [
        "sip:101@192.0.2.1:5060", "sip:101@b.invalid;transport=ws"]
    assert reg.remove_flow("ws", 7) == [] and reg.remove_flow("wss", 8) == []
    # a binding refreshed over another connection is no longer the old flow's
    reg.restore([bind("sip:101@b.invalid;transport=ws", 9)], now)
    assert reg.remove_flow("ws", 8) == []
    assert [c.binding.uri for c in reg.remove_flow("ws", 9)] == ["sip:101@b.invalid;transport=ws"]
    assert reg.count() == 1


# -- SIP Outbound (RFC 5626) and GRUU (RFC 5627), as JsSIP asks for them -----------------------

URN = "urn:uuid:00000000-0000-1000-8000-000A95A0E128"
JSSIP_CONTACT = f'<sip:x7k2@df7jal23ls0d.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance="<{URN}>"'


def test_outbound_registration_gets_require_outbound_and_a_public_gruu() -> None:
    reg = Registrar()
    resp, changes = reg.handle_register(
        register(JSSIP_CONTACT, expires=600, extra=("Supported: path, gruu, outbound",)),
        AOR, PHONE, T0)
    assert resp.status == 200 and kinds(changes) == [
        ("BindingAdded", "sip:x7k2@df7jal23ls0d.invalid;transport=ws")]
    assert resp.headers.get_all("Require") == ["outbound"]
    (params,) = contacts_of(resp).values()
    assert params["pub-gruu"] == f'"{AOR};gr={URN}"'
    assert params["reg-id"] == "1" and params["expires"] == "600"


def test_without_the_option_tags_no_require_and_no_gruu() -> None:
    reg = Registrar()
    resp, _ = reg.handle_register(register(JSSIP_CONTACT, expires=600), AOR, PHONE, T0)
    assert resp.status == 200 and resp.headers.get("Require") is None
    (params,) = contacts_of(resp).values()
    assert "pub-gruu" not in params
    # an instance without reg-id is no Outbound flow: a GRUU, no Require
    plain = f'<sip:bob@192.0.2.11>;+sip.instance="<{URN}>"'
    resp, _ = reg.handle_register(
        register(plain, expires=600, call_id="reg-2", extra=("Supported: gruu, outbound",)),
        "sip:bob@pbx.example.com", PHONE, T0)
    assert resp.headers.get("Require") is None
    (params,) = contacts_of(resp).values()
    assert params["pub-gruu"] == f'"sip:bob@pbx.example.com;gr={URN}"'


def test_outbound_through_a_first_hop_without_ob_is_439() -> None:
    reg = Registrar()
    resp, changes = reg.handle_register(
        register(JSSIP_CONTACT, expires=600, extra=("Supported: path, outbound",
                                                    "Path: <sip:edge.example.com;lr>")),
        AOR, PHONE, T0)
    assert (resp.status, changes) == (439, [])
    resp, changes = reg.handle_register(
        register(JSSIP_CONTACT, expires=600, cseq=2, extra=(
            "Supported: path, outbound", "Path: <sip:edge.example.com;lr;ob>")), AOR, PHONE, T0)
    assert resp.status == 200 and resp.headers.get_all("Require") == ["outbound"]


def test_gruu_helpers() -> None:
    from sipcore.registrar import gruu_instance, public_gruu

    assert public_gruu(AOR, f"<{URN}>") == f"{AOR};gr={URN}"
    assert gruu_instance({"gr": URN}) == f"<{URN}>"
    assert gruu_instance({"gr": None}) is None and gruu_instance({}) is None
