"""`dtf run -n 2` against plain pytest and pytest-xdist on four generated suites.

Generates the suites into a temporary directory and, in one run, times each tool on
each suite (wall clock of the whole command, start-up included):

- pytest, serial: `python -m pytest -q -p no:cacheprovider`
- xdist: the same with `-n 2 --dist load` and with `-n 2 --dist worksteal`
- dtf: `python -m dtf.cli.main run -n 2 --data-dir DIR -- -q -p no:cacheprovider .`
  A FIRST run uses a fresh data directory (no recorded durations, the plan is built on
  guesses, the cluster starts), once per repetition, as a user types it; the cluster it
  leaves up for the next run is then stopped, untimed. The "durations recorded, cold"
  runs reuse the directory of the first repetition's first run with `--idle-timeout 0`:
  a cluster started for the run and stopped with it. A LATER run finds the cluster an
  earlier run left up (`--keep` here, so that no idle timeout can end it mid-benchmark).

The suites:

- A: 2,000 trivial tests in 20 files (pure overhead).
- B: 200 sleeping tests, 28 s in total: eight tests of 1.5 to 3 s at the end of the last
  two files, the others exponential around 50 ms (seeded, scaled so the total is exactly
  28 s). With 2 workers no schedule beats max(total / 2, longest) = 14.00 s.
- C: 40 CPU-bound tests, each a pure-Python loop calibrated once at start to ~0.2 s on
  this machine (serial total ~8 s).
- D: 50,000 trivial tests, 5,000 parametrised in each of 10 files: the cost per test of
  collecting, running, reporting and storing.

For suite B (the one with a lower bound) each run also reports its makespan: from the
first test's start to the last test's end, as the test processes themselves saw it. A
conftest in the generated suite appends each test's start and end (setup to teardown,
wall clock) to a file named by BENCH_SPANS_FILE, in whichever process runs it (pytest's,
an xdist worker's, a dtf worker's), so every tool is measured by the same code. It leaves
out what only the command adds: interpreter and tool start-up, planning, reporting.

Every tool runs with Python's bytecode cache on, as on a developer's machine
(PYTHONDONTWRITEBYTECODE is removed from the environment of the timed commands).

Every run is checked, not only timed: exit code 0 and pytest's summary line reporting
`N passed` for the suite's N tests (and nothing failed or errored). A wrong run is
reported as wrong and its time is not used.

    python bench/vs_xdist.py [--repetitions 5] [--suites A,B,C,D] [--quick]

For the later runs, one untimed `--keep` run starts the cluster (and records
durations), the timed runs reuse it, `dtf down` stops it.

The default (5 repetitions of all four suites) takes about half an hour on a 2-core
machine, suite B alone 10 minutes; `--suites A,C` or `--repetitions` cut it. `--quick`
is a smoke run: 2 repetitions of suites A and C (about 3 minutes).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console()
if not console.is_terminal:
    console = Console(width=130)  # tables stay readable in a log file

WORKERS = 2
RUN_TIMEOUT_S = 600.0
SEED = 20261128

# Suite B's shape.
B_TESTS = 200
B_FILES = 10
B_TOTAL_S = 28.0
B_LONG_S = [1.5 + i * (3.0 - 1.5) / 7 for i in range(8)]  # 1.5 .. 3.0 s, 18 s in all
B_SHORT_MEAN_S = 0.05

# Suite C's shape.
C_TESTS = 40
C_TEST_S = 0.2

# Suite D's shape.
D_TESTS = 50_000
D_FILES = 10

# Every tool runs as on a developer's machine, where Python caches compiled modules (and
# pytest its rewritten test files). Where PYTHONDONTWRITEBYTECODE is set, as on some CI
# images, every run would compile every module again.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
DTF = [sys.executable, "-m", "dtf.cli.main", "run", "-n", str(WORKERS)]


@dataclass
class Suite:
    name: str
    description: str
    path: Path
    size: int
    lower_bound_s: float | None = None
    spans_file: Path | None = None  # where its conftest writes test spans, for the makespan


@dataclass
class Tool:
    name: str
    command: Callable[[Suite], list[str]]


@dataclass
class Samples:
    times: list[float] = field(default_factory=list)
    makespans: list[float] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)


# --- suites ---------------------------------------------------------------------------


def write_ini(path: Path) -> None:
    """A pytest.ini pins each suite's rootdir, so no outer configuration leaks in."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "pytest.ini").write_text("[pytest]\n")


def make_suite_a(root: Path) -> Suite:
    path = root / "suite_a"
    write_ini(path)
    for f in range(20):
        body = "".join(f"def test_{t:03d}():\n    assert True\n\n\n" for t in range(100))
        (path / f"test_a{f:02d}.py").write_text(body)
    return Suite("A", "2,000 trivial tests, 20 files", path, 2000)


def suite_b_durations() -> list[list[float]]:
    """Per file, the sleep of each test: 192 short ones exponential around 50 ms, scaled so
    that with the eight long ones (at the end of the last two files) the total is 28 s."""
    rng = random.Random(SEED)
    short = [rng.expovariate(1 / B_SHORT_MEAN_S) for _ in range(B_TESTS - len(B_LONG_S))]
    scale = (B_TOTAL_S - sum(B_LONG_S)) / sum(short)
    short = [s * scale for s in short]
    per_file = B_TESTS // B_FILES
    files: list[list[float]] = []
    half = len(B_LONG_S) // 2
    for f in range(B_FILES):
        if f == B_FILES - 2:
            longs = B_LONG_S[:half]
        elif f == B_FILES - 1:
            longs = B_LONG_S[half:]
        else:
            longs = []
        count = per_file - len(longs)
        files.append([short.pop() for _ in range(count)] + longs)
    assert not short
    return files


# Appends each test's start and end (setup to teardown) to BENCH_SPANS_FILE, one line per
# test, from whichever process runs it. One short append per test costs every tool alike.
SPANS_CONFTEST = """\
import os
import time

import pytest

SPANS_FILE = os.environ.get("BENCH_SPANS_FILE")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    start = time.time()
    yield
    if SPANS_FILE:
        with open(SPANS_FILE, "a") as spans:
            spans.write(f"{start} {time.time()}\\n")
"""
SPANS_VARIABLE = "BENCH_SPANS_FILE"


def makespan(spans_file: Path, size: int) -> float | None:
    """First test's start to last test's end, from the spans of one run; None unless every
    one of the suite's tests left its span (a rerun or a lost line would skew it)."""
    try:
        lines = spans_file.read_text().split()
    except FileNotFoundError:
        return None
    starts, ends = lines[0::2], lines[1::2]
    if len(starts) != size or len(ends) != size:
        return None
    return max(map(float, ends)) - min(map(float, starts))


def make_suite_b(root: Path) -> Suite:
    path = root / "suite_b"
    write_ini(path)
    (path / "conftest.py").write_text(SPANS_CONFTEST)
    files = suite_b_durations()
    total = sum(sum(f) for f in files)
    longest = max(max(f) for f in files)
    for f, sleeps in enumerate(files):
        body = "import time\n\n\n" + "".join(
            f"def test_{t:03d}():\n    time.sleep({s!r})\n\n\n" for t, s in enumerate(sleeps)
        )
        (path / f"test_b{f:02d}.py").write_text(body)
    bound = max(total / WORKERS, longest)
    spans = Path(ENV[SPANS_VARIABLE])
    return Suite("B", f"200 sleeping tests, {total:.0f} s, long tail", path, B_TESTS, bound, spans)


def spin(n: int) -> int:
    """The CPU-bound body of suite C's tests (the generated tests carry a copy)."""
    acc = 0
    for i in range(n):
        acc = (acc + i * i) % 1000003
    return acc


def calibrate_spin(target_s: float) -> int:
    """Loop count for which `spin` takes about target_s on this machine (best of three)."""
    n = 200_000
    while True:
        best = min(_timed_spin(n) for _ in range(3))
        if best > 0.15:
            return max(1, int(n * target_s / best))
        n *= 2


def _timed_spin(n: int) -> float:
    start = time.perf_counter()
    spin(n)
    return time.perf_counter() - start


def make_suite_c(root: Path) -> Suite:
    path = root / "suite_c"
    write_ini(path)
    n = calibrate_spin(C_TEST_S)
    console.print(f"suite C: {n:,} loop iterations per test (about {C_TEST_S} s each)")
    header = (
        "def spin(n):\n    acc = 0\n    for i in range(n):\n        acc = (acc + i * i) % 1000003\n    return acc\n\n\n"
    )
    for f in range(4):
        body = header + "".join(f"def test_{t:03d}():\n    assert spin({n}) >= 0\n\n\n" for t in range(C_TESTS // 4))
        (path / f"test_c{f:02d}.py").write_text(body)
    return Suite("C", f"{C_TESTS} CPU-bound tests, ~{C_TEST_S} s each", path, C_TESTS)


def make_suite_d(root: Path) -> Suite:
    """Per-test cost: nothing but pytest's and the tool's own work per test."""
    path = root / "suite_d"
    write_ini(path)
    body = "import pytest\n\n\n@pytest.mark.parametrize('i', range({n}))\ndef test_d(i):\n    pass\n"
    for f in range(D_FILES):
        (path / f"test_d{f:02d}.py").write_text(body.format(n=D_TESTS // D_FILES))
    return Suite("D", f"{D_TESTS:,} trivial tests, {D_FILES} files", path, D_TESTS)


SUITE_MAKERS: dict[str, Callable[[Path], Suite]] = {
    "A": make_suite_a,
    "B": make_suite_b,
    "C": make_suite_c,
    "D": make_suite_d,
}


# --- running --------------------------------------------------------------------------

PASSED = re.compile(r"(\d+) passed")
BAD = re.compile(r"\d+ (failed|errors?)\b")


def check(output: str, returncode: int, size: int) -> str | None:
    """None when the run is right: exit 0 and `size passed` with nothing failed or errored
    in pytest's summary line; otherwise why it is wrong."""
    if returncode != 0:
        return f"exit code {returncode}"
    summary = [line for line in output.splitlines() if PASSED.search(line)]
    if not summary:
        return "no 'N passed' summary line"
    last = summary[-1]
    passed = int(PASSED.search(last).group(1))  # type: ignore[union-attr]
    if passed != size:
        return f"{passed} passed, expected {size}"
    if BAD.search(last):
        return f"summary reports failures: {last.strip('= ')}"
    return None


def run_once(command: list[str], suite: Suite) -> tuple[float, float | None, str | None]:
    """The command's wall clock, the makespan its tests reported (suites with spans) and,
    for a wrong run, why it is wrong."""
    if suite.spans_file:
        suite.spans_file.write_text("")
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            command,
            cwd=suite.path,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            env=ENV,
        )
    except subprocess.TimeoutExpired:
        return time.perf_counter() - start, None, f"timed out after {RUN_TIMEOUT_S:.0f} s"
    elapsed = time.perf_counter() - start
    wrong = check(proc.stdout + "\n" + proc.stderr, proc.returncode, suite.size)
    span = makespan(suite.spans_file, suite.size) if suite.spans_file else None
    if suite.spans_file and span is None and not wrong:
        wrong = "the tests' spans do not cover the suite"
    if wrong:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        console.print(f"[red]{' '.join(command[:6])}... on suite {suite.name}: {wrong}[/red]")
        for line in tail:
            console.print(f"    {line}", markup=False)
    return elapsed, span, wrong


def dtf_command(data_dir: Path, *options: str) -> Callable[[Suite], list[str]]:
    return lambda suite: [*DTF, "--data-dir", str(data_dir), *options, "--", "-q", "-p", "no:cacheprovider", "."]


def dtf_down(data_dir: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "dtf.cli.main", "down", "--data-dir", str(data_dir)],
        capture_output=True,
        timeout=120,
        env=ENV,
    )


SERIAL = "pytest (serial)"
LOAD = "xdist -n 2 --dist load"
WORKSTEAL = "xdist -n 2 --dist worksteal"
DTF_FIRST = "dtf run -n 2, first run"
DTF_RECORDED = "dtf run -n 2, durations recorded, cold"
DTF_WARM = "dtf run -n 2, later run"
XDIST = (LOAD, WORKSTEAL)


def has_keep() -> bool:
    """Whether this dtf's `run` offers `--keep` (leave the cluster running for the next run)."""
    help_text = subprocess.run([*DTF, "--help"], capture_output=True, text=True, env=ENV).stdout
    return "--keep" in help_text


def bench_suite(suite: Suite, repetitions: int, root: Path, warm: bool) -> dict[str, Samples]:
    names = [SERIAL, LOAD, WORKSTEAL, DTF_FIRST, DTF_RECORDED] + ([DTF_WARM] if warm else [])
    results: dict[str, Samples] = {name: Samples() for name in names}
    # Untimed: compile the test files and check that the suite collects in full.
    collect = subprocess.run([*PYTEST, "--collect-only"], cwd=suite.path, capture_output=True, text=True, env=ENV)
    if f"{suite.size} tests collected" not in collect.stdout:
        raise SystemExit(f"suite {suite.name} does not collect:\n{collect.stdout[-2000:]}")

    def first_dir(rep: int) -> Path:
        return root / f"dtf-{suite.name}-first-{rep}"  # fresh: the first run has no recorded durations

    tools = [
        Tool(SERIAL, lambda s: list(PYTEST)),
        Tool(LOAD, lambda s: [*PYTEST, "-n", str(WORKERS), "--dist", "load"]),
        Tool(WORKSTEAL, lambda s: [*PYTEST, "-n", str(WORKERS), "--dist", "worksteal"]),
    ]
    # The durations of the first repetition's first run, on a cluster started for the run
    # and stopped with it.
    recorded = dtf_command(first_dir(0), "--idle-timeout", "0")

    def record(name: str, command: list[str], label: str) -> None:
        elapsed, span, wrong = run_once(command, suite)
        if wrong:
            results[name].wrong.append(wrong)
            console.print(f"  {label:<40} [red]WRONG[/red] ({wrong})")
            return
        results[name].times.append(elapsed)
        if span is None:
            console.print(f"  {label:<40} {elapsed:7.2f} s")
        else:
            results[name].makespans.append(span)
            console.print(f"  {label:<40} {elapsed:7.2f} s  (makespan {span:.2f} s)")

    console.rule(f"suite {suite.name}: {suite.description} (load average {_load()})")
    warm_dir = root / f"dtf-warm-{suite.name}"
    if warm:
        # Untimed: start the cluster that the timed runs reuse, and record durations.
        command = dtf_command(warm_dir)(suite)
        command.insert(command.index("--"), "--keep")
        elapsed, _, wrong = run_once(command, suite)
        console.print(f"  {'(untimed) dtf run --keep, warm-up':<40} {elapsed:7.2f} s {wrong or ''}")
    try:
        for rep in range(repetitions):
            # Interleaved, so drift in the machine's load touches every tool alike.
            for tool in tools:
                record(tool.name, tool.command(suite), f"[{rep + 1}/{repetitions}] {tool.name}")
            # As a user types it; the cluster it leaves up for a later run is stopped, untimed.
            record(DTF_FIRST, dtf_command(first_dir(rep))(suite), f"[{rep + 1}/{repetitions}] {DTF_FIRST}")
            dtf_down(first_dir(rep))
            record(DTF_RECORDED, recorded(suite), f"[{rep + 1}/{repetitions}] {DTF_RECORDED}")
            if warm:
                record(DTF_WARM, dtf_command(warm_dir)(suite), f"[{rep + 1}/{repetitions}] {DTF_WARM}")
    finally:
        if warm:
            dtf_down(warm_dir)
    console.print(f"  suite {suite.name} done, load average {_load()}")
    return results


def _load() -> str:
    """The 1-minute load average: other work on the machine shows in every tool's times."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "unknown"


# --- report ---------------------------------------------------------------------------


def median(samples: Samples) -> float | None:
    return statistics.median(samples.times) if samples.times else None


def ratio(value: float | None, reference: float | None, digits: int = 2) -> str:
    if value is None or reference is None:
        return "-"
    return f"{value / reference:.{digits}f}x"


def report(suite: Suite, results: dict[str, Samples]) -> Table:
    serial = median(results[SERIAL])
    xdist_medians = [m for m in (median(results[n]) for n in XDIST) if m is not None]
    xdist = min(xdist_medians) if xdist_medians else None
    title = f"suite {suite.name}: {suite.description}"
    if suite.lower_bound_s is not None:
        title += f"; lower bound with {WORKERS} workers {suite.lower_bound_s:.2f} s"
    table = Table(title=title)
    table.add_column("tool")
    table.add_column("runs", justify="right")
    table.add_column("median s", justify="right")
    table.add_column("spread s (min-max)", justify="right")
    table.add_column("vs serial", justify="right")
    table.add_column("vs best xdist", justify="right")
    table.add_column("vs bound", justify="right")
    spans = suite.spans_file is not None
    if spans:
        table.add_column("makespan s (min-max)", justify="right")
        table.add_column("makespan vs bound", justify="right")
    for name, samples in results.items():
        m = median(samples)
        runs = str(len(samples.times))
        if samples.wrong:
            runs += f" (+{len(samples.wrong)} WRONG)"
        if m is None:
            table.add_row(name, runs, "[red]WRONG[/red]", *["-"] * (6 if spans else 4))
            continue
        spread = f"{min(samples.times):.2f}-{max(samples.times):.2f}"
        row = [name, runs, f"{m:.2f}", spread, ratio(m, serial), ratio(m, xdist), ratio(m, suite.lower_bound_s)]
        if spans:
            spans_s = samples.makespans
            span = statistics.median(spans_s)
            row += [f"{span:.2f} ({min(spans_s):.2f}-{max(spans_s):.2f})", ratio(span, suite.lower_bound_s, 3)]
        table.add_row(*row)
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repetitions", type=int, default=5, help="timed runs per tool (default 5)")
    parser.add_argument("--suites", default="A,B,C,D", help="comma-separated subset of A,B,C,D")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 repetitions, suites A and C")
    args = parser.parse_args()
    repetitions = 2 if args.quick else args.repetitions
    names = ["A", "C"] if args.quick else [s.strip().upper() for s in args.suites.split(",") if s.strip()]
    unknown = [n for n in names if n not in SUITE_MAKERS]
    if unknown or repetitions < 1:
        parser.error(f"unknown suites {unknown}" if unknown else "--repetitions must be at least 1")

    console.print(
        f"{time.strftime('%Y-%m-%d %H:%M')}, Python {sys.version.split()[0]}, "
        f"{repetitions} repetitions, suites {','.join(names)}, {WORKERS} workers"
    )
    warm = has_keep()
    console.print(f"dtf run --keep (warm cluster): {'measured' if warm else 'not offered by this dtf'}")
    tables: list[Table] = []
    wrong = 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dtf-vs-xdist-") as tmp:
        root = Path(tmp)
        # One path for the whole run: a warm cluster's workers keep the environment they
        # started with, and a pytest server is shared only between equal environments.
        ENV[SPANS_VARIABLE] = str(root / "spans.txt")
        for name in names:
            suite = SUITE_MAKERS[name](root)
            results = bench_suite(suite, repetitions, root, warm)
            wrong += sum(len(s.wrong) for s in results.values())
            tables.append(report(suite, results))
    console.rule(f"results ({time.perf_counter() - started:.0f} s in all)")
    for table in tables:
        console.print(table)
    console.print(
        "Wall clock of the whole command, start-up included; median and min-max over the "
        "runs. 'vs best xdist' divides by the faster xdist mode's median. Makespan: first "
        "test's start to last test's end, as the processes running them recorded it."
    )
    if wrong:
        console.print(f"[red]{wrong} runs were wrong and are not timed[/red]")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
