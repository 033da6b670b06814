"""POST /calls/{call}/hold, /resume and /transfer through aiohttp's test client: who may act
on which call (own calls for a user, the tenant's for its admin, 404 for another tenant's),
409 when the call's state does not allow it, bad input as 4xx problem+json with nothing done.
The call control behind it is a recording fake (the interop tests drive the real one)."""

from __future__ import annotations

from typing import Any

import pytest

from pbx.api import LiveCall
from pbx.callcontrol import CallStateError
from tests.pbx.api.conftest import Api

C1, C2, C3 = "c1@192.0.2.1", "c2@192.0.2.9", "c3@192.0.2.1"


class FakeControl:
    """Records what the API asked for; ringing calls refuse (as the real service does)."""

    def __init__(self, ringing: set[str]) -> None:
        self.ringing = ringing
        self.done: list[tuple[Any, ...]] = []

    def _check(self, *call_ids: str) -> None:
        for call_id in call_ids:
            if call_id in self.ringing:
                raise CallStateError("the user has no connected leg in this call")

    def hold(self, call_id: str, user_id: int, held: bool = True) -> None:
        self._check(call_id)
        self.done.append(("hold" if held else "resume", call_id, user_id))

    def transfer(self, call_id: str, user_id: int, target: str) -> str:
        self._check(call_id)
        self.done.append(("transfer", call_id, user_id, target))
        return "moved@pbx"

    def attended(self, call_id: str, user_id: int, other_call_id: str) -> None:
        self._check(call_id, other_call_id)
        self.done.append(("attended", call_id, user_id, other_call_id))


@pytest.fixture
def control(pbx_api: Api) -> FakeControl:
    """Anna → Ben answered (C1), Anna → an outside number answered (C3), an outside caller
    ringing Carl of acme (C2)."""
    anna, ben, carl = (pbx_api.users[k] for k in ("100", "101", "200"))
    default, acme = anna.tenant_id, carl.tenant_id
    live = [LiveCall(C1, default, (anna.id, ben.id), "internal", "100", "101", "answered",
                     1000.0, 1002.0),
            LiveCall(C2, acme, (carl.id,), "inbound", "+4930777", "200", "ringing", 1001.0,
                     None),
            LiveCall(C3, default, (anna.id,), "outbound", "100", "+4930888", "answered",
                     1003.0, 1004.0)]
    fake = FakeControl({C2})
    pbx_api.ctx.live_calls = lambda: list(live)
    pbx_api.ctx.call_control = fake
    return fake


async def test_a_user_holds_resumes_and_transfers_their_own_call(
        pbx_api: Api, control: FakeControl) -> None:
    anna = pbx_api.users["100"].id
    for verb in ("hold", "resume"):
        status, body, _ = await pbx_api.call("POST", f"/api/v1/calls/{C1}/{verb}", who="anna",
                                             json={})
        assert status == 204, body
    status, out, _ = await pbx_api.call("POST", f"/api/v1/calls/{C1}/transfer", who="anna",
                                        json={"target": "102"})
    assert status == 200 and out == {"kind": "blind", "call_id": "moved@pbx",
                                     "user_id": anna}, out
    status, out, _ = await pbx_api.call("POST", f"/api/v1/calls/{C3}/transfer", who="anna",
                                        json={"call_id": C1})
    assert status == 200 and out == {"kind": "attended", "call_id": C1, "user_id": anna}, out
    assert control.done == [("hold", C1, anna), ("resume", C1, anna),
                            ("transfer", C1, anna, "102"), ("attended", C3, anna, C1)]


async def test_an_admin_names_the_user_when_the_call_has_two(
        pbx_api: Api, control: FakeControl) -> None:
    anna, ben = pbx_api.users["100"].id, pbx_api.users["101"].id
    status, problem, _ = await pbx_api.call("POST", f"/api/v1/calls/{C1}/hold", json={})
    assert status == 409 and problem["field"] == "/user_id", problem
    status, _, _ = await pbx_api.call("POST", f"/api/v1/calls/{C1}/hold", json={"user_id": ben})
    assert status == 204
    status, _, _ = await pbx_api.call("POST", f"/api/v1/calls/{C3}/hold", json={})
    assert status == 204  # one user in the call: that one
    status, problem, _ = await pbx_api.call("POST", f"/api/v1/calls/{C3}/hold",
                                            json={"user_id": ben})
    assert status == 409 and problem["field"] == "/user_id", problem
    assert control.done == [("hold", C1, ben), ("hold", C3, anna)]


async def test_foreign_calls_do_not_exist_and_plain_users_act_for_themselves_only(
        pbx_api: Api, control: FakeControl) -> None:
    anna = pbx_api.users["100"].id
    for who in ("acme", "carl"):  # another tenant's call: 404 whatever the body
        for verb, body in (("hold", {}), ("resume", {}), ("transfer", {"target": "200"}),
                           ("transfer", {"nonsense": 1})):
            status, problem, _ = await pbx_api.call("POST", f"/api/v1/calls/{C1}/{verb}",
                                                    who=who, json=body)
            assert status in (404, 422) and problem["status"] == status, (who, verb, problem)
            if verb != "transfer" or "target" in body:
                assert status == 404 and problem["code"] == "not_found", (who, verb, problem)
    # Ben is in C1, not in C3: C3 is not his
    status, _, _ = await pbx_api.call("POST", f"/api/v1/calls/{C3}/hold", who="ben", json={})
    assert status == 404
    # a plain user cannot act for another user of the call
    status, problem, _ = await pbx_api.call("POST", f"/api/v1/calls/{C1}/hold", who="ben",
                                            json={"user_id": anna})
    assert status == 403 and problem["field"] == "/user_id", problem
    # nor transfer into a call they do not see
    status, problem, _ = await pbx_api.call("POST", f"/api/v1/calls/{C1}/transfer", who="ben",
                                            json={"call_id": C3})
    assert status == 409 and problem["field"] == "/call_id", problem
    status, _, _ = await pbx_api.call("POST", "/api/v1/calls/nope@x/hold", who="anna", json={})
    assert status == 404
    assert control.done == []


async def test_a_ringing_call_cannot_be_held_or_transferred(
        pbx_api: Api, control: FakeControl) -> None:
    for verb, body in (("hold", {}), ("resume", {}), ("transfer", {"target": "101"})):
        status, problem, _ = await pbx_api.call("POST", f"/api/v1/calls/{C2}/{verb}",
                                                who="carl", json=body)
        assert status == 409 and problem["code"] == "call_state", (verb, problem)
        assert problem["type"] and problem["title"], problem
    assert control.done == []


@pytest.mark.parametrize("body", [
    {}, {"target": "102", "call_id": C3}, {"target": "12a"}, {"target": ""},
    {"target": 102}, {"target": "1" * 33}, {"target": "102", "extra": True},
    {"call_id": ""}, {"target": "102", "user_id": "1"}, {"target": "102", "user_id": 0},
])
async def test_bad_transfer_bodies_are_refused_and_nothing_happens(
        pbx_api: Api, control: FakeControl, body: dict[str, Any]) -> None:
    status, problem, headers = await pbx_api.call("POST", f"/api/v1/calls/{C1}/transfer",
                                                  who="anna", json=body)
    assert status == 422, (body, problem)
    assert headers["Content-Type"].startswith("application/problem+json")
    assert control.done == []


async def test_malformed_and_missing_bodies(pbx_api: Api, control: FakeControl) -> None:
    status, problem, _ = await pbx_api.call(
        "POST", f"/api/v1/calls/{C1}/hold", who="anna", data=b"{nope",
        headers={"Content-Type": "application/json"})
    assert status == 400 and problem["code"] == "malformed_json", problem
    status, problem, _ = await pbx_api.call("POST", f"/api/v1/calls/{C1}/hold", who="anna")
    assert status == 400, problem
    assert control.done == []


async def test_without_calls_running_the_operations_are_unavailable(pbx_api: Api) -> None:
    anna = pbx_api.users["100"]
    pbx_api.ctx.live_calls = lambda: [LiveCall(C1, anna.tenant_id, (anna.id,), "internal",
                                               "100", "101", "answered", 1.0, 2.0)]
    status, problem, _ = await pbx_api.call("POST", f"/api/v1/calls/{C1}/hold", who="anna",
                                            json={})
    assert status == 503 and problem["code"] == "unavailable", problem


async def test_the_operations_are_in_the_openapi_document(pbx_api: Api) -> None:
    status, doc, _ = await pbx_api.call("GET", "/api/v1/openapi.json", who=None)
    assert status == 200
    paths = doc["paths"]
    for verb in ("hold", "resume", "transfer"):
        op = paths["/api/v1/calls/{call}/" + verb]["post"]
        assert {"404", "409"} <= set(op["responses"]), op["responses"]
    schema = paths["/api/v1/calls/{call}/transfer"]["post"]["requestBody"]["content"]
    assert "application/json" in schema
