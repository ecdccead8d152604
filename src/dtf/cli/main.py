"""`dtf`: run coordinators and workers, start a local cluster, submit and inspect work."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dtf.cli.certs import add_certs_parser
from dtf_common.errors import DtfError

DEFAULT_CONNECTION = "dtf-data/connection.json"


def _client(args: argparse.Namespace) -> Any:
    from dtf.client import DtfClient

    url = args.api_url or os.environ.get("DTF_API_URL")
    token = args.token or os.environ.get("DTF_TOKEN")
    if url and token:
        return DtfClient(url, token)
    return DtfClient.from_connection(args.connection or os.environ.get("DTF_CONNECTION") or DEFAULT_CONNECTION)


def _add_client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--connection", help=f"connection.json written by `dtf up` (default {DEFAULT_CONNECTION})")
    p.add_argument("--api-url", help="coordinator REST URL (with --token; env DTF_API_URL)")
    p.add_argument("--token", help="bearer token (env DTF_TOKEN)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# ---------------------------------------------------------------- servers


def cmd_coordinator(args: argparse.Namespace) -> int:
    from dtf_coordinator.runtime import main

    _logging(args.verbose)
    main(args.config)
    # Stopped cleanly: the log is synced and the store closed. Tearing down the interpreter
    # (gRPC, DuckDB, pandas) would take another half second for nothing.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def cmd_worker(args: argparse.Namespace) -> int:
    from dtf_worker.daemon import main

    _logging(args.verbose)
    code = main(args.config)
    if code == 0:
        # Stopped cleanly: outcomes delivered or spooled durably, leases handed back.
        # Tearing down the interpreter would add 0.1 s to every local cluster's stop.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return code


def cmd_up(args: argparse.Namespace) -> int:
    from rich.console import Console

    from dtf.local_cluster import LocalCluster

    console = Console(stderr=True)
    labels = dict(kv.split("=", 1) for kv in args.label or [])
    if args.coordinators < 1 or args.coordinators % 2 == 0:
        console.print("dtf up: --coordinators must be 1, 3 or 5 (Raft needs a majority of an odd number)")
        return 2
    cluster = LocalCluster(
        Path(args.data_dir),
        workers=args.workers,
        concurrency=args.concurrency,
        port=args.port,
        grpc_port=args.grpc_port,
        labels=labels,
        coordinators=args.coordinators,
    )
    stop = False

    def on_signal(_sig: int, _frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with console.status("starting coordinator and workers"):
        info = cluster.start()
    console.print(f"[bold green]dtf is up[/]: API {info['api_url']} (Swagger UI at {info['api_url']}/docs)")
    if args.coordinators > 1:
        status_url = f"{info['api_url']}/api/cluster/status"
        console.print(f"  coordinators: {args.coordinators} (Raft over mutual TLS), status at {status_url}")
    console.print(f"  workers: {args.workers} x {args.concurrency} slot(s), gRPC {info['grpc_address']}")
    console.print(f"  connection: {cluster.dir / 'connection.json'}  (admin token inside)")
    console.print("  stop with Ctrl-C")
    try:
        while not stop:
            for name in cluster.supervise_once():
                console.print(f"[yellow]restarted {name}[/]")
            time.sleep(0.2)
    finally:
        with console.status("stopping"):
            cluster.stop()
    return 0


# ---------------------------------------------------------------- tokens

DEFAULT_TOKEN_EXPIRY_S = 86400


def cmd_token_create(args: argparse.Namespace) -> int:
    from dtf_common.config import CoordinatorConfig, load_config
    from dtf_common.tokens import create_token

    config = load_config(CoordinatorConfig, args.config) if args.config else None
    secret = _read_secret(args.secret_file) if args.secret_file else os.environ.get("JWT_SECRET")
    if not secret:
        if config is not None:
            secret = config.security.jwt_secret
        elif args.data_dir and (Path(args.data_dir) / "secret").exists():
            secret = (Path(args.data_dir) / "secret").read_text().strip()
    if not secret:
        raise DtfError("no secret: pass --config, --data-dir, --secret-file or set JWT_SECRET", field="secret")
    expires_in = args.expires_in
    if expires_in is None:  # the configuration's security.token_expiry, else a day
        expires_in = config.security.token_expiry if config is not None else DEFAULT_TOKEN_EXPIRY_S
    print(create_token(secret, args.role, subject=args.subject, expires_in=expires_in))
    return 0


def _read_secret(path: str) -> str:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise DtfError(f"cannot read the secret from {path}: {exc.strerror}", field="secret_file") from None
    if not text.strip():
        raise DtfError(f"{path} holds no secret", field="secret_file")
    return text.strip()


# ---------------------------------------------------------------- submit


def _task_common(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"priority": args.priority, "max_retries": args.retries}
    if args.timeout:
        body["timeout"] = args.timeout
    requirements: dict[str, Any] = {}
    if args.requires:
        requirements["hardware"] = args.requires
    if args.gpus:
        requirements["min_gpus"] = args.gpus
    if args.label:
        requirements["labels"] = dict(kv.split("=", 1) for kv in args.label)
    if requirements:
        body["requirements"] = requirements
    return body


def cmd_submit(args: argparse.Namespace) -> int:
    from dtf.taskfile import load_taskfile

    kind = args.kind
    rest = list(args.rest or [])
    if kind == "file":
        if len(rest) != 1:
            raise DtfError("usage: dtf submit file TASKS.yaml", field="file")
        bodies = load_taskfile(rest[0])
    elif kind == "command":
        if not rest:
            raise DtfError("usage: dtf submit command -- CMD [ARGS...]", field="command")
        bodies = [{**_task_common(args), "type": "command", "parameters": {"command": rest, "cwd": os.getcwd()}}]
    elif kind == "pytest":
        bodies = [{**_task_common(args), "type": "pytest", "parameters": {"args": rest, "cwd": os.getcwd()}}]
    else:  # benchmark
        if len(rest) != 1:
            raise DtfError("usage: dtf submit benchmark MODULE:FUNCTION", field="entry")
        params = {"entry": rest[0], "repetitions": args.repetitions, "warmup": args.warmup, "cwd": os.getcwd()}
        bodies = [{**_task_common(args), "type": "benchmark", "parameters": params}]
    with _client(args) as client:
        ids = client.submit(bodies)
        if args.json and not args.wait:
            print(json.dumps({"task_ids": ids}))
        elif not args.wait:
            for task_id in ids:
                print(task_id)
        if not args.wait:
            return 0
        from dtf.cli.progress import wait_for_tasks

        tasks = wait_for_tasks(client, ids)
    if args.json:
        print(json.dumps(tasks, indent=2, default=str))
    return 0 if all(t["status"] == "completed" for t in tasks) else 1


# ---------------------------------------------------------------- run


def _worker_count(value: str) -> str:
    if value != "auto" and not (value.isdigit() and int(value) > 0):
        raise argparse.ArgumentTypeError(f"expected a number of workers or auto, got {value!r}")
    return value


def cmd_run(args: argparse.Namespace) -> int:
    """`dtf run` is `pytest --dtf`: this process becomes that pytest session (exec), so
    that pytest's own signals, output and exit code are the run's."""
    argv = [sys.executable, "-m", "pytest", *run_pytest_options(args), *(args.pytest_args or [])]
    from dtf.run.config import RUN_LOG_VARIABLE

    env = dict(os.environ)
    if args.verbose:
        env[RUN_LOG_VARIABLE] = "1"
    try:
        env.update(_start_cluster_first(args))
    except DtfError as exc:
        print(f"dtf run: {exc.message}", file=sys.stderr)
        return 2
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)
    return 2  # not reached


def _start_cluster_first(args: argparse.Namespace) -> dict[str, str]:
    """Start the run's local cluster now, before this process becomes the pytest session,
    so that the coordinator starts while pytest imports its plugins and collects: when the
    run needs one and `-n` says how many workers (else the session reads xdist's `-n` from
    pytest's configuration first). The variables that tell the session it was started."""
    from dtf.run.cluster import LAUNCHED_VARIABLE, cluster_alive, launch_cluster
    from dtf.run.config import RunConfig, default_idle_timeout

    workers = (os.cpu_count() or 1) if args.workers == "auto" else int(args.workers or 0)
    remote = args.coordinator or os.environ.get("DTF_COORDINATOR") or args.connection
    data_dir = Path(args.data_dir).resolve()
    if workers < 1 or remote or cluster_alive(data_dir):
        return {}  # the session finds the cluster (and waits for it, or starts one)
    config = RunConfig(
        workers=workers,
        pytest_args=list(args.pytest_args or []),
        cwd=Path.cwd(),
        data_dir=data_dir,
        keep=args.keep,
        idle_timeout=default_idle_timeout() if args.idle_timeout is None else args.idle_timeout,
    )
    fresh = launch_cluster(config)
    return {LAUNCHED_VARIABLE: json.dumps({"data_dir": str(data_dir), "fresh": fresh})}


def run_pytest_options(args: argparse.Namespace) -> list[str]:
    """The `--dtf` options of the pytest session `dtf run` starts."""
    coordinator = args.coordinator or os.environ.get("DTF_COORDINATOR")
    target = coordinator or ("" if args.workers is None else str(args.workers))
    options = [f"--dtf={target}", f"--dtf-data-dir={args.data_dir}"]
    token = args.token or os.environ.get("DTF_TOKEN")
    if token:
        options.append(f"--dtf-token={token}")
    if args.connection:
        options.append(f"--dtf-connection={args.connection}")
    if args.reruns:
        options.append(f"--dtf-reruns={args.reruns}")
    if args.timeout is not None:
        options.append(f"--dtf-timeout={args.timeout}")
    if args.keep:
        options.append("--dtf-keep")
    if args.idle_timeout is not None:
        options.append(f"--dtf-idle-timeout={args.idle_timeout}")
    if args.no_snapshot:
        options.append("--dtf-no-snapshot")
    if args.no_head_start:
        options.append("--dtf-no-head-start")
    if args.junitxml:
        options.append(f"--junitxml={args.junitxml}")
    return options


def cmd_down(args: argparse.Namespace) -> int:
    """Stop the cluster in a data directory: SIGTERM to the pids in its connection.json
    (and to the `dtf up` supervising them, which would restart them), then wait."""
    from dtf.local_cluster import stop_data_dir

    stopped = stop_data_dir(Path(args.data_dir), args.timeout)
    if stopped is None:
        print(f"dtf down: no cluster in {args.data_dir} (no readable connection.json)", file=sys.stderr)
        return 1
    if not stopped:
        print(f"dtf down: nothing running in {args.data_dir}", file=sys.stderr)
        return 0
    print(f"dtf down: stopped {stopped} processes in {args.data_dir}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- inspect


def _show(args: argparse.Namespace, data: Any, render: Callable[[Any], None]) -> int:
    """JSON with --json, else the table."""
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        render(data)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from dtf.cli.render import print_status

    with _client(args) as client:
        return _show(args, client.status(), print_status)


def cmd_tasks(args: argparse.Namespace) -> int:
    from dtf.cli.render import print_tasks

    with _client(args) as client:
        return _show(args, client.tasks(status=args.status, type=args.type, limit=args.limit), print_tasks)


def cmd_workers(args: argparse.Namespace) -> int:
    from dtf.cli.render import print_workers

    with _client(args) as client:
        return _show(args, client.workers(), print_workers)


def cmd_results(args: argparse.Namespace) -> int:
    from dtf.cli.render import print_results

    with _client(args) as client:
        page = client.results(task_id=args.task, test_id=args.test, status=args.status, limit=args.limit)
        return _show(args, page, print_results)


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        for task_id in args.task_ids:
            task = client.cancel(task_id)
            print(f"{task_id}: {task['status']}")
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dtf", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("coordinator", help="run a coordinator")
    p.add_argument("--config", help="coordinator.yaml")
    p.set_defaults(func=cmd_coordinator)

    p = sub.add_parser("worker", help="run a worker daemon")
    p.add_argument("--config", help="worker.yaml")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("up", help="a local coordinator and N workers (embedded DuckDB)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=1, help="tasks each worker runs at once")
    p.add_argument("--data-dir", default="dtf-data")
    p.add_argument("--port", type=int, default=8080, help="REST API port (a free one if taken)")
    p.add_argument("--grpc-port", type=int, default=8081, help="worker gRPC port (a free one if taken)")
    p.add_argument("--label", action="append", metavar="KEY=VALUE", help="label for every local worker")
    p.add_argument("--coordinators", type=int, default=1, help="1, or 3 or 5 for a high-availability cluster")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("token", help="create access tokens")
    tsub = p.add_subparsers(dest="token_command", required=True)
    t = tsub.add_parser("create", help="print a JWT for a role")
    t.add_argument("--role", required=True, choices=["admin", "submitter", "viewer", "worker"])
    t.add_argument("--subject", help="who the token is for")
    t.add_argument(
        "--expires-in",
        type=int,
        help="seconds; 0 for no expiry (default: security.token_expiry of --config, else 86400)",
    )
    t.add_argument("--config", help="coordinator.yaml holding security.jwt_secret")
    t.add_argument("--data-dir", default="dtf-data", help="a `dtf up` data directory")
    t.add_argument(
        "--secret-file",
        metavar="PATH",
        help="a file holding the signing secret, '-' for stdin (never the secret itself: "
        "a command line is visible to every user of the machine)",
    )
    t.set_defaults(func=cmd_token_create)

    add_certs_parser(sub)

    p = sub.add_parser("submit", help="submit work: command, pytest, benchmark, or a task file")
    p.add_argument("kind", choices=["command", "pytest", "benchmark", "file"])
    p.add_argument("--priority", type=int, default=5)
    p.add_argument("--retries", type=int, default=0)
    p.add_argument("--timeout", type=float)
    p.add_argument("--requires", help="hardware kind: cpu, cuda, rocm, mps, ...")
    p.add_argument("--gpus", type=int, default=0)
    p.add_argument("--label", action="append", metavar="KEY=VALUE")
    p.add_argument("--repetitions", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--wait", action="store_true", help="show progress until done; exit 1 if any task failed")
    _add_client_args(p)
    p.add_argument("rest", nargs="*", metavar="ARG", help="the file, entry or arguments; put `--` before a command")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("run", help="run a pytest suite across workers, like `pytest -n N`")
    p.add_argument(
        "-n",
        "--workers",
        type=_worker_count,
        help="local workers to start: a number, or auto (one per CPU); default: pytest-xdist's -n where the "
        "project's pytest configuration gives one, else 2",
    )
    p.add_argument(
        "--data-dir", default=".dtf", help="cluster data; a cluster running there is used (durations accumulate)"
    )
    p.add_argument(
        "--keep", action="store_true", help="leave the cluster this run starts running until `dtf down`, idle or not"
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        metavar="S",
        help="seconds the cluster this run starts stays up once idle, for the next run "
        "(default 900, env DTF_IDLE_TIMEOUT; 0: stop it with the run)",
    )
    p.add_argument("--coordinator", metavar="URL", help="run on this remote coordinator (env DTF_COORDINATOR)")
    p.add_argument("--token", help="bearer token for --coordinator (env DTF_TOKEN)")
    p.add_argument("--connection", metavar="FILE", help="run on the cluster of this connection.json")
    p.add_argument("--reruns", type=int, default=0, metavar="N", help="run a failing test up to N more times")
    p.add_argument(
        "--no-head-start",
        action="store_true",
        help="run every test on the cluster, none in the run's own session while the cluster "
        "it starts comes up (env DTF_HEAD_START=0)",
    )
    p.add_argument(
        "--no-snapshot",
        action="store_true",
        help="remote workers share this filesystem: run batches in this directory instead of shipping the project",
    )
    p.add_argument("--junitxml", metavar="PATH", help="write one merged JUnit XML report")
    p.add_argument("--timeout", type=float, help="seconds each batch may run (default: scaled from its estimate)")
    p.add_argument("pytest_args", nargs="*", metavar="PYTEST_ARG", help="put `--` before pytest's arguments")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("down", help="stop the cluster of a data directory (`dtf up`, `dtf run --keep`)")
    p.add_argument("--data-dir", default=".dtf", help="the cluster's data directory (default .dtf)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait before killing")
    p.set_defaults(func=cmd_down)

    for name, func, help_ in (
        ("status", cmd_status, "coordinator status"),
        ("workers", cmd_workers, "list workers"),
    ):
        p = sub.add_parser(name, help=help_)
        _add_client_args(p)
        p.set_defaults(func=func)

    p = sub.add_parser("tasks", help="list tasks")
    p.add_argument("--status")
    p.add_argument("--type")
    p.add_argument("--limit", type=int, default=50)
    _add_client_args(p)
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("results", help="list results")
    p.add_argument("--task")
    p.add_argument("--test")
    p.add_argument("--status")
    p.add_argument("--limit", type=int, default=50)
    _add_client_args(p)
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("cancel", help="cancel tasks")
    p.add_argument("task_ids", nargs="+")
    _add_client_args(p)
    p.set_defaults(func=cmd_cancel)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except DtfError as exc:
        where = f" ({exc.field})" if exc.field else ""
        print(f"dtf: error{where}: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
