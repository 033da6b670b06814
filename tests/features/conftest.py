"""A PBX without SIP for feature tests: the real store, directory, router, settings service,
feature registry and call script; fake legs and a fake media graph (tests/conftest.py).

Features are switched the way a user does it — by dialling their codes into :meth:`Pbx.dial`
— and then exercised by calls through the same script the B2BUA runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import structlog

from features import default_features
from media.port import MediaPort
from media.tones import ToneName
from pbx.callcontrol import (
    ActiveCalls,
    Call,
    CallScript,
    FeatureRegistry,
    Leg,
    Presentation,
    Prompt,
    Reject,
    Ring,
    Routed,
    Target,
    UserView,
    supervise,
)
from pbx.directory import Directory
from pbx.origin import CallOrigin
from pbx.routing.calls import CallRouter
from pbx.routing.router import Router
from pbx.services import EventBus, SettingsService
from pbx.services.calls import CallServices
from pbx.store import Store
from tests.conftest import FakeGraph, FakeLeg, Port, new_fake_call


@dataclass
class Tone(Port):
    """A tone port that remembers which tone it is."""

    name: ToneName = ToneName.BEEP


@dataclass
class Announcement(Port):
    """A prompt port that remembers what it announces (and in which language); it plays
    ``frames`` frames of silence, then runs dry like a real prompt."""

    prompt: Prompt = field(default_factory=lambda: Prompt(""))
    language: str = ""
    tenant_id: int | None = None
    frames: int = 3

    def get_frame(self) -> Any:
        if self.frames <= 0:
            return None
        self.frames -= 1
        return np.zeros(160, np.int16)


@dataclass
class Placed:
    """A call placed through :meth:`Pbx.dial`: the call, its graph and the legs it created."""

    call: Call
    graph: RecordingGraph
    legs: list[FakeLeg]
    task: asyncio.Task[None]
    script: CallScript

    @property
    def caller(self) -> FakeLeg:
        assert isinstance(self.call.caller, FakeLeg)
        return self.call.caller

    def prompts(self) -> list[tuple[Prompt, str]]:
        """The announcements played to the caller so far (prompt, language), in order."""
        return [(link.a.port.prompt, link.a.port.language) for link in self.graph.history
                if link.kind == "link"
                and isinstance(getattr(link.a, "port", None), Announcement)]

    def heard(self) -> list[str]:
        """Everything played to the caller so far, in order: prompt names and tone names."""
        out: list[str] = []
        for link in self.graph.history:
            port = getattr(link.a, "port", None) if link.kind == "link" else None
            if isinstance(port, Announcement):
                out.append(port.prompt.name)
            elif isinstance(port, Tone):
                out.append(port.name.value)
        return out

    def tones(self) -> list[ToneName]:
        """The tones played to the caller so far (in order)."""
        return [link.a.port.name for link in self.graph.history
                if link.kind == "link" and isinstance(getattr(link.a, "port", None), Tone)]

    async def done(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self.task, timeout)

    async def until(self, predicate: Any, timeout: float = 5.0) -> None:
        async def wait() -> None:
            while not predicate():
                await asyncio.sleep(0.005)
        await asyncio.wait_for(wait(), timeout)


class RecordingGraph(FakeGraph):
    """A fake graph that also keeps every link it ever made."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[Any] = []

    def link(self, source: Any, sink: Any, *, fill_silence: bool = False) -> Any:
        made = super().link(source, sink, fill_silence=fill_silence)
        self.history.append(made)
        if isinstance(getattr(source, "port", None), Announcement):
            # the media clock of the fake: an announcement is pulled until it runs dry
            def pull() -> None:
                if source.get_frame() is not None:
                    asyncio.get_running_loop().call_later(0.005, pull)
            asyncio.get_running_loop().call_soon(pull)
        return made


@dataclass
class Pbx:
    """Tenant "acme" (area 30, a trunk), users 100/101/102 with DIDs; ``registered`` says which
    user has which registered devices (a test changes it)."""

    store: Store
    directory: Directory
    registry: FeatureRegistry
    bus: EventBus
    routing: CallRouter
    services: CallServices
    host_ns: SimpleNamespace
    registered: dict[str, list[Target]] = field(default_factory=dict)
    #: the calls each user is in, shared by every call placed here (as the B2BUA's script has)
    active: ActiveCalls = field(default_factory=ActiveCalls)
    events: list[Any] = field(default_factory=list)
    routed: list[tuple[str, str | None]] = field(default_factory=list)
    #: prompt names the fake prompt set lacks (host.prompt raises LookupError for them)
    missing_prompts: set[str] = field(default_factory=set)
    #: how many frames each fake announcement plays (the fake clock pulls one per 5 ms)
    prompt_frames: int = 3
    #: every announcement port handed out
    announcements: list[Announcement] = field(default_factory=list)
    #: what fail() was asked to announce: (status, prompt, language of the user) per call
    failures: list[tuple[int, Prompt | None, str | None]] = field(default_factory=list)

    def user(self, ext: str) -> UserView:
        found = self.directory.user_in_tenant(self.tenant_id, ext)
        assert found is not None
        return self.routing.view(found)

    @property
    def tenant_id(self) -> int:
        tenant = self.directory.tenant_for_domain("acme.example.com")
        assert tenant is not None
        return tenant.id

    def settings(self, ext: str, feature: str) -> dict[str, Any]:
        return self.directory.settings(self.user(ext).id or 0, feature)

    # -- ScriptHost ------------------------------------------------------------------------------

    def originator(self, call: Call) -> UserView | None:
        return self.routing.originator(call)

    def digits_only(self, call: Call) -> UserView | None:
        return self.routing.digits_only(call)

    def route(self, call: Call, dialled: str, on_behalf_of: UserView | None) -> (
            Routed | Ring | Reject):
        self.routed.append((dialled, on_behalf_of.extension if on_behalf_of is not None else None))
        return self.routing.route(call, dialled, on_behalf_of)

    def devices(self, user: UserView) -> list[Target]:
        return list(self.registered.get(user.extension, []))

    def tone(self, name: ToneName, rate: int) -> MediaPort:
        return Tone(name=name)

    def prompt(self, prompt: Prompt, language: str, rate: int,
               tenant_id: int | None = None) -> MediaPort:
        if prompt.name in self.missing_prompts:
            raise LookupError(f"no prompt {prompt.name!r}")
        port = Announcement(prompt=prompt, language=language, tenant_id=tenant_id,
                            frames=self.prompt_frames)
        self.announcements.append(port)
        return port

    async def connect(self, call: Call, callee: Leg) -> Leg | None:
        assert call.caller is not None
        bridge = call.bridge(call.caller, callee)
        if not await call.answer():
            return None
        return await call.wait_hangup(bridge)

    async def fail(self, call: Call, status: int, reason: str | None = None, *,
                   retry_after: int | None = None, prompt: Prompt | None = None,
                   user: UserView | None = None) -> None:
        self.failures.append((status, prompt, user.language if user is not None else None))
        call.reject(status, reason)

    # -- placing calls ---------------------------------------------------------------------------

    def dial(self, caller: str, dialled: str, *, from_trunk: bool = False,
             mobile: bool = False, code_user: str | None = None,
             withheld: bool = False) -> Placed:
        """Start a call from user ``caller`` (``mobile``: from a device flagged mobile) or,
        ``from_trunk``, from the number ``caller`` through the trunk ('' for none;
        ``code_user``: the user whose mobile number it is, as find_origin tells for a
        digits-only code) to ``dialled``; the script runs as the B2BUA runs it. ``withheld``:
        the INVITE withheld the caller's identity (anonymous From, Privacy: id)."""
        call, _, legs = new_fake_call(caller=caller or "anonymous", callee=dialled)
        graph = RecordingGraph()
        call.graph = graph
        call.presentation = Presentation(private=True if withheld or not caller else None)
        if from_trunk:
            trunk = SimpleNamespace(tenant_id=self.tenant_id, key="acme/carrier")
            owner = (self.directory.user_in_tenant(self.tenant_id, code_user)
                     if code_user is not None else None)
            self.host_ns.origins[call.id] = CallOrigin(
                caller=caller, direction="inbound", trunk=trunk,  # type: ignore[arg-type]
                code_user=owner)
        else:
            user = self.directory.user_in_tenant(self.tenant_id, caller)
            self.host_ns.origins[call.id] = CallOrigin(caller=caller, user=user, mobile=mobile)
        script = CallScript(self, self.registry, confirm_seconds=0.05,  # type: ignore[arg-type]
                            active=self.active)
        task = asyncio.get_running_loop().create_task(supervise(call, script.run))
        return Placed(call, graph, legs, task, script)


    def call_back(self, user: str, dialled: str) -> Placed:
        """A call-back for ``user`` to ``dialled`` (no inbound leg)."""
        template, _, legs = new_fake_call(caller=user, callee=dialled)
        graph = RecordingGraph()
        call = Call(None, graph=graph, leg_factory=template.leg_factory, record=template.record,
                    ringback_source=lambda rate: Tone(name=ToneName.RINGBACK))
        record = self.directory.user_in_tenant(self.tenant_id, user)
        self.host_ns.origins[call.id] = CallOrigin(caller=user, user=record)
        script = CallScript(self, self.registry, confirm_seconds=0.05,  # type: ignore[arg-type]
                            active=self.active)
        task = asyncio.get_running_loop().create_task(
            supervise(call, lambda c: script.call_back(c, self.user(user), dialled, 2.0)))
        return Placed(call, graph, legs, task, script)


class _Host(SimpleNamespace):
    """The B2BUA attributes CallRouter reads."""


class FakeTrunks:
    """The trunk "carrier" of tenant ``tenant_id``, always resolved."""

    def __init__(self, tenant_id: int) -> None:
        self.trunks = {f"{tenant_id}/carrier": SimpleNamespace(
            named=False, addresses=["127.0.0.3"], host="127.0.0.3")}
        self.resolve_retry = 30.0


@pytest.fixture
def pbx(tmp_path: Path) -> Iterator[Pbx]:
    store = Store(tmp_path, domain="127.0.0.1")
    store.ensure_default_tenant("127.0.0.1", "asyncpbx")
    store.add_tenant("acme", "acme.example.com", area_code="30")
    for ext, did in (("100", "+4930555100"), ("101", "+4930555101"), ("102", "+4930555102")):
        store.add_user(ext, f"pw{ext}", tenant="acme", name=f"User {ext}")
        store.add_number(did, tenant="acme", user=ext)
    store.add_trunk("carrier", tenant="acme", kind="ip", host="127.0.0.3")
    directory = Directory(store)
    registry = FeatureRegistry(default_features(ring_timeout=2.0))
    bus = EventBus()
    acme = directory.tenant_for_domain("acme.example.com")
    assert acme is not None
    host = _Host(router=Router(directory), trunks=FakeTrunks(acme.id), origins={},
                 user_exists=lambda ext: False, log=structlog.get_logger("test"))
    routing = CallRouter(host)  # type: ignore[arg-type]
    services = CallServices(registry, routing)
    services.directory = directory
    services.settings_service = SettingsService(store, directory, bus, registry.schema,
                                                check=services.check_settings)
    pbx = Pbx(store, directory, registry, bus, routing, services, host)
    bus.subscribe(pbx.events.append)
    pbx.registered = {ext: [Target("device", ext, f"sip:{ext}@phone", f"{ext}:phone")]
                   for ext in ("100", "101", "102")}
    yield pbx
    store.close()
