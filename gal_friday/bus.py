"""In-process asyncio event bus: publish/subscribe by event type.

Every subscriber gets its own bounded queue and worker task, and declares what happens when it
falls behind:

* ``Policy.BLOCK`` (trading path): nothing is ever dropped; when the queue is full the
  publisher waits, which is back-pressure rather than loss.
* ``Policy.CONFLATE`` (display): only the newest event per (type, pair) is kept, so a slow
  screen sees the latest state instead of a backlog.

A handler that raises is logged and counted; its worker keeps going and no other subscriber
notices. Queue depth, high-water mark, deliveries, conflations and errors are exposed per
subscriber through ``stats()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from gal_friday.events import Event

log = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[None] | None]


class Policy(enum.Enum):
    BLOCK = "block"
    CONFLATE = "conflate"


@dataclass(frozen=True, slots=True)
class SubscriberStats:
    name: str
    policy: Policy
    capacity: int
    depth: int
    max_depth: int
    delivered: int
    conflated: int
    errors: int


class Subscription:
    """One subscriber: its queue, its worker and its counters."""

    def __init__(
        self,
        name: str,
        types: tuple[type[Event], ...],
        handler: Handler,
        policy: Policy,
        maxsize: int,
    ) -> None:
        if maxsize < 1:
            raise ValueError("a subscriber queue needs room for at least one event")
        self.name = name
        self.types = types
        self.policy = policy
        self.maxsize = maxsize
        self._handler = handler
        self._is_async = inspect.iscoroutinefunction(handler)
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self._latest: dict[tuple[type[Event], object], Event] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.max_depth = 0
        self.delivered = 0
        self.conflated = 0
        self.errors = 0

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self.policy is Policy.BLOCK else len(self._latest)

    async def offer(self, event: Event) -> None:
        if self.policy is Policy.BLOCK:
            queue = self._queue
            if queue.full():
                await queue.put(event)
            else:
                queue.put_nowait(event)
        else:
            key = (type(event), getattr(event, "pair", None))
            if key in self._latest:
                self.conflated += 1
                del self._latest[key]  # re-insert at the end: newest keys drain last
            self._latest[key] = event
            self._wake.set()
        self._idle.clear()
        depth = self.depth
        if depth > self.max_depth:
            self.max_depth = depth

    def start(self) -> None:
        if self._task is None:
            run = self._run_block if self.policy is Policy.BLOCK else self._run_conflate
            self._task = asyncio.create_task(run(), name=f"bus:{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def wait_idle(self) -> None:
        """Return once everything offered so far has been handled."""
        await self._idle.wait()

    async def _run_block(self) -> None:
        queue = self._queue
        while True:
            event = await queue.get()
            await self._deliver(event)
            if queue.empty():
                self._idle.set()

    async def _run_conflate(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._latest = self._latest, {}
            for event in batch.values():
                await self._deliver(event)
            if not self._latest:
                self._idle.set()

    async def _deliver(self, event: Event) -> None:
        try:
            result = self._handler(event)
            if self._is_async:
                await result  # type: ignore[misc]
        except Exception:
            self.errors += 1
            log.exception(
                "subscriber failed",
                extra={"subscriber": self.name, "event_type": type(event).__name__},
            )
        self.delivered += 1

    def stats(self) -> SubscriberStats:
        return SubscriberStats(
            self.name,
            self.policy,
            self.maxsize,
            self.depth,
            self.max_depth,
            self.delivered,
            self.conflated,
            self.errors,
        )


class EventBus:
    """Routes each published event to the subscribers of its type or any of its base types."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._routes: dict[type[Event], tuple[Subscription, ...]] = {}
        self._running = False

    def subscribe(
        self,
        types: type[Event] | Iterable[type[Event]],
        handler: Handler,
        *,
        name: str,
        policy: Policy = Policy.BLOCK,
        maxsize: int = 4096,
    ) -> Subscription:
        """Register ``handler`` for events of ``types`` (subclasses included)."""
        wanted = (types,) if isinstance(types, type) else tuple(types)
        if any(s.name == name for s in self._subs):
            raise ValueError(f"subscriber name {name!r} is already taken")
        sub = Subscription(name, wanted, handler, policy, maxsize)
        self._subs.append(sub)
        self._routes.clear()
        if self._running:
            sub.start()
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        self._subs.remove(sub)
        self._routes.clear()
        await sub.stop()

    async def publish(self, event: Event) -> None:
        """Hand ``event`` to every interested subscriber; waits only on a full BLOCK queue."""
        subs = self._routes.get(type(event))
        if subs is None:
            subs = self._route(type(event))
        for sub in subs:
            await sub.offer(event)

    def _route(self, event_type: type[Event]) -> tuple[Subscription, ...]:
        subs = tuple(s for s in self._subs if issubclass(event_type, s.types))
        self._routes[event_type] = subs
        return subs

    def start(self) -> None:
        self._running = True
        for sub in self._subs:
            sub.start()

    async def stop(self, *, finish: Subscription | None = None, timeout_s: float = 5.0) -> None:
        """Stop every subscriber. ``finish`` (the session journal) is stopped last, once it
        has handled what it was offered (for up to ``timeout_s``): the others stop first, so
        nothing new is decided, and no order sent, while it catches up."""
        was_running, self._running = self._running, False
        await asyncio.gather(*(sub.stop() for sub in self._subs if sub is not finish))
        if finish is not None and was_running:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await finish.wait_idle()
        if finish is not None:
            await finish.stop()

    async def drain(self) -> None:
        """Wait until every subscriber has handled everything published so far."""
        for sub in list(self._subs):
            await sub.wait_idle()

    def stats(self) -> list[SubscriberStats]:
        return [sub.stats() for sub in self._subs]
