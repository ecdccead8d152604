"""Fan-out of live events (task updates) to WebSocket subscribers.

Each subscriber has a bounded queue; a subscriber too slow to keep up loses the oldest
messages rather than slowing the coordinator down.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, Any]


@dataclass(eq=False)
class Subscription:
    channel: str
    filter: dict[str, Any]
    queue: asyncio.Queue[Message] = field(default_factory=lambda: asyncio.Queue(maxsize=10_000))
    dropped: int = 0

    def matches(self, message: Message) -> bool:
        return all(message.get(k) == v for k, v in self.filter.items())

    def offer(self, message: Message) -> None:
        if not self.matches(message):
            return
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(message)


class EventHub:
    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}

    def subscribe(self, channel: str, filter: dict[str, Any] | None = None) -> Subscription:
        sub = Subscription(channel, dict(filter or {}))
        self._subs.setdefault(channel, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.get(sub.channel, set()).discard(sub)

    def has_subscribers(self, channel: str) -> bool:
        return bool(self._subs.get(channel))

    def publish(self, channel: str, message: Message) -> None:
        for sub in self._subs.get(channel, ()):
            sub.offer(message)
