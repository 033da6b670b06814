"""TaskScope: the :class:`asyncio.TaskGroup` of a service with a start/close life cycle.

DESIGN.md principle 8: every task belongs to a TaskGroup owned by a call, transport or service
— no fire-and-forget tasks, no ``create_task`` into a set. A service such as the transport
layer or the trunk manager is started and closed by calls from its owner rather than living
inside one ``async with`` block, so its group runs in :meth:`TaskScope.run`: either inside the
owner's own TaskGroup (``tg.create_task(scope.run())``, the structured way) or, for an owner
with a plain ``start()``/``close()``, in the one task :meth:`TaskScope.start` makes and
:meth:`TaskScope.close` awaits.

Theory of operation: :meth:`spawn` puts a coroutine into the group (or, before the group is
open, holds it until :meth:`run` opens it) and returns a :class:`Child` handle that can cancel
it either way. Each child runs under a guard: a child that raises is logged with its name and
ends alone — it never cancels its siblings or the owner (a bad packet must not take down a
transport). :meth:`close` cancels every child and waits for them (bounded by a timeout: a child
that swallows its cancellation is logged, not waited for forever).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from sipcore.aio.log import get_logger

__all__ = ["Child", "TaskScope"]

#: Logs a child that failed (lazy: follows the configuration made at start-up).
_log = get_logger("sipcore.aio.tasks")


class _Closing(Exception):
    """Raised inside the group by :meth:`TaskScope.run` to cancel every child and leave it."""


class Child:
    """A task of a :class:`TaskScope` (or one waiting for the scope's group to open)."""

    __slots__ = ("_coro", "cancelled", "name", "task")

    def __init__(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._coro: Coroutine[Any, Any, None] | None = coro
        self.name = name
        #: The running task (None until the group is open).
        self.task: asyncio.Task[None] | None = None
        self.cancelled = False

    def cancel(self) -> None:
        """Cancel the child; one that has not started never will."""
        self.cancelled = True
        if self.task is not None:
            self.task.cancel()
        elif self._coro is not None:
            self._coro.close()  # never awaited: close it so Python does not warn
            self._coro = None

    def done(self) -> bool:
        """True once the child has ended (or was cancelled before it started)."""
        return self.task.done() if self.task is not None else self._coro is None


class TaskScope:
    """A TaskGroup that a service owns from :meth:`start` (or :meth:`run`) to :meth:`close`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._group: asyncio.TaskGroup | None = None
        self._waiting: list[Child] = []
        self._closing: asyncio.Event | None = None
        self._closed = False
        self._runner: asyncio.Task[None] | None = None
        self._ended: asyncio.Event | None = None
        #: Children running now (for statistics).
        self.active = 0
        #: Children that ended with an exception (logged, counted).
        self.failures = 0

    # -- life cycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Run the group in a task of the scope's own (for an owner without a TaskGroup); the
        task is awaited by :meth:`close`. Idempotent."""
        if self._runner is None and self._ended is None and not self._closed:
            self._runner = asyncio.get_running_loop().create_task(self.run(),
                                                                  name=f"{self.name} scope")

    async def run(self) -> None:
        """Open the group, start the children spawned so far, and keep it open until
        :meth:`close`; then cancel every child and return once all have ended."""
        if self._ended is not None:
            if self._runner is None:
                raise RuntimeError(f"task scope {self.name} runs already (or ran)")
            # start() and run() were both called before either ran (a child was spawned before
            # the owner's task took its first step): the first to run owns the group, the other
            # waits until it has ended.
            await self._ended.wait()
            return
        self._ended = asyncio.Event()
        self._closing = asyncio.Event()
        if self._closed:
            self._closing.set()
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                waiting, self._waiting = self._waiting, []
                for child in waiting:
                    if not child.cancelled:
                        self._start(child)
                await self._closing.wait()
                self._group = None
                raise _Closing  # cancels every child; the group waits for them
        except* _Closing:
            pass
        finally:
            self._group = None
            for child in self._waiting:  # spawned while the group was closing
                child.cancel()
            self._waiting.clear()
            self._ended.set()

    async def close(self, timeout: float = 5.0) -> None:
        """Cancel every child and wait (at most ``timeout`` seconds) until they have ended."""
        self._closed = True
        if self._closing is not None:
            self._closing.set()
        for child in self._waiting:
            child.cancel()
        self._waiting.clear()
        if self._ended is None:
            return  # never ran
        try:
            async with asyncio.timeout(timeout):
                await self._ended.wait()
        except TimeoutError:
            _log.warning("task_scope.close_timeout", scope=self.name, active=self.active)
            if self._runner is not None:
                self._runner.cancel()
            return
        runner = self._runner
        if runner is not None:
            await asyncio.wait([runner])
            if not runner.cancelled():
                runner.result()  # re-raise what the group could not contain (BaseException)

    @property
    def started(self) -> bool:
        """True once the group runs (or ran): :meth:`run` or :meth:`start` was called."""
        return self._ended is not None or self._runner is not None

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    # -- children -------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> Child:
        """Run ``coro`` as a child of the group (held until the group opens). After
        :meth:`close` the coroutine is closed, not run."""
        child = Child(coro, name)
        if self._closed:
            child.cancel()
        elif self._group is not None:
            self._start(child)
        else:
            self._waiting.append(child)
        return child

    def _start(self, child: Child) -> None:
        assert self._group is not None and child._coro is not None
        coro, child._coro = child._coro, None
        guarded = self._guard(coro, child.name)
        try:
            child.task = self._group.create_task(guarded, name=child.name)
        except RuntimeError:  # the group is shutting down (its owner was cancelled)
            guarded.close()
            coro.close()
            child.cancelled = True

    async def _guard(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self.active += 1
        try:
            await coro
        except Exception:  # the child's own bug: log it, keep the siblings and the owner
            self.failures += 1
            _log.exception("task_scope.child_failed", scope=self.name, task=name)
        finally:
            self.active -= 1
