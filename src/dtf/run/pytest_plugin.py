"""`pytest --dtf N` / `pytest --dtf URL`: run the suite with `dtf run` from inside pytest.

Registered through the `pytest11` entry point, so it loads in every pytest run of an
environment where dtf is installed, including the pytest processes that workers start
for batches. It is inert unless `--dtf` is given: it adds its options and nothing else.
With `--dtf`, `pytest_cmdline_main` hands the remaining arguments to the runner (which
collects them again in a subprocess and runs the batches on the cluster) and returns its
exit code, so this pytest process collects and runs nothing itself.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Options of this plugin, and whether each takes a value; removed from the arguments
# handed on to the runner (which must not see `--dtf` again).
_OPTIONS = {
    "--dtf": True,
    "--dtf-data-dir": True,
    "--dtf-token": True,
    "--dtf-reruns": True,
    "--dtf-timeout": True,
    "--dtf-keep": False,
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dtf", "run the suite on dtf workers")
    group.addoption(
        "--dtf",
        metavar="N|URL",
        default=None,
        help="run on N local dtf workers, or on the dtf coordinator at URL (token from --dtf-token or DTF_TOKEN)",
    )
    group.addoption("--dtf-data-dir", default=".dtf", help="local cluster data directory (default .dtf)")
    group.addoption("--dtf-token", default=None, help="bearer token for --dtf URL (env DTF_TOKEN)")
    group.addoption("--dtf-reruns", type=int, default=0, help="run a failing test up to N more times")
    group.addoption("--dtf-timeout", type=float, default=None, help="seconds each batch may run")
    group.addoption("--dtf-keep", action="store_true", help="leave the local cluster running (`dtf down`)")


def remaining_args(args: list[str] | tuple[str, ...]) -> list[str]:
    """The invocation's arguments without this plugin's options and their values."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            out.extend(args[i - 1 :])
            break
        name = arg.partition("=")[0]
        if name in _OPTIONS:
            if _OPTIONS[name] and "=" not in arg:
                i += 1  # its value
            continue
        out.append(arg)
    return out


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    target = config.getoption("dtf", None)
    if target is None:
        return None  # a plain pytest run: nothing to do

    from rich.console import Console

    from dtf.run.runner import RunConfig, run
    from dtf_common.errors import DtfError

    remote = "://" in str(target)
    if not remote and not str(target).isdigit():
        sys.stderr.write(f"pytest --dtf: expected a number of workers or a coordinator URL, got {target!r}\n")
        return int(pytest.ExitCode.USAGE_ERROR)
    xmlpath = config.getoption("xmlpath", None)
    invocation = config.invocation_params
    run_config = RunConfig(
        workers=int(target) if not remote else 0,
        pytest_args=remaining_args(invocation.args),
        cwd=Path(invocation.dir),
        data_dir=Path(invocation.dir) / config.getoption("dtf_data_dir"),
        junitxml=Path(xmlpath) if xmlpath else None,
        timeout=config.getoption("dtf_timeout"),
        keep=config.getoption("dtf_keep"),
        coordinator=str(target) if remote else None,
        token=config.getoption("dtf_token") or os.environ.get("DTF_TOKEN"),
        reruns=config.getoption("dtf_reruns"),
    )
    try:
        return run(run_config, out=sys.stdout, console=Console(stderr=True))
    except DtfError as exc:
        sys.stderr.write(f"pytest --dtf: {exc.message}\n")
        return int(pytest.ExitCode.INTERRUPTED)
    except KeyboardInterrupt:
        sys.stderr.write("pytest --dtf: interrupted\n")
        return int(pytest.ExitCode.INTERRUPTED)
