"""The extensions to the paper's Raft that the core implements, from Ongaro's thesis
(2014) and etcd-io/raft: PreVote (§9.6), CheckQuorum and leader stickiness (§6.2,
§9.6), pipelined and batched replication with fast backup, snapshots (§5 of the
thesis), ReadIndex (§6.4), leadership transfer (§3.10), single-server membership
changes (§4.1) with disabled voters, and the cluster of one.
"""

from __future__ import annotations

import random

import pytest

from dtf_common.pb.dtf.v1 import commands_pb2, raft_pb2
from dtf_coordinator.consensus.raft import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    PRE_CANDIDATE,
    TRANSFER_CONTEXT,
    NotLeader,
    RaftConfig,
    RaftCore,
)
from dtf_coordinator.consensus.raft.errors import ChangeInProgress, LastVoter, TermNotCommitted
from dtf_coordinator.consensus.status import PeerProgress
from tests.unit.raft.simulation import Durable, Network, ack_all, entries, make_leader, message, node, take

CONFIG = RaftConfig()  # PreVote and CheckQuorum on, as in production
ADD, REMOVE = raft_pb2.ConfChange.ADD_NODE, raft_pb2.ConfChange.REMOVE_NODE
DISABLE, ENABLE = raft_pb2.ConfChange.DISABLE_NODE, raft_pb2.ConfChange.ENABLE_NODE


def change(kind: int, node_id: str, address: str = "") -> raft_pb2.ConfChange:
    return raft_pb2.ConfChange(type=kind, node_id=node_id, address=address)  # type: ignore[arg-type]


def of_type(msgs: list[raft_pb2.RaftMessage], kind: int) -> list[raft_pb2.RaftMessage]:
    return [m for m in msgs if m.type == kind]


def cluster(*ids: str, config: RaftConfig = CONFIG, leader: str = "a") -> Network:
    net = Network(*(ids or ("a", "b", "c")), config=config)
    net.elect(leader)
    return net


def leader_in_replicate(config: RaftConfig) -> RaftCore:
    """A leader of a, b, c whose no-op both followers acknowledged."""
    core = node(config=config)
    make_leader(core)
    ack_all(core, 1)
    return core


# ---------------------------------------------------------------------- PreVote (§9.6)


def test_pre_vote_does_not_bump_the_term_until_a_majority_would_vote() -> None:
    core = node(term=3, config=CONFIG)
    for _ in range(CONFIG.election_ticks_max):
        core.tick()
    assert (core.role, core.term) == (PRE_CANDIDATE, 3)
    asks = of_type(take(core), raft_pb2.MSG_PRE_VOTE)
    assert {(m.to, m.term) for m in asks} == {("b", 4), ("c", 4)}
    core.step(message(raft_pb2.MSG_PRE_VOTE_RESP, "b", "a", 4))
    assert (core.role, core.term, core.vote) == (CANDIDATE, 4, "a")
    assert {m.to for m in of_type(take(core), raft_pb2.MSG_VOTE)} == {"b", "c"}


def test_pre_vote_is_refused_while_a_leader_was_heard_recently() -> None:
    """§9.6: a server grants a pre-vote only if it has not heard from a leader within the
    minimum election timeout, and only for a log at least as up to date as its own."""
    core = node("b", term=2, config=CONFIG)
    core.step(message(raft_pb2.MSG_HEARTBEAT, "a", "b", 2))
    take(core)
    core.step(message(raft_pb2.MSG_PRE_VOTE, "c", "b", 3, index=5, log_term=2))
    assert take(core) == []
    for _ in range(CONFIG.election_ticks_min):
        core.tick()
    take(core)
    core.step(message(raft_pb2.MSG_PRE_VOTE, "c", "b", 3, index=5, log_term=2))
    [answer] = take(core)
    assert (answer.type, answer.reject, answer.term, core.term, core.vote) == (
        raft_pb2.MSG_PRE_VOTE_RESP,
        False,
        3,
        2,
        "",
    )


def test_a_rejoining_partitioned_node_does_not_disturb_the_leader() -> None:
    net = cluster()
    term = net.core("a").term
    net.isolate("c")
    net.tick(10 * CONFIG.election_ticks_max)
    assert net.core("c").term == term  # pre-votes went nowhere, the term never moved
    net.recover()
    net.tick(CONFIG.heartbeat_ticks)
    assert (net.leader(), net.core("a").term) == ("a", term)
    assert (net.core("c").role, net.core("c").leader_id) == (FOLLOWER, "a")


def test_without_pre_vote_a_rejoining_node_forces_a_new_term() -> None:
    """The disruption PreVote prevents (§9.6)."""
    net = cluster(config=RaftConfig(pre_vote=False, check_quorum=False))
    term = net.core("a").term
    net.isolate("c")
    net.tick(10 * CONFIG.election_ticks_max)
    net.recover()
    net.tick(3 * CONFIG.election_ticks_max)
    assert net.core("a").term > term


# ---------------------------------------------------------------------- CheckQuorum


def test_check_quorum_a_leader_cut_off_from_its_majority_steps_down() -> None:
    """Every election timeout the leader checks that a majority was heard from since the
    last check; cut off, it steps down at the second check at the latest."""
    net = cluster()
    net.isolate("a")
    net.tick(CONFIG.election_ticks_min)
    net.tick(CONFIG.election_ticks_min, only="a")
    assert (net.core("a").role, net.core("a").leader_id) == (FOLLOWER, None)
    net.tick(3 * CONFIG.election_ticks_max)
    assert net.leader() in ("b", "c")


def test_without_check_quorum_an_isolated_leader_keeps_leading() -> None:
    net = cluster(config=RaftConfig(check_quorum=False))
    net.isolate("a")
    net.tick(3 * CONFIG.election_ticks_max)
    assert net.core("a").role == LEADER


def test_leader_stickiness_votes_are_ignored_while_a_leader_is_heard_unless_transferring() -> None:
    core = node("b", term=2, config=RaftConfig(pre_vote=False))
    core.step(message(raft_pb2.MSG_HEARTBEAT, "a", "b", 2))
    take(core)
    core.step(message(raft_pb2.MSG_VOTE, "c", "b", 3, index=9, log_term=2))
    assert (take(core), core.term) == ([], 2)
    core.step(message(raft_pb2.MSG_VOTE, "c", "b", 3, index=9, log_term=2, context=TRANSFER_CONTEXT))
    [answer] = take(core)
    assert (answer.reject, core.term, core.vote) == (False, 3, "c")


def test_a_node_whose_term_ran_ahead_rejoins_without_pre_vote() -> None:
    """With CheckQuorum but no PreVote, an isolated node's term climbs; its answer to the
    leader's stale appends makes the leader step down, so the cluster moves to its term
    instead of ignoring it for ever."""
    net = cluster(config=RaftConfig(pre_vote=False))
    net.isolate("c")
    net.tick(5 * CONFIG.election_ticks_max)
    high = net.core("c").term
    net.recover()
    net.tick(5 * CONFIG.election_ticks_max)
    leader = net.leader()
    assert leader is not None
    assert all(net.core(i).term == net.core(leader).term >= high for i in "abc")


# ---------------------------------------------------------------------- replication flow


def test_pipelining_keeps_several_appends_in_flight_up_to_the_window() -> None:
    core = leader_in_replicate(RaftConfig(max_entries_per_msg=1, max_inflight_msgs=3))
    core.propose([b"1", b"2", b"3", b"4", b"5"])
    to_b = [m for m in take(core) if m.to == "b" and m.type == raft_pb2.MSG_APP]
    assert [[e.index for e in m.entries] for m in to_b] == [[2], [3], [4]]  # three in flight, then wait
    core.step(message(raft_pb2.MSG_APP_RESP, "b", "a", 1, index=2))
    to_b = [m for m in take(core) if m.to == "b" and m.type == raft_pb2.MSG_APP and m.entries]
    assert [[e.index for e in m.entries] for m in to_b] == [[5]]
    core.step(message(raft_pb2.MSG_APP_RESP, "b", "a", 1, index=5))
    to_b = [m for m in take(core) if m.to == "b" and m.type == raft_pb2.MSG_APP and m.entries]
    assert [[e.index for e in m.entries] for m in to_b] == [[6]]


def test_batches_respect_entry_and_byte_limits() -> None:
    core = leader_in_replicate(RaftConfig(max_entries_per_msg=3, max_bytes_per_msg=200))
    core.propose([b"x" * 10] * 7 + [b"y" * 500, b"z"])
    sizes = [len(m.entries) for m in take(core) if m.to == "b" and m.type == raft_pb2.MSG_APP]
    assert sizes == [3, 3, 1, 1, 1]  # 3 by count; the 500-byte entry goes alone


def test_one_propose_batch_goes_out_as_one_message_per_follower() -> None:
    core = leader_in_replicate(CONFIG)
    for n in range(50):
        core.propose([f"{n}".encode()])
    apps = of_type(take(core), raft_pb2.MSG_APP)
    assert sorted((m.to, len(m.entries)) for m in apps) == [("b", 50), ("c", 50)]


def test_a_rejected_append_backs_up_a_whole_term_at_a_time() -> None:
    """Figure 7 (f): the rejection names the follower's last entry of a term no newer
    than the leader's probe, so one round trip skips the whole conflicting suffix."""
    leader_log, follower_log = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6], [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]
    durable = {
        "a": Durable(hard_state=raft_pb2.HardState(term=7), entries=entries(*leader_log)),
        "b": Durable(hard_state=raft_pb2.HardState(term=7), entries=entries(*follower_log)),
        "c": Durable(hard_state=raft_pb2.HardState(term=7), entries=entries(*leader_log)),
    }
    net = Network("a", "b", "c", config=CONFIG, durable=durable)
    net.elect("a")
    rejections = [m for m in net.sent if m.type == raft_pb2.MSG_APP_RESP and m.reject and getattr(m, "from") == "b"]
    assert len(rejections) == 1
    assert (rejections[0].reject_hint, rejections[0].log_term) == (10, 3)
    assert [net.core("b").term_at(i) for i in range(1, 12)] == [*leader_log, 8]


def test_an_unreachable_follower_goes_back_to_probing() -> None:
    core = leader_in_replicate(CONFIG)
    core.propose([b"x"])
    take(core)
    assert core.status().progress["b"].state == "replicate"
    core.report_unreachable("b")
    assert core.status().progress["b"] == PeerProgress(match=1, next=2, state="probe", recent_active=True, inflight=0)


def test_heartbeat_answers_free_a_window_full_of_lost_appends() -> None:
    core = leader_in_replicate(RaftConfig(max_entries_per_msg=1, max_inflight_msgs=2))
    core.propose([b"1", b"2", b"3"])
    take(core)  # both appends to b are lost
    core.step(message(raft_pb2.MSG_HEARTBEAT_RESP, "b", "a", 1))
    [app] = [m for m in take(core) if m.to == "b" and m.type == raft_pb2.MSG_APP]
    core.step(message(raft_pb2.MSG_APP_RESP, "b", "a", 1, index=app.index, reject=True, reject_hint=1, log_term=1))
    resent = [m for m in take(core) if m.to == "b" and m.type == raft_pb2.MSG_APP]
    assert resent[0].index == 1 and [e.index for e in resent[0].entries] == [2]


# ---------------------------------------------------------------------- snapshots


def test_a_lagging_follower_gets_a_snapshot_then_the_rest_of_the_log() -> None:
    net = cluster()
    net.crash("c")
    for n in range(10):
        net.propose("a", f"cmd-{n}".encode())
    index = net.compact("a")
    net.propose("a", b"after")
    assert net.core("a").first_index == index + 1
    net.start("c")
    net.tick(CONFIG.heartbeat_ticks)
    snaps = of_type(net.sent, raft_pb2.MSG_SNAP)
    assert [(m.to, m.snapshot.index) for m in snaps] == [("c", index)]
    c = net.core("c")
    assert (c.commit, c.applied, c.snapshot_meta.index) == (net.core("a").commit, net.core("a").commit, index)
    assert list(c.conf_state.voters) == ["a", "b", "c"]
    assert net.peers["c"].commands == [*(f"cmd-{n}".encode() for n in range(10)), b"after"]
    assert net.core("a").status().progress["c"].state == "replicate"


def test_a_failed_snapshot_is_retried_after_the_next_heartbeat() -> None:
    net = cluster()
    net.crash("c")
    net.propose("a", b"x", b"y")
    net.compact("a")
    net.start("c")
    net.drop_types.add(raft_pb2.MSG_SNAP)
    net.tick(CONFIG.heartbeat_ticks)
    assert net.core("a").status().progress["c"].state == "probe"
    assert net.core("c").commit < net.core("a").commit
    net.recover()
    net.tick(2 * CONFIG.heartbeat_ticks)
    assert net.core("c").commit == net.core("a").commit
    assert net.peers["c"].commands == [b"x", b"y"]


def test_the_follower_acknowledges_a_snapshot_only_once_installed() -> None:
    core = node("b", term=2, config=CONFIG)
    snap = raft_pb2.SnapshotMeta(index=10, term=2, conf=raft_pb2.ConfState(voters=["a", "b", "c", "d"]))
    core.step(message(raft_pb2.MSG_SNAP, "a", "b", 2, snapshot=snap))
    rd = core.ready()
    assert rd.snapshot is not None and rd.snapshot.index == 10
    assert rd.messages == [] and rd.conf_state is not None and list(rd.conf_state.voters) == ["a", "b", "c", "d"]
    assert (core.commit, core.last_index, core.first_index) == (10, 10, 11)
    core.advance(rd)
    [ack] = take(core)
    assert (ack.type, ack.to, ack.index, ack.reject) == (raft_pb2.MSG_APP_RESP, "a", 10, False)
    assert core.applied == 10


def test_a_snapshot_the_follower_already_covers_is_not_installed() -> None:
    core = node("b", log=[1, 1, 1, 1, 1], term=1, commit=4, config=CONFIG)
    core.step(message(raft_pb2.MSG_SNAP, "a", "b", 1, snapshot=raft_pb2.SnapshotMeta(index=3, term=1)))
    [answer] = take(core)
    assert answer.index == 4 and core.first_index == 1
    # Holding the snapshot's last entry, the follower just commits up to it.
    core = node("b", log=[1, 1, 1, 1, 1], term=1, commit=2, config=CONFIG)
    core.step(message(raft_pb2.MSG_SNAP, "a", "b", 1, snapshot=raft_pb2.SnapshotMeta(index=5, term=1)))
    rd = core.ready()
    assert rd.snapshot is None and core.commit == 5 and [m.index for m in rd.messages] == [5]


def test_compact_keeps_the_membership_at_the_compaction_point() -> None:
    net = cluster()
    net.propose("a", b"x")
    _, added = net.core("a").propose_conf_change(change(ADD, "d", "d:7000"))
    net.stabilize()
    assert list(net.core("a").conf_state_at(added - 1).voters) == ["a", "b", "c"]
    assert list(net.core("a").conf_state_at(added).voters) == ["a", "b", "c", "d"]
    index = net.compact("a")
    meta = net.core("a").snapshot_meta
    assert meta.index == index and list(meta.conf.voters) == ["a", "b", "c", "d"]
    assert meta.conf.addresses["d"] == "d:7000"
    with pytest.raises(ValueError, match="applied"):
        net.core("a").compact(index + 5, 1)


# ---------------------------------------------------------------------- ReadIndex (§6.4)


def test_read_index_on_the_leader_confirms_leadership_with_a_heartbeat_round() -> None:
    core = leader_in_replicate(CONFIG)
    core.read_index(b"r1")
    beats = of_type(take(core), raft_pb2.MSG_HEARTBEAT)
    assert {(m.to, m.context) for m in beats} == {("b", b"r1"), ("c", b"r1")}
    assert core.ready().read_states == []
    core.step(message(raft_pb2.MSG_HEARTBEAT_RESP, "b", "a", 1, context=b"r1"))
    rd = core.ready()
    assert [(rs.index, rs.context) for rs in rd.read_states] == [(1, b"r1")]


def test_read_index_from_a_follower_goes_through_the_leader() -> None:
    net = cluster()
    net.propose("a", b"x")
    net.core("b").read_index(b"r2")
    net.stabilize()
    assert net.peers["b"].read_states == [(net.core("a").commit, b"r2")]
    assert any(m.type == raft_pb2.MSG_READ_INDEX and m.to == "a" for m in net.sent)


def test_read_index_waits_for_the_leader_to_commit_in_its_term() -> None:
    """§6.4 step 1: a new leader's commit index may lag until its no-op commits."""
    core = node(config=CONFIG)
    make_leader(core)
    core.read_index(b"early")
    assert of_type(take(core), raft_pb2.MSG_HEARTBEAT) == []
    msgs = ack_all(core, 1)
    assert {m.to for m in of_type(msgs, raft_pb2.MSG_HEARTBEAT) if m.context == b"early"} == {"b", "c"}
    core.step(message(raft_pb2.MSG_HEARTBEAT_RESP, "c", "a", 1, context=b"early"))
    assert [(rs.index, rs.context) for rs in core.ready().read_states] == [(1, b"early")]


def test_read_index_on_a_single_node_is_answered_at_once() -> None:
    net = Network("a", config=CONFIG)
    net.elect("a")
    net.core("a").read_index(b"solo")
    rd = net.core("a").ready()
    assert rd.messages == [] and [(rs.index, rs.context) for rs in rd.read_states] == [(1, b"solo")]


def test_read_index_without_a_leader_is_dropped_and_a_cut_off_leader_never_answers() -> None:
    core = node("b", config=CONFIG)
    core.read_index(b"nobody")
    assert take(core) == [] and core.ready().read_states == []
    net = cluster()
    net.isolate("a")
    net.core("a").read_index(b"stale")
    net.tick(CONFIG.election_ticks_min)
    assert net.peers["a"].read_states == []


def test_later_confirmation_releases_earlier_reads() -> None:
    core = leader_in_replicate(CONFIG)
    core.read_index(b"first")
    core.read_index(b"second")
    take(core)
    core.step(message(raft_pb2.MSG_HEARTBEAT_RESP, "b", "a", 1, context=b"second"))
    assert [rs.context for rs in core.ready().read_states] == [b"first", b"second"]


# ---------------------------------------------------------------------- leadership transfer (§3.10)


def test_leadership_moves_to_an_up_to_date_follower() -> None:
    net = cluster()
    net.propose("a", b"x")
    term = net.core("a").term
    net.core("a").transfer_leadership("b")
    net.stabilize()
    assert net.leader() == "b" and net.core("b").term == term + 1
    assert net.core("a").role == FOLLOWER
    assert any(m.type == raft_pb2.MSG_TIMEOUT_NOW and m.to == "b" for m in net.sent)


def test_a_lagging_target_is_caught_up_first() -> None:
    net = cluster()
    net.crash("c")
    net.propose("a", b"x", b"y")
    net.start("c")
    net.core("a").transfer_leadership("c")
    net.stabilize()
    assert net.leader() == "c"
    assert net.peers["c"].commands == [b"x", b"y"]


def test_proposals_are_refused_during_a_transfer_which_aborts_after_an_election_timeout() -> None:
    net = cluster()
    net.cut("a", "c")
    net.propose("a", b"x")
    net.core("a").transfer_leadership("c")
    net.stabilize()
    with pytest.raises(NotLeader) as refused:
        net.core("a").propose([b"y"])
    assert refused.value.leader_id is None
    net.tick(CONFIG.election_ticks_min, only="a")
    assert net.core("a").role == LEADER
    assert net.propose("a", b"y")[1] == net.core("a").last_index


def test_transfer_needs_a_leader_and_ignores_targets_that_may_not_lead() -> None:
    with pytest.raises(NotLeader):
        node("b").transfer_leadership("a")
    net = cluster()
    net.core("a").propose_conf_change(change(DISABLE, "c"))
    net.stabilize()
    for target in ("c", "zz", "a"):
        net.core("a").transfer_leadership(target)
        net.stabilize()
        assert net.leader() == "a" and net.core("a").status().transferee is None


# ---------------------------------------------------------------------- membership (§4.1)


def test_adding_a_node_makes_it_a_voter_that_catches_up() -> None:
    net = cluster()
    net.propose("a", b"x")
    term, index = net.core("a").propose_conf_change(change(ADD, "d", "d:7000"))
    net.stabilize()
    for i in "abc":
        conf = net.core(i).conf_state
        assert list(conf.voters) == ["a", "b", "c", "d"] and conf.addresses["d"] == "d:7000"
    entry = net.peers["a"].applied[index - 1]
    assert (entry.term, entry.type) == (term, commands_pb2.ENTRY_CONF_CHANGE)
    net.start("d")  # started empty, with the initial membership it is not part of
    net.tick(CONFIG.heartbeat_ticks)
    assert list(net.core("d").conf_state.voters) == ["a", "b", "c", "d"]
    assert net.peers["d"].commands == [b"x"]
    # Four voters: a majority is three.
    net.crash("c")
    net.crash("d")
    _, index = net.core("a").propose([b"needs three"])
    net.stabilize()
    assert net.core("a").commit < index


def test_removing_a_follower_shrinks_the_quorum() -> None:
    net = cluster()
    net.core("a").propose_conf_change(change(REMOVE, "c"))
    net.stabilize()
    assert list(net.core("a").conf_state.voters) == ["a", "b"]
    assert "c" not in net.core("a").conf_state.addresses
    net.crash("c")
    _, index = net.propose("a", b"x")
    assert net.core("a").commit == index
    assert set(net.core("a").status().progress) == {"a", "b"}


def test_a_removed_leader_steps_down_once_its_removal_commits() -> None:
    net = cluster()
    net.core("a").propose_conf_change(change(REMOVE, "a"))
    net.stabilize()
    assert net.core("a").role == FOLLOWER and list(net.core("b").conf_state.voters) == ["b", "c"]
    net.tick(3 * CONFIG.election_ticks_max)
    assert net.leader() in ("b", "c") and net.core("a").role == FOLLOWER


def test_membership_changes_go_one_at_a_time_and_only_after_an_own_term_commit() -> None:
    core = node(config=CONFIG)
    make_leader(core)
    with pytest.raises(TermNotCommitted) as early:
        core.propose_conf_change(change(ADD, "d"))
    assert early.value.retryable
    ack_all(core, 1)
    core.propose_conf_change(change(ADD, "d"))
    with pytest.raises(ChangeInProgress) as busy:
        core.propose_conf_change(change(ADD, "e"))
    assert busy.value.retryable
    with pytest.raises(NotLeader) as refused:
        node("b").propose_conf_change(change(ADD, "e"))
    assert refused.value.leader_id is None
    solo = Network("a", config=CONFIG)
    solo.elect("a")
    with pytest.raises(LastVoter) as last:
        solo.core("a").propose_conf_change(change(REMOVE, "a"))
    assert not last.value.retryable
    # A change that names no node is its caller's bug, not a refusal.
    with pytest.raises(ValueError, match="must name a node"):
        solo.core("a").propose_conf_change(change(ADD, ""))


def test_a_disabled_node_votes_and_replicates_but_never_campaigns() -> None:
    net = cluster()
    net.core("a").propose_conf_change(change(DISABLE, "c"))
    net.stabilize()
    assert list(net.core("c").conf_state.disabled) == ["c"]
    # Quorum is unchanged: a and c commit without b.
    net.crash("b")
    _, index = net.propose("a", b"x")
    assert net.core("a").commit == index
    # Its election timer starts no campaign, and it refuses MSG_TIMEOUT_NOW.
    net.isolate("c")
    term = net.core("c").term
    net.tick(2 * CONFIG.election_ticks_max, only="c")
    assert (net.core("c").role, net.core("c").term) == (FOLLOWER, term)
    net.core("c").step(message(raft_pb2.MSG_TIMEOUT_NOW, "a", "c", term))
    assert (net.core("c").role, net.core("c").term) == (FOLLOWER, term)


def test_a_disabled_leader_hands_over_to_the_most_up_to_date_enabled_voter() -> None:
    net = cluster("a", "b", "c", "d", "e")
    net.cut("a", "e")
    net.propose("a", b"x")
    net.core("a").propose_conf_change(change(DISABLE, "a"))
    net.stabilize()
    net.tick(CONFIG.heartbeat_ticks, only="a")
    leader = net.leader()
    assert leader in ("b", "c", "d") and net.core(leader).role == LEADER
    assert net.core("a").role == FOLLOWER
    net.recover()
    net.core(leader).propose_conf_change(change(ENABLE, "a"))
    net.stabilize()
    assert list(net.core("a").conf_state.disabled) == []
    net.core(leader).transfer_leadership("a")
    net.stabilize()
    assert net.leader() == "a"


def test_a_disabled_node_holding_the_only_complete_log_campaigns_as_a_last_resort() -> None:
    """a replicates only to the disabled c, then crashes: b alone can never win (c's log
    is more up to date), so c leads after a long wait and hands over to b at once."""
    net = cluster()
    net.core("a").propose_conf_change(change(DISABLE, "c"))
    net.stabilize()
    net.cut("a", "b")
    net.propose("a", b"only on a and c")
    net.crash("a")
    net.recover()
    net.tick(2 * CONFIG.election_ticks_max)
    assert net.leader() is None  # b cannot win, c does not try yet
    net.tick(6 * CONFIG.election_ticks_max)
    assert net.leader() == "b"
    assert net.peers["b"].commands == [b"only on a and c"]


def test_a_restart_rebuilds_membership_from_the_log_up_to_the_commit_index() -> None:
    bootstrap = raft_pb2.ConfState(voters=["a", "b", "c"])
    add_d = commands_pb2.LogEntry(
        term=1, index=2, type=commands_pb2.ENTRY_CONF_CHANGE, command=change(ADD, "d").SerializeToString()
    )
    remove_b = commands_pb2.LogEntry(
        term=1, index=3, type=commands_pb2.ENTRY_CONF_CHANGE, command=change(REMOVE, "b").SerializeToString()
    )
    log = [commands_pb2.LogEntry(term=1, index=1), add_d, remove_b]
    core = RaftCore(
        "a", CONFIG, random.Random(0), hard_state=raft_pb2.HardState(term=1, commit=2), entries=log, bootstrap=bootstrap
    )
    assert list(core.conf_state.voters) == ["a", "b", "c", "d"]  # the removal is not committed
    rd = core.ready()
    assert [e.index for e in rd.committed] == [1, 2] and rd.entries == [] and rd.hard_state is None
    assert (core.applied, core.commit, core.last_index) == (0, 2, 3)


# ---------------------------------------------------------------------- a cluster of one


def test_a_single_node_elects_itself_on_its_first_election_timeout() -> None:
    net = Network("a", config=CONFIG)
    net.tick(CONFIG.election_ticks_max)
    assert net.core("a").role == LEADER and net.core("a").term == 1


def test_a_single_node_commits_only_what_it_has_persisted() -> None:
    core = node(voters=["a"], config=CONFIG)
    core.campaign()
    assert core.role == LEADER
    rd = core.ready()
    assert [e.index for e in rd.entries] == [1] and core.commit == 0
    core.advance(rd)
    assert core.commit == 1
    _, index = core.propose([b"x", b"y"])
    rd = core.ready()
    assert rd.messages == [] and core.commit == 1 and [e.command for e in rd.committed] == [b""]
    core.advance(rd)
    rd = core.ready()
    assert core.commit == index and [e.command for e in rd.committed] == [b"x", b"y"]
    assert rd.hard_state is not None and rd.hard_state.commit == index


# ---------------------------------------------------------------------- the Ready contract and robustness


def test_ready_reports_soft_and_hard_state_changes_once() -> None:
    core = node(config=CONFIG)
    rd = core.ready()
    assert rd.soft_state is None and rd.hard_state is None and rd.conf_state is not None
    core.advance(rd)
    assert not core.has_ready()
    core.campaign()
    rd = core.ready()
    assert rd.soft_state is not None and rd.soft_state.role == PRE_CANDIDATE and rd.hard_state is None
    core.advance(rd)
    core.step(message(raft_pb2.MSG_PRE_VOTE_RESP, "b", "a", 1))
    rd = core.ready()
    assert rd.soft_state is not None and rd.soft_state.role == CANDIDATE
    assert rd.hard_state is not None and (rd.hard_state.term, rd.hard_state.vote) == (1, "a")
    core.advance(rd)
    assert not core.has_ready()


def test_entries_overwritten_before_they_were_persisted_do_not_count_as_persisted() -> None:
    core = node("b", term=1, config=CONFIG)
    core.step(message(raft_pb2.MSG_APP, "a", "b", 1, index=0, log_term=0, entries=entries(1, 1, 1)))
    first = core.ready()
    core.step(message(raft_pb2.MSG_APP, "c", "b", 2, index=1, log_term=1, entries=entries(2, start=2)))
    second = core.ready()
    assert [(e.index, e.term) for e in second.entries] == [(2, 2)]
    core.advance(first)
    assert core.status().persisted == 1  # entries 2 and 3 of term 1 are gone
    core.advance(second)
    assert core.status().persisted == 2


def test_messages_for_others_without_a_sender_or_malformed_are_ignored() -> None:
    core = node("b", term=1, config=CONFIG)
    core.step(message(raft_pb2.MSG_APP, "a", "c", 1, index=0, log_term=0, entries=entries(1)))
    core.step(message(raft_pb2.MSG_APP, "", "b", 1, index=0, log_term=0, entries=entries(1)))
    core.step(message(raft_pb2.MSG_APP, "b", "b", 1, index=0, log_term=0, entries=entries(1)))
    core.step(message(raft_pb2.MSG_APP, "a", "b", 1, index=0, log_term=0, entries=entries(1, start=5)))
    assert core.last_index == 0
    core.step(message(raft_pb2.RAFT_MSG_UNSPECIFIED, "a", "b", 9))
    core.step(message(99, "a", "b", 9))
    assert core.term == 1 and take(core) == []


def test_step_never_raises_on_arbitrary_messages() -> None:
    rng = random.Random(1)
    net = cluster()
    kinds = list(range(1, 13))
    for _ in range(3000):
        to = rng.choice("abc")
        frm = rng.choice("abcdz")
        fields: dict[str, object] = {
            "index": rng.randint(0, 20),
            "log_term": rng.randint(0, 5),
            "commit": rng.randint(0, 30),
            "reject": rng.random() < 0.3,
            "reject_hint": rng.randint(0, 20),
            "context": rng.choice([b"", b"transfer", b"x"]),
        }
        if rng.random() < 0.3:
            start = rng.randint(1, 20)
            fields["entries"] = entries(*sorted(rng.randint(1, 5) for _ in range(rng.randint(0, 3))), start=start)
        if rng.random() < 0.1:
            fields["snapshot"] = raft_pb2.SnapshotMeta(
                index=rng.randint(0, 20), term=rng.randint(0, 5), conf=raft_pb2.ConfState(voters=["a", "b", "c"])
            )
            net.peers[to].received[fields["snapshot"].index] = []  # type: ignore[attr-defined]
        net.peers[to].core.step(message(rng.choice(kinds), frm, to, rng.randint(0, 6), **fields))
        net.flush(to)
        if rng.random() < 0.1:
            net.peers[rng.choice("abc")].core.tick()


def test_status_describes_the_node_and_a_leaders_view_of_each_peer() -> None:
    net = cluster()
    net.propose("a", b"x")
    status = net.core("a").status()
    seen = (
        status.node_id,
        status.role,
        status.term,
        status.leader_id,
        status.commit,
        status.applied,
        status.last_index,
    )
    assert seen == ("a", LEADER, 1, "a", 2, 2, 2)
    assert status.progress["b"] == PeerProgress(match=2, next=3, state="replicate", recent_active=True, inflight=0)
    assert net.core("b").status().progress == {} and net.core("b").status().transferee is None
