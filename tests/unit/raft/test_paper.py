"""The Raft paper, section by section, in the manner of etcd-io/raft's raft_paper_test.go.

Section numbers are those of "In Search of an Understandable Consensus Algorithm
(Extended Version)", Ongaro and Ousterhout, 2014. These tests run classic Raft
(no PreVote, no CheckQuorum) unless a test says otherwise; test_core_features.py covers
the extensions.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from dtf_common.pb.dtf.v1 import raft_pb2
from dtf_coordinator.consensus.raft import CANDIDATE, FOLLOWER, LEADER, RaftConfig, RaftCore
from tests.unit.raft.simulation import (
    CLASSIC,
    Durable,
    Network,
    ack_all,
    entries,
    make_candidate,
    make_leader,
    message,
    node,
    take,
)

PAPER = CLASSIC


def log_terms(core: RaftCore) -> list[int | None]:
    return [core.term_at(i) for i in range(core.first_index, core.last_index + 1)]


def of_type(msgs: Sequence[raft_pb2.RaftMessage], kind: int) -> list[raft_pb2.RaftMessage]:
    return [m for m in msgs if m.type == kind]


# ---------------------------------------------------------------------- §5.1 terms


@pytest.mark.parametrize("role", [FOLLOWER, CANDIDATE, LEADER])
def test_5_1_a_higher_term_makes_any_server_a_follower_of_that_term(role: str) -> None:
    """§5.1: "If a candidate or leader discovers that its term is out of date, it
    immediately reverts to follower state"; every server adopts the larger term."""
    core = node(term=1)
    if role == CANDIDATE:
        make_candidate(core)
    elif role == LEADER:
        make_leader(core)
    core.step(message(raft_pb2.MSG_APP, "b", "a", 5))
    assert (core.term, core.role, core.leader_id) == (5, FOLLOWER, "b")


def test_5_1_a_stale_term_request_is_rejected() -> None:
    """§5.1: "If a server receives a request with a stale term number, it rejects the
    request." Classic Raft drops it; with PreVote or CheckQuorum the stale leader is told
    the newer term so that it steps down."""
    core = node(term=2)
    core.step(message(raft_pb2.MSG_APP, "b", "a", 1, index=0, log_term=0, entries=entries(1)))
    assert core.last_index == 0
    assert take(core) == []

    sticky = node(term=2, config=RaftConfig(pre_vote=True))
    sticky.step(message(raft_pb2.MSG_APP, "b", "a", 1, index=0, log_term=0, entries=entries(1)))
    [answer] = take(sticky)
    assert (answer.type, answer.term, sticky.last_index) == (raft_pb2.MSG_APP_RESP, 2, 0)


# ---------------------------------------------------------------------- §5.2 leader election


def test_5_2_servers_start_as_followers() -> None:
    core = node()
    assert (core.role, core.term, core.leader_id) == (FOLLOWER, 0, None)


def test_5_2_leader_sends_heartbeats_every_heartbeat_interval() -> None:
    """§5.2: "Leaders send periodic heartbeats (AppendEntries RPCs that carry no log
    entries) to all followers in order to maintain their authority." The commit index a
    heartbeat carries never exceeds what the follower is known to hold."""
    core = node(config=RaftConfig(election_ticks_min=10, election_ticks_max=20, heartbeat_ticks=2, pre_vote=False))
    make_leader(core)
    ack_all(core, 1)
    core.propose([b"x"])
    take(core)
    core.tick()
    assert of_type(take(core), raft_pb2.MSG_HEARTBEAT) == []
    core.tick()
    beats = of_type(take(core), raft_pb2.MSG_HEARTBEAT)
    assert sorted(m.to for m in beats) == ["b", "c"]
    assert all(not m.entries and m.term == 1 and m.commit == 1 for m in beats)


@pytest.mark.parametrize("candidate_first", [False, True])
def test_5_2_election_timeout_starts_an_election(candidate_first: bool) -> None:
    """§5.2: "If a follower receives no communication over a period of time called the
    election timeout, [...] it begins an election": it increments its term, votes for
    itself and sends RequestVote to every other server. A candidate whose election times
    out starts a new one, in a new term."""
    core = node(term=1)
    if candidate_first:
        make_candidate(core)
    start = core.term
    ticks = 0
    while core.term == start:
        core.tick()
        ticks += 1
    assert ticks <= PAPER.election_ticks_max
    assert (core.role, core.term, core.vote) == (CANDIDATE, start + 1, "a")
    votes = of_type(take(core), raft_pb2.MSG_VOTE)
    assert sorted(m.to for m in votes) == ["b", "c"]
    assert all(m.term == start + 1 for m in votes)


@pytest.mark.parametrize(
    ("voters", "answers", "role"),
    [
        (1, {}, LEADER),
        (3, {"b": True, "c": True}, LEADER),
        (3, {"b": True}, LEADER),
        (5, {"b": True, "c": True, "d": True, "e": True}, LEADER),
        (5, {"b": True, "c": True}, LEADER),
        (3, {}, CANDIDATE),
        (5, {"b": True}, CANDIDATE),
        (5, {"b": False, "c": False}, CANDIDATE),
        (3, {"b": False, "c": False}, FOLLOWER),
        (5, {"b": False, "c": False, "d": False}, FOLLOWER),
        (5, {"b": True, "c": False, "d": False, "e": False}, FOLLOWER),
    ],
)
def test_5_2_candidate_wins_with_a_majority_and_loses_to_one(voters: int, answers: dict[str, bool], role: str) -> None:
    """§5.2: "A candidate wins an election if it receives votes from a majority of the
    servers in the full cluster for the same term." A majority of rejections ends the
    election: it can no longer win."""
    core = node(voters="abcde"[:voters])
    core.campaign()
    for voter, granted in answers.items():
        core.step(message(raft_pb2.MSG_VOTE_RESP, voter, "a", 1, reject=not granted))
    assert (core.role, core.term) == (role, 1)


@pytest.mark.parametrize(
    ("vote", "candidate", "granted"),
    [("", "b", True), ("", "c", True), ("b", "b", True), ("c", "c", True), ("b", "c", False), ("c", "b", False)],
)
def test_5_2_a_server_votes_for_at_most_one_candidate_per_term(vote: str, candidate: str, granted: bool) -> None:
    """§5.2: "Each server will vote for at most one candidate in a given term, on a
    first-come-first-served basis." A repeated request from the same candidate is granted
    again (its first answer may have been lost)."""
    core = node(term=1, vote=vote)
    core.step(message(raft_pb2.MSG_VOTE, candidate, "a", 1, index=0, log_term=0))
    [answer] = take(core)
    assert (answer.type, answer.to, answer.term, answer.reject) == (raft_pb2.MSG_VOTE_RESP, candidate, 1, not granted)
    assert core.vote == (candidate if granted else vote)


@pytest.mark.parametrize("term", [1, 2])
def test_5_2_a_candidate_accepts_a_leader_of_its_term_or_newer(term: int) -> None:
    """§5.2: "If the leader's term [...] is at least as large as the candidate's current
    term, then the candidate recognizes the leader as legitimate and returns to follower
    state.\""""
    core = node()
    make_candidate(core)
    core.step(message(raft_pb2.MSG_APP, "b", "a", term, index=0, log_term=0))
    assert (core.role, core.term, core.leader_id) == (FOLLOWER, term, "b")


@pytest.mark.parametrize("candidate_first", [False, True])
def test_5_2_election_timeouts_are_random_within_the_configured_range(candidate_first: bool) -> None:
    """§5.2: "election timeouts are chosen randomly from a fixed interval", re-drawn for
    each election, so split votes rarely repeat."""
    seen: set[int] = set()
    for seed in range(200):
        core = node(seed=seed)
        if candidate_first:
            make_candidate(core)
        term = core.term
        ticks = 0
        while core.term == term:
            core.tick()
            ticks += 1
        seen.add(ticks)
    assert min(seen) >= PAPER.election_ticks_min and max(seen) <= PAPER.election_ticks_max
    assert len(seen) >= (PAPER.election_ticks_max - PAPER.election_ticks_min) // 2


def test_5_2_usually_a_single_server_times_out_first() -> None:
    """§5.2: randomised timeouts spread the servers out "so that in most cases only a
    single server will time out.\""""
    conflicts = 0
    trials = 300
    for trial in range(trials):
        cores = [node(i, voters="abcde", seed=trial * 10 + k) for k, i in enumerate("abcde")]
        while True:
            for core in cores:
                core.tick()
            timed_out = [c for c in cores if c.role == CANDIDATE]
            if timed_out:
                conflicts += len(timed_out) > 1
                break
    assert conflicts / trials < 0.3


# ---------------------------------------------------------------------- §5.3 log replication


def leader_with_noop_committed() -> RaftCore:
    core = node()
    make_leader(core)
    ack_all(core, 1)
    assert core.commit == 1
    return core


def test_5_3_leader_appends_and_replicates_a_command() -> None:
    """§5.3: "The leader appends the command to its log as a new entry, then issues
    AppendEntries RPCs in parallel to each of the other servers to replicate the entry.\""""
    core = leader_with_noop_committed()
    term, index = core.propose([b"some data"])
    assert (term, index, core.last_index) == (1, 2, 2)
    apps = of_type(take(core), raft_pb2.MSG_APP)
    assert sorted(m.to for m in apps) == ["b", "c"]
    for m in apps:
        assert (m.index, m.log_term, m.commit) == (1, 1, 1)
        assert [(e.index, e.term, e.command) for e in m.entries] == [(2, 1, b"some data")]


def test_5_3_an_entry_replicated_on_a_majority_commits_and_followers_learn_it() -> None:
    """§5.3: "When the entry has been safely replicated, the leader applies the entry to
    its state machine [...] The leader keeps track of the highest index it knows to be
    committed, and it includes that index in future AppendEntries RPCs.\""""
    core = leader_with_noop_committed()
    core.propose([b"some data"])
    take(core)
    core.step(message(raft_pb2.MSG_APP_RESP, "b", "a", 1, index=2))
    assert core.commit == 2
    rd = core.ready()
    assert [e.command for e in rd.committed] == [b"some data"]
    assert {m.to: m.commit for m in of_type(rd.messages, raft_pb2.MSG_APP)} == {"b": 2, "c": 2}
    core.advance(rd)


@pytest.mark.parametrize(
    ("voters", "acks", "committed"),
    [(1, (), True), (3, (), False), (3, ("b",), True), (3, ("b", "c"), True), (5, (), False), (5, ("b",), False),
     (5, ("b", "c"), True), (5, ("b", "c", "d", "e"), True)],
)  # fmt: skip
def test_5_3_a_leader_commits_once_a_majority_holds_the_entry(
    voters: int, acks: tuple[str, ...], committed: bool
) -> None:
    """§5.3: "A log entry is committed once the leader that created the entry has
    replicated it on a majority of the servers." The leader counts itself only for entries
    it has persisted (§10.2.1 of the thesis)."""
    core = node(voters="abcde"[:voters])
    make_leader(core)
    for voter in "abcde"[1:voters]:
        core.step(message(raft_pb2.MSG_APP_RESP, voter, "a", 1, index=1))
    take(core)
    _, index = core.propose([b"x"])
    rd = core.ready()  # not persisted yet: the leader does not count itself
    for voter in acks:
        core.step(message(raft_pb2.MSG_APP_RESP, voter, "a", 1, index=index))
    assert (core.commit == index) == (len(acks) >= voters // 2 + 1)  # its own copy is not on disk yet
    core.advance(rd)
    take(core)
    assert (core.commit == index) == committed


def test_5_3_committing_an_entry_commits_all_preceding_ones() -> None:
    """§5.3: committing an entry "also commits all preceding entries in the leader's log,
    including entries created by previous leaders.\""""
    core = node(log=[1, 2], term=2)
    make_leader(core)
    assert core.last_index == 3 and core.term_at(3) == 3
    core.step(message(raft_pb2.MSG_APP_RESP, "b", "a", 3, index=3))
    assert core.commit == 3
    rd = core.ready()
    assert [(e.index, e.term) for e in rd.committed] == [(1, 1), (2, 2), (3, 3)]


def test_5_3_followers_commit_what_the_leader_committed() -> None:
    """§5.3: "Once a follower learns that a log entry is committed, it applies the entry
    to its local state machine (in log order).\""""
    core = node(term=1)
    core.step(message(raft_pb2.MSG_APP, "b", "a", 1, index=0, log_term=0, commit=1, entries=entries(1, 1, 1)))
    assert core.commit == 1  # the leader's commit, not the end of what arrived
    rd = core.ready()
    assert [e.index for e in rd.entries] == [1, 2, 3]
    assert [e.index for e in rd.committed] == [1]
    core.advance(rd)
    core.step(message(raft_pb2.MSG_APP, "b", "a", 1, index=3, log_term=1, commit=5))
    assert core.commit == 3  # never beyond the entries this append vouched for


@pytest.mark.parametrize(
    ("log_term", "index", "answer_index", "reject", "hint", "hint_term"),
    [
        (0, 0, 1, False, 0, 0),  # below the commit index: answered with it
        (1, 1, 1, False, 0, 0),
        (2, 2, 2, False, 0, 0),
        (1, 2, 2, True, 1, 1),  # the terms differ at 2: back up to the last entry of term <= 1
        (3, 3, 3, True, 2, 2),  # missing: back up to the end of the log
    ],
)
def test_5_3_follower_accepts_an_append_only_where_the_logs_match(
    log_term: int, index: int, answer_index: int, reject: bool, hint: int, hint_term: int
) -> None:
    """§5.3: "If the follower does not find an entry in its log with the same index and
    term, then it refuses the new entries." The rejection names where the leader should
    look next (the optimisation at the end of §5.3)."""
    core = node(log=[1, 2], term=2, commit=1)
    core.step(message(raft_pb2.MSG_APP, "b", "a", 2, index=index, log_term=log_term, commit=1))
    [answer] = take(core)
    assert answer.type == raft_pb2.MSG_APP_RESP
    assert (answer.index, answer.reject, answer.reject_hint, answer.log_term if reject else 0) == (
        answer_index,
        reject,
        hint,
        hint_term,
    )


@pytest.mark.parametrize(
    ("index", "log_term", "new", "expected"),
    [
        (2, 2, [(3, 3)], [1, 2, 3]),
        (1, 1, [(2, 3), (3, 4)], [1, 3, 4]),
        (0, 0, [(1, 1)], [1, 2]),
        (0, 0, [(1, 3)], [3]),
    ],
)
def test_5_3_follower_deletes_a_conflicting_suffix_and_appends(
    index: int, log_term: int, new: list[tuple[int, int]], expected: list[int]
) -> None:
    """§5.3: "If an existing entry conflicts with a new one (same index but different
    terms), delete the existing entry and all that follow it; append any new entries
    not already in the log.\""""
    core = node(log=[1, 2], term=3)
    sent = [e for i, t in new for e in entries(t, start=i)]
    core.step(message(raft_pb2.MSG_APP, "b", "a", 3, index=index, log_term=log_term, entries=sent))
    assert log_terms(core) == expected
    rd = core.ready()
    changed = [(i, t) for i, t in new if i > 2 or expected[i - 1] != [1, 2][i - 1]]
    assert [(e.index, e.term) for e in rd.entries] == changed


FIGURE_7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]


@pytest.mark.parametrize(
    "follower",
    [
        [1, 1, 1, 4, 4, 5, 5, 6, 6],  # (a) missing entries
        [1, 1, 1, 4],  # (b)
        [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],  # (c) extra uncommitted entries
        [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],  # (d)
        [1, 1, 1, 4, 4, 4, 4],  # (e) both
        [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],  # (f)
    ],
    ids="abcdef",
)
def test_5_3_figure_7_the_leader_brings_every_follower_log_into_line(follower: list[int]) -> None:
    """§5.3, Figure 7: whatever a follower's log holds, the leader of term 8 makes it
    identical to its own, overwriting what conflicts."""
    durable = {
        "a": Durable(hard_state=raft_pb2.HardState(term=7), entries=entries(*FIGURE_7_LEADER)),
        "b": Durable(hard_state=raft_pb2.HardState(term=7), entries=entries(*follower)),
        "c": Durable(hard_state=raft_pb2.HardState(term=7), entries=entries(*FIGURE_7_LEADER)),
    }
    net = Network("a", "b", "c", config=PAPER, durable=durable)
    net.elect("a")
    assert net.core("a").term == 8
    assert log_terms(net.core("b")) == [*FIGURE_7_LEADER, 8]
    assert net.core("b").commit == 11


# ---------------------------------------------------------------------- §5.4 safety


def test_5_4_1_a_candidate_sends_its_last_log_index_and_term() -> None:
    """§5.4.1: "The RequestVote RPC [...] includes information about the candidate's log."""
    core = node(log=[1, 1, 2], term=2)
    votes = of_type(make_candidate(core), raft_pb2.MSG_VOTE)
    assert {(m.to, m.term, m.index, m.log_term) for m in votes} == {("b", 3, 3, 2), ("c", 3, 3, 2)}


@pytest.mark.parametrize(
    ("log", "log_term", "index", "granted"),
    [
        ([1, 1], 1, 1, False),  # same last term, shorter
        ([1, 1], 1, 2, True),  # same last term, as long
        ([1, 1], 1, 3, True),
        ([1, 2], 1, 3, False),  # older last term, however long
        ([1, 2], 2, 2, True),
        ([1, 2], 3, 1, True),  # newer last term, however short
        ([2, 2], 1, 5, False),
    ],
)
def test_5_4_1_votes_go_only_to_candidates_whose_log_is_at_least_as_up_to_date(
    log: list[int], log_term: int, index: int, granted: bool
) -> None:
    """§5.4.1: "If the logs have last entries with different terms, then the log with
    the later term is more up-to-date. If the logs end with the same term, then
    whichever log is longer is more up-to-date.\""""
    core = node(log=log, term=2)
    core.step(message(raft_pb2.MSG_VOTE, "b", "a", 3, index=index, log_term=log_term))
    [answer] = take(core)
    assert answer.reject is not granted


@pytest.mark.parametrize(("acked", "commit"), [(1, 0), (2, 0), (3, 3)])
def test_5_4_2_only_entries_of_the_current_term_commit_by_counting_replicas(acked: int, commit: int) -> None:
    """§5.4.2: "Raft never commits log entries from previous terms by counting replicas.
    Only log entries from the leader's current term are committed by counting replicas.\""""
    core = node(log=[1, 2], term=2)
    make_leader(core)
    assert core.term == 3
    core.step(message(raft_pb2.MSG_APP_RESP, "b", "a", 3, index=acked))
    assert core.commit == commit


def test_5_4_2_figure_8_an_old_term_entry_on_a_majority_is_not_committed() -> None:
    """§5.4.2, Figure 8: S1 (term 4) gets its term-2 entry onto a majority. Had it counted
    that as committed, S5 could still be elected and overwrite it; Raft commits it only
    together with an entry of term 4."""
    ids = ("s1", "s2", "s3", "s4", "s5")
    logs = {"s1": [1, 2], "s2": [1, 2], "s3": [1], "s4": [1], "s5": [1, 3]}
    durable = {i: Durable(hard_state=raft_pb2.HardState(term=3, commit=1), entries=entries(*logs[i])) for i in ids}
    net = Network(*ids, config=PAPER, durable=durable)
    # (c) S1 leads term 4 and reaches S2 and S3 only, with the term-2 entry and no more.
    net.drop_types.add(raft_pb2.MSG_APP)
    net.elect("s1")
    s1 = net.core("s1")
    assert (s1.term, s1.last_index) == (4, 3)
    s1.step(message(raft_pb2.MSG_APP_RESP, "s2", "s1", 4, index=2))
    s1.step(message(raft_pb2.MSG_APP_RESP, "s3", "s1", 4, index=2))
    assert s1.commit == 1  # on a majority, yet not committed
    # (d) S1 crashes; S5, whose last term 3 beats theirs, wins and overwrites index 2.
    net.crash("s1")
    net.recover()
    net.elect("s5")
    assert [net.core(i).term_at(2) for i in ("s2", "s3", "s4", "s5")] == [3, 3, 3, 3]
    assert all(net.core(i).commit >= 2 for i in ("s2", "s3", "s4", "s5"))


def test_5_4_2_figure_8_with_a_current_term_entry_the_old_one_commits_and_survives() -> None:
    """§5.4.2, Figure 8 (e): once S1's term-4 entry is on a majority too, both commit, and
    S5 can no longer win."""
    ids = ("s1", "s2", "s3", "s4", "s5")
    logs = {"s1": [1, 2], "s2": [1, 2], "s3": [1], "s4": [1], "s5": [1, 3]}
    durable = {i: Durable(hard_state=raft_pb2.HardState(term=3, commit=1), entries=entries(*logs[i])) for i in ids}
    net = Network(*ids, config=PAPER, durable=durable)
    net.cut("s1", "s4")
    net.cut("s1", "s5")
    net.elect("s1")
    s1 = net.core("s1")
    assert s1.commit == 3 and s1.term_at(2) == 2
    net.crash("s1")
    net.recover()
    net.core("s5").campaign()
    net.stabilize()
    assert net.core("s5").role != LEADER
    assert all(net.core(i).term_at(2) == 2 for i in ("s2", "s3"))


# ---------------------------------------------------------------------- §5.5, §8


def test_5_5_a_crashed_follower_catches_up_when_it_returns() -> None:
    """§5.5: "If a follower or candidate crashes, then future RequestVote and
    AppendEntries RPCs sent to it will fail. Raft handles these failures by retrying
    indefinitely.\""""
    net = Network("a", "b", "c", config=PAPER)
    net.elect("a")
    net.crash("c")
    for n in range(5):
        net.propose("a", f"cmd-{n}".encode())
    assert net.core("a").commit == 6
    net.start("c")
    net.tick(PAPER.heartbeat_ticks, only="a")
    assert net.core("c").commit == 6
    assert net.peers["c"].commands == [f"cmd-{n}".encode() for n in range(5)]


def test_8_a_new_leader_appends_an_empty_entry_of_its_term() -> None:
    """§8: "each leader commit a blank no-op entry into the log at the start of its
    term", which also commits whatever earlier leaders left (§5.4.2)."""
    core = node(log=[1, 1], term=1)
    make_leader(core)
    noop = core._log.entry(3)
    assert noop is not None
    assert (noop.term, noop.type, noop.command) == (2, 0, b"")


def test_5_3_log_matching_holds_across_a_cluster_after_replication() -> None:
    """§5.3 Log Matching: "If two entries in different logs have the same index and
    term, then the logs are identical in all preceding entries.\""""
    net = Network("a", "b", "c", "d", "e", config=PAPER)
    net.elect("a")
    net.propose("a", b"1", b"2")
    net.isolate("a")
    net.propose("a", b"lost")
    net.recover()
    net.crash("a")
    net.elect("b")
    net.propose("b", b"3")
    net.start("a")
    net.tick(1, only="b")
    logs = [[(i, net.core(n).term_at(i)) for i in range(1, net.core(n).last_index + 1)] for n in "abcde"]
    assert all(log == logs[1] for log in logs)
    assert net.peers["a"].commands == [b"1", b"2", b"3"]
