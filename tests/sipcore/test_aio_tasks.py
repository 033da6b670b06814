"""sipcore.aio.tasks.TaskScope: a service's TaskGroup with a start/close life cycle."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from sipcore.aio.tasks import TaskScope


async def _forever(started: list[str], name: str, ended: list[str]) -> None:
    started.append(name)
    try:
        await asyncio.sleep(3600)
    finally:
        ended.append(name)


async def test_children_spawned_before_start_run_once_it_opens_and_close_ends_them() -> None:
    scope = TaskScope("test")
    started: list[str] = []
    ended: list[str] = []
    a = scope.spawn(_forever(started, "a", ended), "a")
    assert a.task is None and not a.done()  # held: the group is not open yet
    scope.start()
    await asyncio.sleep(0.01)
    scope.spawn(_forever(started, "b", ended), "b")
    await asyncio.sleep(0.01)
    assert started == ["a", "b"] and scope.active == 2
    await scope.close()
    assert sorted(ended) == ["a", "b"] and scope.active == 0 and a.done()


async def test_a_failing_child_is_logged_and_leaves_its_siblings_running() -> None:
    scope = TaskScope("test")
    scope.start()
    started: list[str] = []
    ended: list[str] = []
    scope.spawn(_forever(started, "sibling", ended), "sibling")

    async def broken() -> None:
        raise RuntimeError("bug")

    with structlog.testing.capture_logs() as logs:
        scope.spawn(broken(), "broken")
        await asyncio.sleep(0.01)
    assert scope.failures == 1 and scope.active == 1 and ended == []
    failed = [e for e in logs if e["event"] == "task_scope.child_failed"]
    assert failed and failed[0]["task"] == "broken" and failed[0]["scope"] == "test"
    await scope.close()
    assert ended == ["sibling"]


async def test_cancelled_before_it_started_it_never_runs() -> None:
    scope = TaskScope("test")
    ran: list[str] = []

    async def child() -> None:
        ran.append("x")

    handle = scope.spawn(child(), "x")
    handle.cancel()
    assert handle.done()
    scope.start()
    await asyncio.sleep(0.01)
    await scope.close()
    assert ran == []


async def test_spawn_after_close_does_not_run_the_coroutine() -> None:
    scope = TaskScope("test")
    scope.start()
    await asyncio.sleep(0)
    await scope.close()
    ran: list[str] = []

    async def child() -> None:
        ran.append("late")

    handle = scope.spawn(child(), "late")
    await asyncio.sleep(0.01)
    assert ran == [] and handle.cancelled and handle.done()


async def test_run_inside_the_owners_task_group() -> None:
    """The structured way: the owner runs the scope in its own TaskGroup."""
    scope = TaskScope("test")
    started: list[str] = []
    ended: list[str] = []
    async with asyncio.TaskGroup() as tg:
        tg.create_task(scope.run())
        scope.spawn(_forever(started, "c", ended), "c")
        await asyncio.sleep(0.01)
        assert started == ["c"]
        await scope.close()
    assert ended == ["c"]


async def test_start_before_the_owners_run_took_its_first_step() -> None:
    """The B2BUA's race: the server created the task that runs the scope, and a call started
    (start(), spawn) before that task ran. Whichever runs first owns the group, the other
    waits; close() ends both without an error."""
    for owner_first in (True, False):
        scope = TaskScope("test")
        started: list[str] = []
        ended: list[str] = []
        async with asyncio.TaskGroup() as tg:
            if owner_first:
                owner = tg.create_task(scope.run())
                scope.start()
            else:
                scope.start()
                owner = tg.create_task(scope.run())
            scope.spawn(_forever(started, "d", ended), "d")
            await asyncio.sleep(0.01)
            assert started == ["d"] and not owner.done()
            await scope.close()
            await asyncio.sleep(0)
            assert owner.done() and owner.exception() is None
        assert ended == ["d"]


async def test_run_twice_without_start_is_an_error() -> None:
    scope = TaskScope("test")
    async with asyncio.TaskGroup() as tg:
        tg.create_task(scope.run())
        await asyncio.sleep(0)
        try:
            await scope.run()
        except RuntimeError as exc:
            assert "runs already" in str(exc)
        else:
            raise AssertionError("a second run() must fail")
        await scope.close()


async def test_close_is_bounded_when_a_child_swallows_its_cancellation() -> None:
    scope = TaskScope("test")
    scope.start()
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    scope.spawn(stubborn(), "stubborn")
    await asyncio.sleep(0.01)
    with structlog.testing.capture_logs() as logs:
        await scope.close(timeout=0.05)
    assert any(e["event"] == "task_scope.close_timeout" for e in logs)
    release.set()
    await asyncio.sleep(0.01)
    assert scope.active == 0


async def test_close_without_start_closes_the_held_coroutines() -> None:
    scope = TaskScope("test")
    ran: list[str] = []

    async def child() -> None:
        ran.append("x")

    handle = scope.spawn(child(), "x")
    await scope.close()
    assert handle.done() and ran == []
