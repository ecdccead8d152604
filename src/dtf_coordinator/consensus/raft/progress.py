"""What a leader knows about each follower's log, and how it paces appends to it.

A follower's `Progress` is in one of three states (etcd-io/raft's tracker package):

- probe: the leader does not know where the logs match. It sends one append at a time
  and waits for the answer (or the next heartbeat answer) before sending another;
- replicate: the logs match up to `match`. The leader streams appends optimistically,
  advancing `next` as it sends, with at most `max_inflight` unacknowledged messages;
- snapshot: the follower needs entries the leader has compacted away. The leader sends
  nothing more until the snapshot is acknowledged or reported failed.
"""

from __future__ import annotations

from collections import deque

PROBE = "probe"
REPLICATE = "replicate"
SNAPSHOT = "snapshot"


class Inflights:
    """The last index of each append in flight, oldest first."""

    __slots__ = ("_capacity", "_queue")

    def __init__(self, capacity: int) -> None:
        self._capacity = max(1, capacity)
        self._queue: deque[int] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def full(self) -> bool:
        return len(self._queue) >= self._capacity

    def add(self, last_index: int) -> None:
        self._queue.append(last_index)

    def free_le(self, index: int) -> None:
        """An acknowledgement up to `index` settles every append that ended there or before."""
        queue = self._queue
        while queue and queue[0] <= index:
            queue.popleft()

    def free_first(self) -> None:
        if self._queue:
            self._queue.popleft()

    def reset(self) -> None:
        self._queue.clear()


class Progress:
    __slots__ = ("inflights", "match", "next", "paused", "pending_snapshot", "recent_active", "state")

    def __init__(self, next_index: int, max_inflight: int, *, recent_active: bool = False) -> None:
        self.match = 0
        self.next = next_index
        self.state = PROBE
        self.paused = False  # probe only: an append is out and unanswered
        self.pending_snapshot = 0
        self.recent_active = recent_active  # heard from since the last CheckQuorum round
        self.inflights = Inflights(max_inflight)

    def __repr__(self) -> str:
        return f"Progress(match={self.match}, next={self.next}, state={self.state})"

    def become_probe(self) -> None:
        if self.state == SNAPSHOT:
            # The snapshot may have arrived: probe right after it rather than before it.
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self._enter(PROBE)

    def become_replicate(self) -> None:
        self.next = self.match + 1
        self._enter(REPLICATE)

    def become_snapshot(self, index: int) -> None:
        self._enter(SNAPSHOT)
        self.pending_snapshot = index

    def _enter(self, state: str) -> None:
        self.state = state
        self.paused = False
        self.pending_snapshot = 0
        self.inflights.reset()

    def is_paused(self) -> bool:
        if self.state == PROBE:
            return self.paused
        if self.state == REPLICATE:
            return self.inflights.full()
        return True

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement up to `index`; False if it tells nothing new (reordered or
        duplicated)."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.paused = False
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """A rejected append at `rejected`: back `next` up. False if the rejection is stale."""
        if self.state == REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1  # the logs match at least here
            return True
        if self.next - 1 != rejected:
            return False  # an answer to an earlier probe
        if rejected <= self.match:
            # The follower no longer holds an entry it acknowledged: it dropped a corrupt
            # tail of its log when it restarted. Take its word, or it never catches up.
            self.match = min(self.match, match_hint)
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.paused = False
        return True

    def sent_entries(self, count: int, last_index: int) -> None:
        if self.state == REPLICATE:
            if count:  # an empty append (a commit update) takes no slot in the window
                self.next = last_index + 1
                self.inflights.add(last_index)
        elif self.state == PROBE:
            self.paused = True
