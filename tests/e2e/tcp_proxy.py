"""TCP forwarders that the fault tests can cut and mend while the cluster runs.

`ProxyNet` places one forwarding listener on each directed link `(src, dst)` between
coordinators: `src` is configured to reach `dst`'s Raft port through that listener and
through nothing else. A coordinator sends its Raft messages (appends, votes, snapshots,
forwarded writes) only over connections it opens itself, and the answers it waits for
come back as messages over the other node's connections, so blocking the link
`(src, dst)` stops exactly what `src` says to `dst`: the direction of a one-way
partition.

Blocking a link aborts its open connections (both halves, at once) and closes any new
one as soon as it is accepted, as a host that refuses connections would. Unblocking lets
new connections through; gRPC reconnects within its backoff (at most a second in the
Raft transport). The forwarders run on an asyncio loop in a thread of the test process;
every method of `ProxyNet` may be called from the test's own thread and returns once
the change is in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
HOST = "127.0.0.1"
CHUNK = 64 * 1024


@dataclass
class Link:
    """One directed link: a listener forwarding every connection to `target_port`."""

    src: str
    dst: str
    target_port: int
    port: int = 0
    blocked: bool = False
    accepted: int = 0  # connections let through
    refused: int = 0  # connections closed because the link was blocked
    forwarded: int = 0  # bytes carried from src to dst
    server: asyncio.Server | None = None
    conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = field(default_factory=set)

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.blocked:
            self.refused += 1
            client_writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(HOST, self.target_port)
        except OSError:
            client_writer.transport.abort()  # the node behind the link is down: so is the link
            return
        if self.blocked:  # blocked while connecting
            self.refused += 1
            client_writer.transport.abort()
            upstream_writer.transport.abort()
            return
        self.accepted += 1
        pair = (client_writer, upstream_writer)
        self.conns.add(pair)
        try:
            await asyncio.gather(
                self._pump(client_reader, upstream_writer, count=True),
                self._pump(upstream_reader, client_writer, count=False),
            )
        finally:
            self.conns.discard(pair)
            for writer in pair:
                writer.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, count: bool) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(CHUNK):
                if count:
                    self.forwarded += len(data)
                writer.write(data)
                await writer.drain()
        # One side ended or broke: end the whole connection, as a cut cable would.
        writer.transport.abort()

    def cut(self) -> None:
        self.blocked = True
        for pair in list(self.conns):
            for writer in pair:
                writer.transport.abort()


class ProxyNet:
    """The directed links between a set of nodes, cut and mended by name."""

    def __init__(self) -> None:
        self.links: dict[tuple[str, str], Link] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._thread.start()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def add(self, src: str, dst: str, target_port: int) -> int:
        """A listener for what `src` sends to `dst`, whose Raft port is `target_port`; returns its port."""

        async def listen() -> int:
            link = Link(src, dst, target_port)
            link.server = await asyncio.start_server(link.handle, HOST, 0)
            link.port = link.server.sockets[0].getsockname()[1]
            self.links[(src, dst)] = link
            return link.port

        return self._run(listen())

    def port(self, src: str, dst: str) -> int:
        return self.links[(src, dst)].port

    @property
    def nodes(self) -> list[str]:
        return sorted({n for pair in self.links for n in pair})

    def _set(self, pairs: Iterable[tuple[str, str]], blocked: bool) -> None:
        async def apply() -> None:
            for pair in pairs:
                link = self.links[pair]
                if blocked:
                    link.cut()
                else:
                    link.blocked = False

        self._run(apply())

    def block(self, src: str, dst: str) -> None:
        """`src` can no longer send to `dst` (what `dst` sends to `src` still arrives)."""
        self._set([(src, dst)], True)

    def unblock(self, src: str, dst: str) -> None:
        self._set([(src, dst)], False)

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every link between different groups (in both directions); a node named in
        no group is alone in one of its own. Links inside a group are left as they are."""
        side: dict[str, int] = {}
        for n, group in enumerate(groups):
            for node in group:
                side[node] = n
        for node in self.nodes:
            side.setdefault(node, -1 - len(side))
        self._set([pair for pair in self.links if side[pair[0]] != side[pair[1]]], True)

    def isolate(self, node: str) -> None:
        """Cut `node` off from every other node, both ways."""
        self._set([pair for pair in self.links if node in pair], True)

    def heal(self) -> None:
        """Mend every link."""
        self._set(list(self.links), False)

    def blocked(self) -> list[tuple[str, str]]:
        return sorted(pair for pair, link in self.links.items() if link.blocked)

    def close(self) -> None:
        async def shutdown() -> None:
            for link in self.links.values():
                link.cut()
                if link.server is not None:
                    link.server.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        with contextlib.suppress(Exception):
            self._run(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()
