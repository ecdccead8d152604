"""`dtf run -n N`: collect once, run planned batches on a cluster, report like pytest.

The flow: find the cluster (a remote coordinator given by URL, a live local cluster in
the data directory, or a coordinator and N workers started for the run) and, at the same
time, collect the node ids on the client (a `pytest --collect-only` subprocess). When the
same command was collected before and nothing its collection depends on changed
(`dtf.run.collection_cache`), the batches of that collection start at once instead.
When they all name whole files, the workers' pytest confirms the prediction as it runs
them (`Execution._confirm`), and the client collects only if they cannot; otherwise
pytest collects on the client at once and the run checks the collection against the
batches (`Execution.verify`).
Then: ask the coordinator for recorded durations, plan batches (longest first), submit
each batch as one `pytest` task, follow the tasks and read each finished task's results
from the results store. At the end the tests with a result must be exactly the collected
ones (fail closed).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dtf.run.args import batch_pytest_args
from dtf.run.cluster import (
    LIVE_WORKER,
    Launched,
    Target,
    find_target,
    live_cluster,
    live_workers,
    ship_snapshot,
    wait_for_workers,
)
from dtf.run.collect import Collection, CollectionError, PendingCollection
from dtf.run.collection_cache import CollectionCache, command_key
from dtf.run.config import RunConfig
from dtf.run.execution import Client, Execution
from dtf.run.plan import Batch, estimate_durations, plan
from dtf.run.report import EXIT_INTERRUPTED, EXIT_NO_TESTS, counts, exit_code, write_junit, write_report
from dtf.run.warm_pytest import WarmPytest
from dtf.run.watch import TaskWatcher

__all__ = ["RunConfig", "batch_pytest_args", "live_cluster", "live_workers", "run"]

log = logging.getLogger(__name__)

# With task updates pushed by the coordinator, every open task is still read this often.
FULL_POLL_S = 1.0


class NothingCollected(Exception):
    """The collection selected no test: the run ends with pytest's exit code 5."""


def _progress_text(execution: Execution) -> str:
    tally = counts(execution.outcomes.values())
    failed = tally["failed"] + tally["error"]
    return (
        f"[green]{tally['passed']} passed[/] [red]{failed} failed[/] [yellow]{tally['skipped']} skipped[/] "
        f"{execution.running_tests()} running  ETA {execution.eta_s():.0f}s"
    )


def recorded_durations(client: Client, node_ids: Sequence[str], hardware_ids: Sequence[str]) -> dict[str, float]:
    """Recorded seconds per test: on the hardware classes of the run's workers where the
    store has them (the mean over those classes, when there are several), else on any."""
    by_class = [client.durations(list(node_ids), hardware_id=h) for h in hardware_ids]
    found: dict[str, float] = {}
    for node_id in node_ids:
        seen = [d[node_id] for d in by_class if node_id in d]
        if seen:
            found[node_id] = sum(seen) / len(seen)
    rest = [n for n in node_ids if n not in found]
    if rest:
        found.update(client.durations(rest))
    return found


def hardware_classes(client: Client) -> list[str]:
    """The hardware classes of the cluster's live workers (none while no worker has registered)."""
    live = [w for w in client.workers() if w.get("status") in LIVE_WORKER]
    return sorted({str(w["hardware_id"]) for w in live if w.get("hardware_id")})


class Run:
    """One `dtf run` against its cluster, from the first plan to the last result."""

    def __init__(self, config: RunConfig, client: Client, console: Console, n_workers: int) -> None:
        self.config = config
        self.client = client
        self.console = console
        self.n_workers = n_workers
        self.hardware_ids = hardware_classes(client)

    def plan(
        self, node_ids: Sequence[str], *, announce: str | None = None
    ) -> tuple[list[Batch], dict[str, float], set[str]]:
        """Batches for `node_ids`, the estimates they were planned on, and the tests whose
        estimate is a guess; with `announce` (where the run goes), say what is known."""
        known = recorded_durations(self.client, node_ids, self.hardware_ids)
        if announce is not None:
            self.console.print(
                f"dtf run: {len(node_ids)} tests, {len(known)} with recorded durations, "
                f"{len(node_ids) - len(known)} estimated; {self.n_workers} workers{announce}",
                highlight=False,
                soft_wrap=True,
            )
        estimates = estimate_durations(node_ids, known)
        batches = plan(
            estimates,
            self.n_workers,
            startup_s=self.config.batch_startup_s,
            per_test_s=self.config.per_test_s,
            recorded=known.keys(),
        )
        return batches, estimates, {n for n in node_ids if n not in known}

    def follow(
        self,
        execution: Execution,
        pending: PendingCollection | None,
        on_collected: Callable[[Collection], None],
        watcher: TaskWatcher | None = None,
    ) -> None:
        """Follow the batches until every one has ended and the collection, if still
        running, is in: read the tasks the coordinator says changed, and every open task
        each FULL_POLL_S; without task updates, every open task each `poll_s`."""
        columns = (
            TextColumn("[bold]dtf run"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=self.console, transient=True) as progress:
            bar = progress.add_task("tests", total=len(execution.order), counts="")
            polled_all = time.monotonic()
            watched = False  # whether the last pass already had task updates (else: read every task)
            while True:
                execution.take_results()
                if not execution.verified and pending is not None:
                    if not pending.started and (execution.needs_collection or not execution.open):
                        log.info("the workers could not confirm the prediction; pytest collects")
                        pending.start()
                    if pending.done():
                        on_collected(pending.result())
                        progress.update(bar, total=len(execution.order))
                if execution.done and execution.verified:
                    return
                if watcher is not None and watcher.connected:
                    changed = watcher.wait(self.config.poll_s)
                    if time.monotonic() - polled_all >= FULL_POLL_S or not watched:
                        execution.poll_once()
                        polled_all = time.monotonic()
                    elif changed:
                        execution.poll_once(only=changed)
                    watched = True
                else:
                    execution.poll_once()
                    watched = False
                    time.sleep(self.config.poll_s)
                progress.update(bar, completed=len(execution.outcomes), counts=_progress_text(execution))


def run(
    config: RunConfig,
    *,
    out: TextIO,
    console: Console,
    start: Target | Launched | None = None,
    warm: WarmPytest | None = None,
) -> int:
    """The whole of `dtf run`; returns pytest's exit code. `start`: where the run goes when
    the caller found it already, or the cluster it launched for the run (see `find_target`).
    `warm`: the run's warm pytest server (see `dtf.run.warm_pytest`), to collect in."""
    from dtf.client import DtfClient

    started = time.monotonic()
    started_wall = time.time()
    cache = CollectionCache(config.data_dir)
    key = command_key(config.cwd, config.pytest_args)
    predicted = cache.load(key) if config.predict else None
    # With a prediction, whether the client collects at all is decided once it is planned.
    if warm is None:
        warm = WarmPytest.find(config.cwd, batch_pytest_args(config.pytest_args))
    pending = PendingCollection(config.pytest_args, config.cwd, start=predicted is None, warm=warm)
    fresh_data_dir = start.fresh_data_dir if isinstance(start, Launched) else not config.data_dir.exists()
    target: Target | None = None
    execution: Execution | None = None
    collection: Collection | None = None
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="dtf-run-cluster") as pool:
            finding = pool.submit(find_target, config, console, start)
            try:
                if predicted is None:
                    collection = _collected(pending)
                    cache.store(key, collection)
                target = finding.result()
            except BaseException:
                target = _abandon(finding, config, fresh_data_dir)
                raise
        log.info("%s cluster at %s, %.2fs after start", target.kind, target.api_url, time.monotonic() - started)
        with (
            DtfClient(target.api_url, target.token) as client,
            contextlib.closing(TaskWatcher(target.api_url, target.token)) as watcher,
        ):
            n_workers = config.workers if target.kind == "started" else wait_for_workers(client)
            shipped = config.snapshot if config.snapshot is not None else target.kind == "remote"
            snapshot = ship_snapshot(config, client, console) if shipped else None
            runner = Run(config, client, console, n_workers)
            source = collection if collection is not None else predicted
            assert source is not None
            node_ids = list(dict.fromkeys(source.node_ids))
            where = {"started": "", "warm": " (running cluster)", "remote": f" at {target.api_url}"}[target.kind]
            batches, estimates, guessed = runner.plan(node_ids, announce=where)
            execution = Execution(
                client,
                config,
                {n: i for i, n in enumerate(node_ids)},
                estimates,
                arguments=dict(source.arguments),
                verified=collection is not None,
                guessed=guessed,
                started=started,
                started_wall=started_wall,
                n_workers=n_workers,
                snapshot=snapshot,
            )
            if collection is None:
                execution.confirming = execution.names_whole_files(batches)
                if not execution.confirming:
                    pending.start()
                log.info(
                    "running the last collection of this command; %s",
                    "the workers confirm it" if execution.confirming else "pytest collects again",
                )

            def on_collected(collected: Collection) -> None:
                assert execution is not None
                if not collected.node_ids:
                    raise NothingCollected
                cache.store(key, collected)
                todo = execution.verify(collected.node_ids, collected.arguments)
                if todo:
                    more, estimates, guessed = runner.plan(todo)
                    execution.estimates.update(estimates)
                    execution.guessed |= guessed
                    execution.submit(more)

            reader = ThreadPoolExecutor(4, thread_name_prefix="dtf-run-results")
            execution.reader, execution.on_read = reader, watcher.wake
            try:
                execution.submit(batches)
                runner.follow(execution, None if collection is not None else pending, on_collected, watcher)
            except BaseException:
                execution.cancel_open()  # so the workers stop promptly
                raise
            finally:
                reader.shutdown(wait=False, cancel_futures=True)
            log.info(
                "first batch leased %s, first test started %s, all finished %.2fs after start",
                _seconds(execution.first_leased_s),
                _seconds(execution.first_test_s),
                time.monotonic() - started,
            )
    except CollectionError as exc:
        out.write(exc.output)
        return exc.exit_code
    except NothingCollected:
        out.write("dtf run: no tests collected\n")
        return EXIT_NO_TESTS
    except KeyboardInterrupt:
        out.write("dtf run: interrupted\n")
        return EXIT_INTERRUPTED
    finally:
        pending.cancel()
        if target is not None and target.cluster is not None:
            if config.keep and execution is not None:
                console.print(
                    f"dtf run: the cluster keeps running; stop it with `dtf down --data-dir {config.data_dir}`",
                    highlight=False,
                    soft_wrap=True,
                )
            else:
                with console.status("stopping the local cluster"):
                    target.cluster.stop()
                if execution is None and fresh_data_dir:
                    shutil.rmtree(config.data_dir, ignore_errors=True)  # nothing ran: leave nothing behind

    elapsed = time.monotonic() - started
    node_ids = list(execution.order)
    outcomes = [execution.outcomes[n] for n in node_ids if n in execution.outcomes]
    missing = [n for n in node_ids if n not in execution.outcomes]
    width = console.width if out.isatty() else 80
    write_report(
        out, outcomes, missing, elapsed, width=width, attempts=execution.attempts, why_missing=execution.why_missing
    )
    if config.junitxml is not None:
        write_junit(config.junitxml, outcomes, missing, elapsed, attempts=execution.attempts)
    return exit_code(outcomes, missing)


def _collected(pending: PendingCollection) -> Collection:
    collection = pending.result()
    if not collection.node_ids:
        raise NothingCollected
    return collection


def _abandon(finding: Future[Target], config: RunConfig, fresh_data_dir: bool) -> Target | None:
    """The run ends before it used its cluster: wait for the cluster search to end and
    return what it found, so the caller stops a cluster it started."""
    try:
        return finding.result()
    except BaseException:
        if fresh_data_dir:
            shutil.rmtree(config.data_dir, ignore_errors=True)
        return None


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"
