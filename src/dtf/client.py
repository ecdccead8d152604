"""A small REST client for a dtf coordinator (used by the CLI, the demo and scripts)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from dtf.connection import read_connection
from dtf_common import errors
from dtf_common.http_errors import error_from_problem


def needs_certificates(urls: list[str]) -> bool:
    """Whether a client of `urls` needs the CA certificates: not for plain HTTP (a local
    cluster), where loading them was most of creating the client (0.07 s of every command)."""
    return not all(url.startswith("http://") for url in urls)


class DtfClient:
    """Talks to one coordinator; with `fallback_urls` (the other members of an HA
    cluster) a coordinator that cannot be reached makes it move on to the next. Any
    member serves reads and forwards writes to the leader."""

    def __init__(
        self, api_url: str, token: str, *, timeout: float = 30.0, fallback_urls: list[str] | None = None
    ) -> None:
        self.urls = list(dict.fromkeys(u.rstrip("/") for u in [api_url, *(fallback_urls or [])]))
        self.api_url = self.urls[0]
        self._http = httpx.Client(
            base_url=self.api_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            verify=needs_certificates(self.urls),
        )

    @classmethod
    def from_connection(cls, path: str | Path) -> DtfClient:
        """From the `connection.json` that `dtf up` writes."""
        try:
            info = read_connection(Path(path))
        except FileNotFoundError:
            raise errors.NotFound(
                f"{path} not found: start a local cluster with `dtf up` or pass --api-url and --token",
                field="connection",
            ) from None
        others = [c["api_url"] for c in info.get("coordinators", []) if c.get("api_url") != info["api_url"]]
        return cls(info["api_url"], info["admin_token"], fallback_urls=others)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DtfClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        tried = 0
        while True:
            try:
                return self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                # A write is retried elsewhere only when it never left (connection refused).
                retryable = method == "GET" or isinstance(exc, httpx.ConnectError)
                tried += 1
                if not retryable or tried >= len(self.urls):
                    raise errors.Unavailable(f"cannot reach the coordinator at {self.api_url}: {exc}") from None
                self.api_url = self.urls[(self.urls.index(self.api_url) + 1) % len(self.urls)]
                self._http.base_url = httpx.URL(self.api_url)

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        if response.is_success:
            return response.json() if response.content else None
        try:
            problem = response.json()
        except ValueError:
            problem = None
        raise error_from_problem(response.status_code, problem, fallback=response.text)

    # tasks
    def submit(self, tasks: list[dict[str, Any]] | dict[str, Any]) -> list[str]:
        ids: list[str] = self._request("POST", "/api/tasks", json=tasks)["task_ids"]
        return ids

    def task(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/api/tasks/{task_id}")
        return result

    def tasks(self, **filters: Any) -> dict[str, Any]:
        params = {k: v for k, v in filters.items() if v is not None}
        page: dict[str, Any] = self._request("GET", "/api/tasks", params=params)
        return page

    def cancel(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", f"/api/tasks/{task_id}/cancel")
        return result

    # workers, results, status
    def workers(self) -> list[dict[str, Any]]:
        data = self._request("GET", "/api/workers")
        return list(data["data"] if isinstance(data, dict) else data)

    def results(self, **filters: Any) -> dict[str, Any]:
        params = {k: v for k, v in filters.items() if v is not None}
        page: dict[str, Any] = self._request("GET", "/api/results", params=params)
        return page

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/api/status")
        return result

    def durations(self, test_ids: list[str], *, hardware_id: str | None = None) -> dict[str, float]:
        """Recorded seconds per test id (median of its last runs); tests never run are absent."""
        body: dict[str, Any] = {"test_ids": test_ids}
        if hardware_id is not None:
            body["hardware_id"] = hardware_id
        found: dict[str, float] = self._request("POST", "/api/results/durations", json=body)["durations"]
        return found

    def all_results(self, **filters: Any) -> list[dict[str, Any]]:
        """Every result matching the filters, page by page."""
        rows: list[dict[str, Any]] = []
        while True:
            page = self.results(**filters, offset=len(rows), limit=1000)
            rows.extend(page["data"])
            if not page["data"] or len(rows) >= page["count"]:
                return rows

    def upload_blob(self, sha256: str, path: str | Path) -> bool:
        """Store the file at `path` on the coordinator as blob `sha256` (a project snapshot
        from `dtf.run.snapshot.build_snapshot`). Asks first (HEAD) and sends the file,
        streamed, only when the coordinator lacks it; returns whether it was sent."""
        try:
            head = self._http.head(f"/api/blobs/{sha256}")
        except httpx.TransportError as exc:
            raise errors.Unavailable(f"cannot reach the coordinator at {self.api_url}: {exc}") from None
        if head.status_code == 200:
            return False
        if head.status_code != 404:
            # A HEAD answer has no body: its status alone says what went wrong.
            raise error_from_problem(
                head.status_code, None, fallback=f"HEAD /api/blobs/{sha256}: HTTP {head.status_code}", field="sha256"
            )
        file = Path(path)
        with file.open("rb") as data:
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(file.stat().st_size)}
            self._request("PUT", f"/api/blobs/{sha256}", content=_chunks(data), headers=headers, timeout=None)
        return True


def _chunks(data: Any, size: int = 1024 * 1024) -> Iterator[bytes]:
    while chunk := data.read(size):
        yield chunk
