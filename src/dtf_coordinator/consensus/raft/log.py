"""The in-memory Raft log: the last compaction point and every entry after it.

Besides the entries, the log tracks three positions the Ready/advance cycle needs
(etcd-io/raft's `raftLog` and `unstable` in one):

- `commit`: the highest index known committed (§5.3);
- `persisted`: the highest index the shell has made durable, the only entries a leader
  may count itself for (§10.2.1 of Ongaro's thesis: the leader writes to its disk in
  parallel with replicating);
- the first index not yet handed to the shell for persisting, and the last committed
  index handed out for applying, so each Ready carries every entry exactly once.

Entries are stored as the protobuf objects they arrived as; nothing here copies them.
Byte sizes are kept as running totals, so cutting a batch at `max_bytes` is a bisection
instead of a walk over the entries.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

from dtf_common.pb.dtf.v1 import commands_pb2

# What an entry costs on the wire beyond its command: tags, term, index, type.
ENTRY_OVERHEAD = 24


def entry_size(entry: commands_pb2.LogEntry) -> int:
    return len(entry.command) + ENTRY_OVERHEAD


class RaftLog:
    """Entries `first_index..last_index` after the snapshot at `snapshot_index`."""

    __slots__ = (
        "_applying",
        "_entries",
        "_sizes",
        "_unstable",
        "applied",
        "commit",
        "persisted",
        "snapshot_index",
        "snapshot_term",
    )

    def __init__(
        self, snapshot_index: int, snapshot_term: int, entries: Sequence[commands_pb2.LogEntry], *, durable: bool
    ) -> None:
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        self._entries: list[commands_pb2.LogEntry] = list(entries)
        # _sizes[k] = total bytes of entries[0..k]; absolute, so compaction never rewrites it.
        self._sizes: list[int] = []
        total = 0
        for e in self._entries:
            total += entry_size(e)
            self._sizes.append(total)
        last = self.last_index
        self.commit = snapshot_index
        self.applied = snapshot_index
        self._applying = snapshot_index  # committed entries up to here were handed to the shell
        self._unstable = last + 1 if durable else snapshot_index + 1  # first index not yet handed out
        self.persisted = last if durable else snapshot_index

    # ------------------------------------------------------------------ positions

    @property
    def first_index(self) -> int:
        return self.snapshot_index + 1

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.snapshot_term

    def term(self, index: int) -> int | None:
        """The term of the entry at `index`; None if compacted away or beyond the end."""
        off = index - self.snapshot_index
        if off == 0:
            return self.snapshot_term
        if off < 0 or off > len(self._entries):
            return None
        return self._entries[off - 1].term

    def entry(self, index: int) -> commands_pb2.LogEntry | None:
        off = index - self.snapshot_index
        if off <= 0 or off > len(self._entries):
            return None
        return self._entries[off - 1]

    def is_up_to_date(self, index: int, term: int) -> bool:
        """§5.4.1: a candidate's log is at least as up to date as this one."""
        last_term = self.last_term
        return term > last_term or (term == last_term and index >= self.last_index)

    # ------------------------------------------------------------------ reading

    def slice(self, lo: int, hi: int) -> list[commands_pb2.LogEntry]:
        """Entries [lo, hi); both within first_index..last_index+1."""
        base = self.snapshot_index + 1
        return self._entries[lo - base : hi - base]

    def entries_from(self, lo: int, max_count: int, max_bytes: int) -> list[commands_pb2.LogEntry]:
        """A batch starting at `lo`: at most `max_count` entries and `max_bytes`, never empty
        when an entry exists (one entry over the byte limit still goes alone)."""
        start = lo - self.snapshot_index - 1
        end = min(len(self._entries), start + max_count)
        if end <= start:
            return []
        sizes = self._sizes
        before = sizes[start - 1] if start > 0 else sizes[0] - entry_size(self._entries[0])
        end = max(start + 1, bisect_right(sizes, before + max_bytes, start, end))
        return self._entries[start:end]

    def find_conflict(self, entries: Sequence[commands_pb2.LogEntry]) -> int:
        """The index of the first entry that is new or differs in term here; 0 if none."""
        for e in entries:
            if self.term(e.index) != e.term:
                return int(e.index)
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The last index <= `index` whose term is <= `term`, with its term: where a
        follower's and a leader's logs can match at the earliest, so a rejected append
        backs up over a whole term at a time instead of one entry at a time."""
        index = min(index, self.last_index)
        while index > self.snapshot_index:
            t = self._entries[index - self.snapshot_index - 1].term
            if t <= term:
                return index, t
            index -= 1
        return self.snapshot_index, self.snapshot_term

    # ------------------------------------------------------------------ writing

    def append(self, entries: Sequence[commands_pb2.LogEntry]) -> None:
        """Add entries that start at or before last_index + 1, truncating any stored
        entries from the first of them on (the caller has checked they are uncommitted)."""
        if not entries:
            return
        first = int(entries[0].index)
        keep = first - self.snapshot_index - 1
        if keep < len(self._entries):
            del self._entries[keep:]
            del self._sizes[keep:]
            self._unstable = min(self._unstable, first)
            self.persisted = min(self.persisted, first - 1)
        sizes = self._sizes
        total = sizes[-1] if sizes else 0
        for e in entries:
            total += len(e.command) + ENTRY_OVERHEAD
            sizes.append(total)
        self._entries.extend(entries)

    def restore(self, index: int, term: int) -> None:
        """Replace the whole log with a snapshot's compaction point."""
        self._entries = []
        self._sizes = []
        self.snapshot_index = index
        self.snapshot_term = term
        self.commit = index
        self._applying = max(self._applying, index)
        self._unstable = index + 1
        self.persisted = min(self.persisted, index)

    def compact(self, index: int, term: int) -> None:
        """Drop entries up to `index`, now held by a durable snapshot."""
        drop = index - self.snapshot_index
        del self._entries[:drop]
        del self._sizes[:drop]
        self.snapshot_index = index
        self.snapshot_term = term

    # ------------------------------------------------------------------ the Ready cycle

    def has_unstable(self) -> bool:
        return self._unstable <= self.last_index

    def take_unstable(self) -> list[commands_pb2.LogEntry]:
        entries = self.slice(self._unstable, self.last_index + 1)
        self._unstable = self.last_index + 1
        return entries

    def stable_to(self, entries: Sequence[commands_pb2.LogEntry]) -> None:
        """The shell made `entries` durable. Those overwritten since they were handed out
        do not count: only the part still in the log (by Log Matching, where index and
        term still agree) is persisted. Usually that is the last one, found at once."""
        for entry in reversed(entries):
            index = int(entry.index)
            if self.term(index) == entry.term:
                self.persisted = max(self.persisted, min(index, self._unstable - 1))
                return

    def has_committed(self) -> bool:
        return self.commit > self._applying

    def take_committed(self) -> list[commands_pb2.LogEntry]:
        entries = self.slice(self._applying + 1, self.commit + 1)
        self._applying = self.commit
        return entries
