"""The port between the service layer and consensus."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from dtf_common.pb.dtf.v1 import commands_pb2
from dtf_coordinator.state import Effect, Outcome, StateMachine

EffectSink = Callable[[list[Effect]], None]


class Consensus(Protocol):
    """Turns proposed commands into applied, durable outcomes.

    `propose` stamps the leader's time into the command, makes it durable (fsynced on a
    majority; on the one node when alone), applies it and returns the outcome. Effects
    of every applied batch go to the sink given to `start`, in log order.
    """

    node_id: str
    state: StateMachine

    async def start(self, sink: EffectSink) -> None: ...

    async def stop(self) -> None: ...

    async def propose(self, command: commands_pb2.Command) -> Outcome: ...

    def is_leader(self) -> bool: ...

    def leader_hint(self) -> str | None: ...
