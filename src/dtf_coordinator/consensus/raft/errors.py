"""What the Raft core refuses, by name, as etcd-io/raft has sentinel errors.

A `Refusal` is an expected condition a caller handles (not the leader, a membership
change still in flight); each is also the `dtf_common.errors` class callers see, so
the shell passes it on as it is, retryable or not by that class. A request that is
malformed (no node named, nothing to propose, compacting past what is applied) is the
caller's bug: the core raises ValueError for it, never a Refusal.
"""

from __future__ import annotations

from dtf_common import errors


class Refusal(errors.DtfError):
    """Base of the core's expected refusals; never raised itself."""


class NotLeader(Refusal, errors.NotLeader):
    """This node cannot take proposals: it is not the leader, or it is handing leadership
    over (then `leader_id` is None: the next leader is not known yet)."""

    def __init__(self, leader_id: str | None) -> None:
        super().__init__(f"not the leader (leader: {leader_id or 'unknown'})", leader_hint=leader_id)
        self.leader_id = leader_id


class ChangeInProgress(Refusal, errors.Unavailable):
    """§4.1: one membership change at a time; the previous one has not committed yet.
    Retryable: it commits as soon as a quorum answers."""

    def __init__(self) -> None:
        super().__init__("a membership change is still uncommitted")


class TermNotCommitted(Refusal, errors.Unavailable):
    """A new leader takes membership changes only once it has committed an entry of its
    own term (so that an earlier leader's uncommitted change cannot overlap). Retryable:
    that happens within a heartbeat or two."""

    def __init__(self) -> None:
        super().__init__("the leader has not yet committed an entry of its term")


class LastVoter(Refusal, errors.Conflict):
    """Removing the only voter would leave no cluster to decide anything. Not retryable:
    waiting does not change it."""

    def __init__(self, node_id: str) -> None:
        super().__init__("cannot remove the last voter", field="node_id", node_id=node_id)
