"""``/calls/{call}/conference``: who may see and change a call's conference (404 for another
tenant's call or a call the user is not in), problem+json for bad input, and that the API
only translates to the call-control layer's :class:`pbx.callcontrol.ConferenceOperations`."""

from __future__ import annotations

from pbx.api import LiveCall
from pbx.callcontrol import Call, ConferenceError, ConferenceView, ParticipantView
from tests.pbx.api.conftest import Api

CALL = "c1@192.0.2.1"
BASE = f"/api/v1/calls/{CALL}/conference"


class _Control:
    """The service's operations, recorded (the call control behind them has its own tests:
    tests/features/test_conference_control.py)."""

    def __init__(self) -> None:
        self.done: list[tuple[str, ...]] = []
        self.muted: set[str] = set()
        self.conference = False

    def is_conference(self, call: Call) -> bool:
        return self.conference

    def view(self, call_id: str) -> ConferenceView:
        if call_id != CALL:
            raise ConferenceError("no_call", "no call")
        if not self.conference:
            raise ConferenceError("no_conference", "no conference")
        legs = ("L1", "L2", "L3")
        return ConferenceView(call_id, 8000, tuple(
            ParticipantView(leg, f"10{n}", "joined", leg in self.muted)
            for n, leg in enumerate(legs)))

    def add(self, call_id: str, number: str) -> list[str]:
        if number == "999":
            raise ConferenceError("no_route", "999 reaches nobody")
        self.conference = True
        self.done.append(("add", call_id, number))
        return ["L3"]

    def merge(self, call_id: str, other_call_id: str, user_id: int) -> list[str]:
        self.conference = True
        self.done.append(("merge", call_id, other_call_id, str(user_id)))
        return ["L9"]

    def drop(self, call_id: str, leg_id: str) -> None:
        self.view(call_id)
        if leg_id not in ("L1", "L2", "L3"):
            raise ConferenceError("no_participant", "no participant")
        self.done.append(("drop", call_id, leg_id))

    def mute(self, call_id: str, leg_id: str, muted: bool) -> None:
        self.view(call_id)
        self.done.append(("mute", leg_id, str(muted)))
        (self.muted.add if muted else self.muted.discard)(leg_id)


def _setup(api: Api) -> _Control:
    anna, ben, carl = api.users["100"], api.users["101"], api.users["200"]
    live = [LiveCall(CALL, anna.tenant_id, (anna.id, ben.id), "internal", "100", "101",
                     "answered", 1000.0, 1002.0, conference=True),
            LiveCall("c2@192.0.2.9", carl.tenant_id, (carl.id,), "inbound", "+4930777",
                     "200", "answered", 1001.0, 1003.0),
            LiveCall("c3@192.0.2.1", anna.tenant_id, (anna.id,), "outbound", "100",
                     "+4930888", "answered", 1004.0, 1005.0)]
    api.ctx.live_calls = lambda: list(live)
    control = _Control()
    api.ctx.conferences = control
    return control


async def test_add_mute_drop_as_the_user_in_the_call(pbx_api: Api) -> None:
    control = _setup(pbx_api)
    status, problem, headers = await pbx_api.call("GET", BASE, who="anna")
    assert status == 404 and problem["code"] == "not_found"
    assert headers["Content-Type"].startswith("application/problem+json")
    status, added, _ = await pbx_api.call("POST", BASE + "/participants", who="anna",
                                          json={"number": "102"})
    assert status == 202 and added == {"call_id": CALL, "legs": ["L3"]}
    status, conf, _ = await pbx_api.call("GET", BASE, who="ben")
    assert status == 200 and [p["id"] for p in conf["participants"]] == ["L1", "L2", "L3"]
    status, one, _ = await pbx_api.call("PATCH", BASE + "/participants/L2", who="anna",
                                        json={"muted": True})
    assert status == 200 and one == {"id": "L2", "party": "101", "state": "joined",
                                     "muted": True}
    status, _, _ = await pbx_api.call("PATCH", BASE + "/participants/L2", who="admin",
                                      json={"muted": False})
    assert status == 200 and not control.muted
    status, _, _ = await pbx_api.call("DELETE", BASE + "/participants/L3", who="anna")
    assert status == 204
    status, problem, _ = await pbx_api.call("DELETE", BASE + "/participants/L9", who="anna")
    assert status == 404 and problem["code"] == "not_found"
    assert control.done == [("add", CALL, "102"), ("mute", "L2", "True"),
                            ("mute", "L2", "False"), ("drop", CALL, "L3")]
    status, page, _ = await pbx_api.call("GET", "/api/v1/calls", who="anna")
    assert status == 200 and page["items"][0]["conference"] is True


async def test_another_tenants_call_is_not_found_and_bad_input_is_a_problem(
        pbx_api: Api) -> None:
    control = _setup(pbx_api)
    control.conference = True
    for who in ("acme", "carl"):  # another tenant's admin and user: no such call
        calls: list[tuple[str, str, dict[str, object] | None]] = [
            ("GET", BASE, None),
            ("POST", BASE + "/participants", {"number": "102"}),
            ("PATCH", BASE + "/participants/L1", {"muted": True}),
            ("DELETE", BASE + "/participants/L1", None)]
        for method, path, body in calls:
            status, problem, _ = await pbx_api.call(method, path, who=who, json=body)
            assert status == 404 and problem["code"] == "not_found", (who, method, path)
    assert control.done == []
    bodies: list[dict[str, object]] = [{"number": ""}, {"number": "1; DROP"}, {"number": 102},
                                       {"nr": "102"}, {}]
    for bad in bodies:
        status, problem, headers = await pbx_api.call("POST", BASE + "/participants",
                                                      who="anna", json=bad)
        assert status == 422, bad
        assert headers["Content-Type"].startswith("application/problem+json")
    status, problem, _ = await pbx_api.call("POST", BASE + "/participants", who="anna",
                                            json={"number": "999"})
    assert status == 422 and problem["code"] == "no_route"
    status, problem, _ = await pbx_api.call("PATCH", BASE + "/participants/L1", who="anna",
                                            json={"muted": "yes"})
    assert status == 422
    status, problem, _ = await pbx_api.call("POST", BASE + "/participants", who="anna",
                                            data=b"{", headers={"Content-Type":
                                                                "application/json"})
    assert status == 400 and problem["code"] == "malformed_json"
    assert control.done == []


async def test_a_second_call_of_the_user_is_added_by_its_call_id(pbx_api: Api) -> None:
    control = _setup(pbx_api)
    anna = pbx_api.users["100"]
    status, added, _ = await pbx_api.call("POST", BASE + "/participants", who="anna",
                                          json={"call_id": "c3@192.0.2.1"})
    assert status == 202 and added == {"call_id": CALL, "legs": ["L9"]}
    assert control.done == [("merge", CALL, "c3@192.0.2.1", str(anna.id))]
    # an administrator's token: the one user both calls have in common
    status, _, _ = await pbx_api.call("POST", BASE + "/participants", who="admin",
                                      json={"call_id": "c3@192.0.2.1"})
    assert status == 202 and control.done[-1][3] == str(anna.id)
    for body, code in (({"call_id": "c2@192.0.2.9"}, 404),  # another tenant's call
                       ({"call_id": "nope"}, 404),
                       ({"call_id": "c3@192.0.2.1", "number": "102"}, 422),
                       ({}, 422), ({"call_id": ""}, 422), ({"call_id": 7}, 422)):
        status, problem, _ = await pbx_api.call("POST", BASE + "/participants", who="anna",
                                                json=body)
        assert status == code, (body, problem)
    assert len(control.done) == 2  # nothing else reached the call control
