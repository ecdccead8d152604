"""Task updates and results pushed by the coordinator (`/ws`, channels `task_updates` and
`results`), so that a run reads a task when it changed instead of reading every open task
many times a second, and takes in each test's result as it is committed, while its batch
still runs, with what the batch printed before it when the run has live output (`-s`).

Best effort: the coordinator drops updates for a client that reads too slowly, and a
connection can fail, drop or come late (it is made in the background, so the run does
not wait for it, and made again after a failure). The runner therefore reads every
open task while not `connected`, and every open task now and then after
(`Execution.poll_once`); the updates only make it react at once.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

log = logging.getLogger("dtf.run.runner")

CONNECT_TIMEOUT_S = 3.0
# After a failed or dropped connection, the next try.
RECONNECT_S = 0.5


class TaskWatcher:
    def __init__(self, api_url: str, token: str) -> None:
        self._changed: set[str] = set()
        self._results: dict[str, list[dict[str, Any]]] = {}
        self._output: list[tuple[str, str, str]] = []  # (task id, stdout, stderr), in order
        self._received: dict[str, set[str]] = {}  # result ids, so a result committed twice counts once
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._socket: Any = None
        self._closed = threading.Event()
        self._subscribed = threading.Event()
        self.connected = False
        self._thread = threading.Thread(
            target=self._listen, args=(_ws_url(api_url, token),), name="dtf-run-watch", daemon=True
        )
        self._thread.start()

    def _listen(self, url: str) -> None:
        """Follow the channels until closed; a connection that fails or drops is made again
        (what was pushed meanwhile is lost: the runner reads it from the store)."""
        while not self._closed.is_set():
            try:
                self._follow(url)
            except Exception as exc:  # any failure: the runner polls until the next connection
                log.debug("no task updates from the coordinator (%s); polling", exc)
            finally:
                self.connected = False
                self._socket = None
                self._event.set()
            self._closed.wait(RECONNECT_S)

    def _follow(self, url: str) -> None:
        from websockets.sync.client import connect

        with connect(url, open_timeout=CONNECT_TIMEOUT_S, max_size=None) as socket:
            for channel in ("task_updates", "results"):
                socket.send(json.dumps({"type": "subscribe", "channel": channel}))
                reply = json.loads(socket.recv(timeout=CONNECT_TIMEOUT_S))
                if reply.get("type") != "subscribed":
                    raise ValueError(f"subscription refused: {reply}")
            self._socket = socket
            self.connected = True
            self._subscribed.set()
            for raw in socket:
                message = json.loads(raw)
                task_id = str(message.get("task_id") or "")
                if not task_id:
                    continue
                with self._lock:
                    if message.get("type") == "task_update":
                        self._changed.add(task_id)
                    elif message.get("type") == "results":
                        rows = list(message.get("results") or [])
                        self._results.setdefault(task_id, []).extend(rows)
                        self._received.setdefault(task_id, set()).update(str(r.get("result_id")) for r in rows)
                    elif message.get("type") == "task_output":
                        self._output.append(
                            (task_id, str(message.get("stdout") or ""), str(message.get("stderr") or ""))
                        )
                self._event.set()

    def wait_connected(self, timeout: float) -> bool:
        """Wait until the channels are subscribed (at most `timeout` s): output pushed
        before then is never seen again, as pushes are not stored."""
        return self._subscribed.wait(timeout)

    def wait(self, timeout: float) -> set[str]:
        """The tasks that changed since the last call, waiting up to `timeout` seconds for one."""
        self._event.wait(timeout)
        with self._lock:
            changed, self._changed = self._changed, set()
            self._event.clear()
        return changed

    def take_results(self) -> dict[str, list[dict[str, Any]]]:
        """The results pushed since the last call, by task, in the order they came."""
        with self._lock:
            results, self._results = self._results, {}
        return results

    def take(self) -> tuple[list[tuple[str, str, str]], dict[str, list[dict[str, Any]]]]:
        """The live output pushed since the last call, as (task id, stdout, stderr) in the
        order it came, and the results, as `take_results`: both at once, so that output
        printed before a test's result is never read after it."""
        with self._lock:
            output, self._output = self._output, []
            results, self._results = self._results, {}
        return output, results

    def received(self, task_id: str) -> int:
        """How many results of `task_id` have been pushed so far (taken or not); -1 while
        nothing is pushed (no connection)."""
        if not self.connected:
            return -1
        with self._lock:
            return len(self._received.get(task_id, ()))

    def wake(self) -> None:
        """End a `wait` early: something else the runner follows has changed."""
        self._event.set()

    def close(self) -> None:
        self._closed.set()
        socket = self._socket
        if socket is not None:
            try:
                socket.close()
            except Exception as exc:
                log.debug("closing the task updates: %s", exc)
        self._thread.join(CONNECT_TIMEOUT_S)


def _ws_url(api_url: str, token: str) -> str:
    parts = urlsplit(api_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/") + "/ws"
    return urlunsplit((scheme, parts.netloc, path, f"token={quote(token)}", ""))
